"""Reliability of the core: no shared run folders, no 'completed' for meaningless runs, bounded downloads,
checked checkpoints, weights_only everywhere, Ctrl-C recorded, and the user-facing extras of a run."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli, run_process, train_cli

from hybridlearn.core.download import ensure_files
from hybridlearn.core.errors import DataError

QUICK = [
    "experiment=lenet_mnist",
    "data.train_subset=2000",
    "data.test_subset=500",
    "trainer.enable_progress_bar=false",
]


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr[-3000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    return errors[0]


def test_simultaneous_runs_get_their_own_folders(tmp_path, data_dir):
    args = ["experiment=gom_mlp", "debug=fdr", "logger=none", f"paths.log_dir={tmp_path}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args, f"seed={s}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (1, 2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    runs = sorted(tmp_path.glob("*/runs/*"))
    assert len(runs) == 2
    seeds = sorted(json.loads((r / "results.json").read_text())["seed"] for r in runs)
    assert seeds == [1, 2]


def test_task_test_without_checkpoint_is_refused(tmp_path, data_dir):
    p = train_cli(["experiment=lenet_mnist", "task=test", f"hydra.run.dir={tmp_path / 'run'}"], timeout=120)
    assert "task=test needs ckpt_path" in one_error_line(p)


def test_task_predict_refused_where_nothing_to_predict(tmp_path, data_dir):
    p = train_cli(
        ["experiment=gom_mlp", "task=predict", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], timeout=120
    )
    assert "has nothing to predict" in one_error_line(p)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


def test_download_deadline_against_a_server_that_never_answers(tmp_path, monkeypatch):
    """A server that accepts connections and then says nothing: one total deadline, URLs named."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    base = f"http://127.0.0.1:{srv.getsockname()[1]}"
    urls = {n: [f"{base}/a/{n}", f"{base}/b/{n}"] for n in ("x.gz", "y.gz")}
    monkeypatch.setenv("HYBRIDLEARN_DOWNLOAD_TIMEOUT", "3")
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        ensure_files(tmp_path, {"x.gz": None, "y.gz": None}, urls, what="test data")
    took = time.monotonic() - t0
    stop.set()
    srv.close()
    assert took < 6, f"the deadline was 3 s, took {took:.1f} s"
    msg = str(e.value)
    assert f"{base}/a/x.gz" in msg and "deadline" in msg and "\n" not in msg
    assert not list(tmp_path.iterdir()), "nothing half-written"


def test_failed_download_leaves_no_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLEARN_DOWNLOAD_TIMEOUT", "2")
    with pytest.raises(DataError):
        ensure_files(tmp_path / "mnist", {"x.gz": None}, {"x.gz": ["http://127.0.0.1:9/x.gz"]})
    assert not (tmp_path / "mnist").exists()


def test_bad_download_deadline_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLEARN_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(DataError, match="HYBRIDLEARN_DOWNLOAD_TIMEOUT"):
        ensure_files(tmp_path, {"x": None}, {"x": ["http://127.0.0.1:9/x"]})


@pytest.fixture(scope="module")
def gom_ckpt(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("gomckpt")
    p = train_cli(["experiment=gom_mlp", "trainer.max_epochs=2", "logger=none", f"hydra.run.dir={out}"], timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return out / "checkpoints" / "last.ckpt"


def test_checkpoint_of_another_experiment_is_one_line(tmp_path, gom_ckpt):
    p = train_cli([*QUICK, "task=test", f"ckpt_path={gom_ckpt}", f"hydra.run.dir={tmp_path / 'run'}"], timeout=120)
    line = one_error_line(p)
    assert str(gom_ckpt) in line and "SigmoidMLP" in line and "LeNet5" in line


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_not_a_checkpoint_is_one_line(tmp_path, content, data_dir):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    p = train_cli([*QUICK, "task=test", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'run'}"], timeout=120)
    assert "bad.ckpt is not a PyTorch checkpoint (" in one_error_line(p)


class _Marker:
    """Unpickling this object creates a file: the proof that a loader ran code from a checkpoint."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_crafted_checkpoint_never_runs_code(tmp_path, gom_ckpt, data_dir):
    marker = tmp_path / "pwned"
    ck = torch.load(gom_ckpt, map_location="cpu", weights_only=True)
    ck["hyper_parameters"]["evil"] = _Marker(str(marker))
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ck, crafted)
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # makes any load without weights_only=True unsafe
    commands = [
        (
            "train.py",
            [
                "experiment=gom_mlp",
                "logger=none",
                "task=test",
                f"ckpt_path={crafted}",
                f"hydra.run.dir={tmp_path / 'test'}",
            ],
        ),
        (
            "train.py",
            [
                "experiment=gom_mlp",
                "logger=none",
                "task=fit",
                f"ckpt_path={crafted}",
                "trainer.max_epochs=3",
                f"hydra.run.dir={tmp_path / 'fit'}",
            ],
        ),
        (
            "train.py",
            [*QUICK, "logger=none", "task=predict", f"ckpt_path={crafted}", f"hydra.run.dir={tmp_path / 'predict'}"],
        ),
        ("predict.py", [str(crafted), str(data_dir / "digits")]),
        ("generate.py", [str(crafted), "--out", str(tmp_path / "g.png")]),
    ]
    for script, args in commands:
        p = run_cli(script, args, env=env)
        assert not marker.exists(), f"{script} ran code from the checkpoint:\n{p.stderr[-2000:]}"
        assert p.returncode in (0, 2), p.stderr[-2000:]
        assert "weights_only=False" not in p.stdout + p.stderr  # never advise loading it unsafely


def test_ctrl_c_records_interrupted_with_last_checkpoint(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    args = [*QUICK, "logger=none", "trainer.max_epochs=200", "trainer.limit_val_batches=1", f"hydra.run.dir={run_dir}"]
    p = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # a shell's background job or a test worker may ignore SIGINT, and a child inherits that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while not last.exists():
        assert p.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=120)
    r = json.loads((run_dir / "results.json").read_text())
    assert r["status"] == "interrupted", r
    assert r["last_ckpt"] == str(last)
    assert p.returncode == 130


def test_print_config_and_learning_curves(tmp_path, data_dir):
    run_dir = tmp_path / "run"
    # a real process: TensorBoard's writer imports TensorFlow where the `tf` extra is installed
    p = run_process(
        "train.py",
        [
            *QUICK,
            "print_config=true",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=4",
            "trainer.limit_val_batches=2",
            "trainer.log_every_n_steps=1",
            "logger=[csv,tensorboard]",
            f"hydra.run.dir={run_dir}",
        ],
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert "task_name: lenet_mnist" in p.stdout and "optimized_metric:" in p.stdout
    png = run_dir / "learning_curves.png"
    assert png.is_file() and png.stat().st_size > 5000
    tb = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert tb and any(b"learning_curves" in f.read_bytes() for f in tb)
    metrics = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "lr-Adam" in metrics  # LearningRateMonitor in the default callbacks


def test_epoch_time_logs_each_epochs_training_throughput(tmp_path, data_dir):
    """callbacks.epoch_time (default): per epoch time/train_s and time/samples_per_s, whose product is
    the epoch's training samples (limit_train_batches full batches), in metrics.csv and results.json."""
    run_dir = tmp_path / "run"
    p = train_cli(
        [
            *QUICK,
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "data.batch_size=32",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert p.returncode == 0, p.stderr[-2000:]
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("time/train_s")]
    assert len(rows) == 2, rows
    for r in rows:
        seconds, rate = float(r["time/train_s"]), float(r["time/samples_per_s"])
        assert seconds > 0 and rate * seconds == pytest.approx(3 * 32, rel=1e-4)
        assert float(r["time/epoch_s"]) > seconds  # the previous epoch's validation (or the fit's start) too
    m = json.loads((run_dir / "results.json").read_text())["metrics"]
    assert m["time/samples_per_s"] * m["time/train_s"] == pytest.approx(96, rel=1e-4)


@pytest.mark.parametrize(
    "script", ["hybridlearn-train", "hybridlearn-stylize", "hybridlearn-predict", "hybridlearn-generate"]
)
def test_console_scripts_from_any_folder(script, tmp_path):
    exe = Path(sys.executable).parent / script
    assert exe.is_file(), f"{script} is not installed; run make install"
    p = subprocess.run([str(exe), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage" in p.stdout.lower() or "== Config ==" in p.stdout or "Powered by Hydra" in p.stdout
