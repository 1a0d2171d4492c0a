"""Shared fixtures: the real data folder, and running the Hydra app in-process or as a subprocess.

Commands run as a user would (`train.py ...`) go through `PYTHON` = tests/forkserver.py, which runs them
in forks of a process that has imported torch and Lightning once per pytest worker (4-5 s of CPU saved
per command); set HYBRIDLEARN_TEST_FORKSERVER=0 to run each in a fresh interpreter instead.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from wandb.proto import wandb_internal_pb2 as pb

from hybridlearn.core.conf import register_core
from hybridlearn.core.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
# Absolute, so subprocesses started from other folders see the same data (CI passes a relative path).
os.environ["DATA_DIR"] = str(Path(os.environ.get("DATA_DIR", ROOT / ".." / "shared" / "data")).resolve())
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # each xdist worker (and what it starts) has one core of its own: intra-op threads would only
    # spin-wait against the other worker (set before torch is first imported)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
DATA_DIR = Path(os.environ["DATA_DIR"]).resolve()
FORKSERVER = Path(__file__).with_name("forkserver.py")
PYTHON = [sys.executable, str(FORKSERVER)]  # `python` for the commands tests run


@pytest.fixture(scope="session", autouse=True)
def forkserver():
    """This worker's fork server (see tests/forkserver.py); clients wait for its imports."""
    if os.environ.get("HYBRIDLEARN_TEST_FORKSERVER") == "0":
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="hl-fork-"))  # short: a socket path holds <= 107 bytes
    sock = folder / "server.sock"
    with open(folder / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, str(FORKSERVER), "--serve", str(sock)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    os.environ["HYBRIDLEARN_FORKSERVER"] = str(sock)
    yield sock
    os.environ.pop("HYBRIDLEARN_FORKSERVER", None)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


@pytest.fixture(scope="session")
def python_exe(tmp_path_factory) -> Path:
    """An executable that runs like `python` through the fork server (for `reproduce.python`)."""
    exe = tmp_path_factory.mktemp("bin") / "python"
    exe.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{FORKSERVER}' \"$@\"\n")
    exe.chmod(0o755)
    return exe


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


def train_cli(args: list[str], cwd: Path = ROOT, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    """Run `python train.py <args>` as a user would; returns the completed process (text output)."""
    return subprocess.run(
        [*PYTHON, str(ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **popen,
    )


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
