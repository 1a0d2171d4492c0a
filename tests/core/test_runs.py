"""Whole-run behaviour: W&B offline, joblib multirun + summary, resume after SIGKILL."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_cfg, read_wandb_records, run_process, train_cli
from lightning.pytorch.callbacks import ModelCheckpoint

from hybridlearn.core.checkpoint import AtomicCheckpointIO, LastCheckpoint
from hybridlearn.core.report import csv_rows
from hybridlearn.core.trainer import build_trainer, instantiate_callbacks

QUICK = [
    "experiment=lenet_mnist",
    "data.train_subset=3000",
    "data.test_subset=1000",
    "trainer.enable_progress_bar=false",
]


def test_wandb_offline_run_has_metrics(run_train, data_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    res = run_train([*QUICK, "debug=limit", "logger=wandb"])
    assert res["status"] == "completed"
    runs = list((Path(res["_dir"]) / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    deadline = time.time() + 60  # wandb-core writes the log asynchronously after finish()
    while True:
        recs = read_wandb_records(runs[0])
        if any(r.WhichOneof("record_type") == "exit" for r in recs):
            break
        assert time.time() < deadline, "the offline run never got its exit record"
        time.sleep(0.5)
    logged = {}
    for rec in recs:
        if rec.WhichOneof("record_type") == "history":
            logged.update({it.key or "/".join(it.nested_key): json.loads(it.value_json) for it in rec.history.item})
    for key in ("train/loss_epoch", "val/acc", "test/acc"):
        assert key in logged, sorted(logged)
    assert logged["test/acc"] == pytest.approx(res["metrics"]["test/acc"])


def test_joblib_multirun_writes_summary_and_marks_failures(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    # three jobs, two at a time; the third has a bad learning rate and must be marked failed.
    # A real process: the jobs run in joblib's worker processes, whose console is this command's
    p = run_process(
        "train.py",
        [
            "-m",
            *QUICK,
            "trainer.max_epochs=1",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "model.lr=0.002,0.005,-1",
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=600,
    )
    assert p.returncode == 1, p.stderr[-3000:]
    assert "failed" in p.stderr
    assert "Traceback" not in p.stdout + p.stderr  # the bad job is one line, as a single run's error is
    assert "job failed: model.lr must be > 0 (got -1.0)" in p.stdout + p.stderr
    rows = {r["job"]: r for r in csv.DictReader((sweep / "summary.csv").open())}
    assert set(rows) == {"0", "1", "2"}
    assert rows["0"]["status"] == rows["1"]["status"] == "completed"
    assert rows["2"]["status"] == "failed" and "model.lr must be > 0" in rows["2"]["error"]
    assert "model.lr=0.005" in rows["1"]["overrides"]
    for job in ("0", "1"):
        res = json.loads((sweep / job / "results.json").read_text())
        assert float(rows[job]["test/acc"]) == pytest.approx(res["metrics"]["test/acc"])
        assert res["metrics"]["test/acc"] > 0.5
    md = (sweep / "summary.md").read_text()
    assert md.startswith("| job | status | overrides") and md.count("\n") == 5


def _final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


def test_last_ckpt_is_the_last_epoch_even_when_the_monitor_did_not_improve(run_train, data_dir):
    # monitor the epoch number, lowest best: epoch 0 stays the best and no later epoch improves it.
    # Lightning's own save_last would leave last.ckpt at epoch 0, and a resume would redo epochs 1-2
    monitor = ["callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min"]
    res = run_train([*QUICK, "data.train_subset=1000", "data.test_subset=200", *monitor, "trainer.max_epochs=3"])
    ckpts = Path(res["_dir"]) / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    last = torch.load(ckpts / "last.ckpt", weights_only=True, map_location="cpu")
    best = torch.load(ckpts / "epoch_000.ckpt", weights_only=True, map_location="cpu")
    assert (best["epoch"], last["epoch"]) == (0, 2) and last["global_step"] == 3 * best["global_step"]
    assert res["metrics"]["last_ckpt"] == str(ckpts / "last.ckpt")
    assert res["metrics"]["best_ckpt"] == str(ckpts / "epoch_000.ckpt")


def test_a_run_resumed_in_place_keeps_every_epoch_of_its_csv_log(run_train, data_dir):
    # Lightning's CSVLogger deletes the metrics.csv it finds: the earlier attempt's epochs would be lost
    quick = [*QUICK, "data.train_subset=1000", "data.test_subset=200", "test=false", "model.scheduler=null"]
    first = run_train([*quick, "trainer.max_epochs=2"])
    run = Path(first["_dir"])
    before = (run / "csv" / "metrics.csv").read_text()
    again = run_train([*quick, "trainer.max_epochs=3", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    assert again["_dir"] == first["_dir"] and again["status"] == "completed"
    assert (run / "resumed" / "metrics_000.csv").read_text() == before  # moved whole, before the new log

    def val_epochs(rows):
        return [int(r["epoch"]) for r in rows if r.get("val/acc")]

    assert val_epochs(csv.DictReader(open(run / "resumed" / "metrics_000.csv"))) == [0, 1]
    assert val_epochs(csv.DictReader(open(run / "csv" / "metrics.csv"))) == [2]
    assert val_epochs(csv_rows(run)) == [0, 1, 2]  # what the reports read
    # learning_curves.png draws the three epochs too: the callback's history travels in the checkpoint
    kept = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["LearningCurves"]
    assert kept["history"]["acc"]["val"] == pytest.approx(
        [float(r["val/acc"]) for r in csv_rows(run) if r.get("val/acc")]
    )


def test_save_last_follows_the_checkpoint_schedule(tmp_path):
    def checkpoints(*overrides):
        cfg = compose_cfg(["experiment=lenet_mnist", *overrides], tmp_path)
        return [cb for cb in instantiate_callbacks(cfg.callbacks) if isinstance(cb, ModelCheckpoint)]

    monitored, last = checkpoints("callbacks.model_checkpoint.every_n_epochs=3")
    assert type(last) is LastCheckpoint and monitored.save_last is False and monitored.monitor == "val/acc"
    assert last.dirpath == monitored.dirpath and last.monitor is None
    assert last.state_key != monitored.state_key
    assert (last.every_n_epochs, last.save_top_k) == (3, 1)  # the same save points; one file kept
    (only,) = checkpoints("callbacks.model_checkpoint.save_last=false")
    assert type(only) is ModelCheckpoint and not only.save_last


def test_checkpoints_are_written_whole_then_renamed_over_the_old_one(tmp_path, monkeypatch):
    trainer = build_trainer(compose_cfg(["experiment=lenet_mnist"], tmp_path), tmp_path)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # every Trainer of a run
    io, target = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 0}, target)
    seen, rename = [], os.replace

    def replace(src, dst):  # at the rename: the new file complete, the old one untouched
        seen.append((torch.load(src, weights_only=True)["epoch"], torch.load(dst, weights_only=True)["epoch"]))
        rename(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    io.save_checkpoint({"epoch": 1}, target)
    assert seen == [(1, 0)] and torch.load(target, weights_only=True)["epoch"] == 1
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_resume_after_sigkill_with_ckpt_path_last_matches_uninterrupted(tmp_path, data_dir):
    args = [
        *QUICK,
        "data.train_subset=8000",
        "trainer.max_epochs=3",
        "seed=7",
        "callbacks.model_checkpoint.save_top_k=-1",
    ]
    full = train_cli([*args, f"hydra.run.dir={tmp_path}/full"])
    assert full.returncode == 0, full.stderr[-2000:]

    logs = tmp_path / "logs"  # the killed run lands in the default layout <logs>/<task_name>/runs/<time>
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"paths.log_dir={logs}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list(logs.glob("*/runs/*/checkpoints/epoch_000.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into epoch 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    (killed_dir,) = logs.glob("*/runs/*")
    record = json.loads((killed_dir / "results.json").read_text())
    assert record["status"] == "running" and record["pid"] == proc.pid  # a killed run is visible as such
    last = killed_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] < 2

    resumed = train_cli([*args, f"hydra.run.dir={tmp_path}/resumed", f"paths.log_dir={logs}", "ckpt_path=last"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"ckpt_path=last: resuming {last}" in resumed.stdout
    a, b = _final_state(tmp_path / "full"), _final_state(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra = json.loads((tmp_path / "full" / "results.json").read_text())["metrics"]
    rb = json.loads((tmp_path / "resumed" / "results.json").read_text())["metrics"]
    assert ra["test/acc"] == rb["test/acc"] and ra["test/loss"] == rb["test/loss"]
