"""Shared fixtures: the real data folder, and running the commands in-process or as a subprocess.

`run_cli(script, args)` runs a command (`train.py`, `predict.py`, ...) in this process, through the
same entry the command uses (the script run as `__main__`), and returns what a subprocess would
(exit code, stdout, stderr). Tests about the process itself (signals, exit codes of console
scripts, DDP ranks, threads, start-up) use `run_process` (a real interpreter).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from wandb.proto import wandb_internal_pb2 as pb

from hybridlearn.core.conf import register_core
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.settings import check_settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
# Absolute, so commands started from other folders see the same data (CI passes a relative path).
os.environ["DATA_DIR"] = str(Path(os.environ.get("DATA_DIR", ROOT / ".." / "shared" / "data")).resolve())
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # each xdist worker (and what it starts) has one core of its own: intra-op threads would only
    # spin-wait against the other worker (set before torch is first imported)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
DATA_DIR = Path(os.environ["DATA_DIR"]).resolve()

import torch  # noqa: E402  (after OMP_NUM_THREADS: its default thread count is read once, at import)


@contextlib.contextmanager
def _as_command(argv: list[str], cwd: Path, env: dict[str, str] | None) -> Iterator[None]:
    """sys.argv, the working folder and the environment of a command, restored afterwards."""
    saved_argv, saved_cwd, saved_env = sys.argv[:], os.getcwd(), dict(os.environ)
    sys.argv = argv
    os.chdir(cwd)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        yield
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        GlobalHydra.instance().clear()


def run_cli(
    script: str, args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python <script> <args>` in this process: the script runs as `__main__` (its own entry), with
    its output captured; SystemExit is its exit code, an uncaught exception a traceback and code 1."""
    path = script if script.startswith("-m") else str(ROOT / script)
    out, err = io.StringIO(), io.StringIO()
    with _as_command([path, *args], cwd, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if script.startswith("-m"):
                runpy.run_module(script[2:].strip(), run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(path, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - what the interpreter would print
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess([path, *args], code, out.getvalue(), err.getvalue())


def run_process(
    script: str, args: list[str], cwd: Path = ROOT, timeout: float = 600, **popen
) -> subprocess.CompletedProcess:
    """`python <script> <args>` as a real process (for what is about the process: signals, exit codes,
    threads, start-up)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **popen.pop("env", {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **popen,
    )


TORCH_THREADS = torch.get_num_threads()  # the process's default (the commands a test starts have it too)


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    """Each test starts with torch's default thread count, whatever a test or a module's fixture set
    before it: float sums differ with the thread count (an exact-resume comparison would fail)."""
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "mnist").exists():
        # A fresh machine with internet: fetch MNIST now (md5-checked); the other data sets are
        # fetched by their data modules on first use.
        from hybridlearn.core.errors import DataError
        from hybridlearn.mnist.data import load_mnist

        try:
            load_mnist(DATA_DIR)
        except DataError as e:
            pytest.fail(f"DATA_DIR={DATA_DIR} holds no data and downloading failed ({e}); set DATA_DIR=../shared/data")
    return DATA_DIR


def compose_cfg(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose conf/train.yaml like `python train.py <overrides>` would, writing into output_dir."""
    register_core()
    load_settings()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        del cfg["hydra"]
    return cfg


def build(settings: object, **context: object) -> object:
    """The object a settings dataclass describes (e.g. `build(LeNet5Config(lr=0.01))`), built as the runner
    builds a model (core.checkpoint.instantiate_module: its checkpoints rebuild it). Interpolations in
    the defaults (${paths.data_dir}, ${data.value_range}, ${seed}) resolve against `context` (top-level
    keys of a run) merged onto this machine's paths, data.value_range=standard and seed=0."""
    from hybridlearn.core.checkpoint import instantiate_module

    cache = os.environ.get("HYBRIDLEARN_CACHE", str(Path.home() / ".cache" / "hybridlearn"))
    root = OmegaConf.merge(
        {"paths": {"data_dir": str(DATA_DIR), "cache_dir": cache}, "data": {"value_range": "standard"}, "seed": 0},
        context,
    )
    root.built = OmegaConf.structured(settings)
    return instantiate_module(root.built)


@pytest.fixture
def run_train(tmp_path: Path) -> Callable[..., dict]:
    """run_train(overrides, name="run") -> results.json of an in-process run in tmp_path/name."""
    from hybridlearn.core.runner import run

    def _run(overrides: list[str], name: str = "run") -> dict:
        out = tmp_path / name
        cfg = compose_cfg(overrides, out)
        run(cfg)
        results = json.loads((out / "results.json").read_text())
        results["_dir"] = str(out)
        return results

    return _run


def assert_config_refused(overrides: list[str], message: str, output_dir: Path) -> None:
    """The composed overrides fail the settings checks with one line holding `message`."""
    cfg = compose_cfg(overrides, output_dir)
    with pytest.raises(ConfigError) as e:
        check_settings(cfg)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def assert_refused_without_torch(args: list[str], message: str, cwd: Path) -> None:
    """`python train.py <args>` in a fresh interpreter answers exactly `error: <message>` (exit 2),
    without importing torch or Lightning (-X importtime lists every module) and without a run folder."""
    p = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("import time:")]
    assert p.returncode == 2 and lines == [f"error: {message}"], p.stderr[-2000:]
    imported = {ln.split("|")[-1].strip() for ln in p.stderr.splitlines() if ln.startswith("import time:")}
    assert "torch" not in imported and "lightning" not in imported
    assert not any(cwd.iterdir()), "a refused run wrote a run folder"


def assert_same_training_state(a: dict, b: dict) -> None:
    """Two loaded checkpoints hold bit-identical weights and optimizer states (an exact resume)."""
    import torch  # not at the top: this file sets the thread environment before torch is first imported

    assert a["global_step"] == b["global_step"] and set(a["state_dict"]) == set(b["state_dict"])
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for i, s in oa["state"].items():
            assert all(torch.equal(s[n], ob["state"][i][n]) for n in s), i


def train_cli(
    args: list[str], cwd: Path = ROOT, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python train.py <args>` as a user would type it, run in this process (run_cli); `timeout` is
    kept for the call sites' documentation (pytest-timeout bounds every test)."""
    return run_cli("train.py", args, cwd=cwd, env=env)


def read_wandb_records(path: Path):
    """Parse an offline .wandb file (LevelDB-style log of protobuf records) without wandb's service."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, pos, buf, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL/FIRST start a record
        if kind in (1, 4):  # FULL/LAST end it
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory, data_dir) -> Path:
    """One finished tiny LeNet-5 run (a real run folder: .hydra, checkpoints, results.json), shared by
    every test that needs *a* LeNet-5 run or checkpoint and does not change it."""
    out = tmp_path_factory.mktemp("lenet") / "run"
    p = train_cli(
        [
            "experiment=lenet_mnist",
            "data.train_subset=3000",
            "data.test_subset=1000",
            "trainer.max_epochs=1",
            "logger=csv",
            f"hydra.run.dir={out}",
        ]
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (out.parent / "console.txt").write_text(p.stdout + p.stderr)  # what the user saw
    return out
