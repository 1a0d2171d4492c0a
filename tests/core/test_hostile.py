"""The hostile passes, case by case, so none of them comes back: what a careless or malicious user
types gets one line on stderr naming the key or file and what to do, exit status 2, no run folder
(where the refusal needs no model), no traceback; nothing of the user's is touched.

Each case runs the command in-process (conftest.run_cli), as the console command would."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import run_cli, train_cli

LENET = ["experiment=lenet_mnist", "data.train_subset=600", "data.test_subset=200", "trainer.enable_progress_bar=false"]


def refused(p, needle: str) -> str:
    """The one `error:` line of a refused command (exit 2, nothing else on stderr), holding `needle`."""
    assert p.returncode == 2, (p.returncode, p.stderr[-2500:])
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr[-2500:]
    assert needle in lines[0], lines[0]
    return lines[0]


# (overrides, what the one line says): refused before any run folder, in about a second
BEFORE_THE_RUN_FOLDER = {
    # issue 36 (third pass)
    "seed=-1": "seed must be >= 0 and <= 4294967295",
    "seed=1180591620717411303424": "seed must be >= 0 and <= 4294967295",
    "trainer.devices=999": "trainer.devices=999, but this machine has",
    "trainer=gpu": "trainer.accelerator=gpu, but this machine has no NVIDIA GPU",
    "trainer.max_epochs=-1": "model.scheduler",
    "logger=wandb logger.wandb.mode=online": "logger.wandb.mode=online, but W&B has no API key here",
    "task_name=..": "task_name must be a file name",
    "print_config=maybe": "print_config: Value 'maybe' is not a valid bool",
    "hydra/launcher=nonexistent": "Available options in 'hydra/launcher': basic, joblib",
    "experiment=../train": "unknown experiment '../train'",
    "+model.no_such_key=1": "model.no_such_key is not a setting of model",
    "model.activation=relu": "Key 'activation' not in 'LeNet5Config'",
    "model.tta={rotate:[5]}": "the overrides could not be composed",
    "model.augment.p=0.9": "the overrides could not be composed",
    # earlier passes
    "model.lr=nan": "model.lr must be a finite number",
    "model.lr=inf": "model.lr must be a finite number",
    "model.lr=-1": "model.lr must be > 0",
    "model.lr=0": "model.lr must be > 0",
    "data.batch_size=2.5": "data.batch_size: Value '2.5' of type 'float' could not be converted to Integer",
    "data.batch_size=0": "data.batch_size must be >= 1",
    "trainer.max_epochs=1.5": "trainer.max_epochs: Value '1.5' of type 'float' could not be converted to Integer",
    "trainer.max_epochs=0": "trainer.max_epochs must be a positive integer or -1",
    "task=train": "task must be one of fit, test, predict",
    "task=test": "task=test needs ckpt_path=",
    "ckpt_path=/no/such.ckpt": "ckpt_path=/no/such.ckpt is not a file",
    "ckpt_path=last task_name=never_ran": "ckpt_path=last: no run of task_name=never_ran",
    "task_name=" + "x" * 300: "task_name must be a file name of at most 100 characters",
    "experiment=gan_mnst": "did you mean gan_mnist",
    "trainer=gpuu": "did you mean gpu",
    "cv.folds=1": "cv.folds must be 0 (no CV) or at least 2",
    "cv.folds=3 task=predict ckpt_path=x": "cv.folds=3 trains a model per fold: it needs task=fit",
}


@pytest.mark.parametrize("case", sorted(BEFORE_THE_RUN_FOLDER), ids=lambda c: c[:40])
def test_refused_before_the_run_folder(case, tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a W&B key
    args = ["experiment=lenet_mnist", *case.split(" "), f"paths.log_dir={tmp_path / 'logs'}"]
    started = time.time()
    refused(train_cli(args), BEFORE_THE_RUN_FOLDER[case])
    assert not (tmp_path / "logs").exists(), "nothing is created for a refused run"
    assert time.time() - started < 10  # in-process: the config alone (a fresh process adds ~1 s)


def test_multirun_flag_after_the_overrides_is_named(tmp_path):
    refused(train_cli(["experiment=lenet_mnist", "-m", "seed=1,2"]), "-m must come before the overrides")


def test_an_unquoted_value_with_spaces(tmp_path):
    line = refused(train_cli(["experiment=lenet_mnist", "output=my", "out", "é.mp4"]), "is not key=value")
    assert line.endswith("\"output='my out é.mp4'\"")


# ------------------------------------------------------------------------------- files and folders
@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir) -> Path:
    """A finished 1-epoch LeNet-5 run (one-cycle schedule)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    p = train_cli([*LENET, "trainer.max_epochs=1", "logger=csv", f"hydra.run.dir={run}"])
    assert p.returncode == 0, p.stderr[-2000:]
    return run


def test_user_folder_as_run_dir_is_refused_and_untouched(tmp_path):
    mine = tmp_path / "mine"
    (mine / "csv").mkdir(parents=True)
    (mine / "confusion_matrix.png").write_bytes(b"my picture")
    (mine / "csv" / "metrics.csv").write_text("my numbers")
    refused(train_cli([*LENET, f"hydra.run.dir={mine}"]), "holds files that are not a run of this project")
    assert (mine / "confusion_matrix.png").read_bytes() == b"my picture"
    assert sorted(p.name for p in mine.rglob("*")) == ["confusion_matrix.png", "csv", "metrics.csv"]


def test_a_finished_run_is_never_written_over(finished):
    before = (finished / "results.json").read_bytes()
    refused(train_cli([*LENET, f"hydra.run.dir={finished}"]), "already holds a run (status completed)")
    assert (finished / "results.json").read_bytes() == before


def test_a_corrupt_data_file_is_named_before_the_run_folder(tmp_path, data_dir):
    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    for f in (data_dir / "mnist").glob("*.gz"):
        shutil.copy(f, mnist / f.name)
    bad = mnist / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated
    p = train_cli([*LENET, f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}"])
    refused(p, "train-labels-idx1-ubyte.gz: md5")
    assert not (tmp_path / "logs").exists() and bad.stat().st_size == 1000  # the user's file is kept


def test_run_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    refused(train_cli([*LENET, f"hydra.run.dir={f}"]), "is a file; give a folder")


def test_resuming_a_finished_schedule_with_more_epochs(finished):
    last = finished / "checkpoints" / "last.ckpt"
    p = train_cli([*LENET, "trainer.max_epochs=2", f"ckpt_path={last}", f"hydra.run.dir={finished}"])
    refused(p, "schedule was planned for 1 epoch(s) and cannot stretch to trainer.max_epochs=2")


def test_checkpoint_of_another_model(finished, tmp_path):
    last = finished / "checkpoints" / "last.ckpt"
    p = train_cli(["experiment=gan_mnist", f"ckpt_path={last}", "task=test", f"paths.log_dir={tmp_path}"])
    refused(p, "holds a LeNet5, not this experiment's")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04 broken zip", b""])
def test_a_file_that_is_no_checkpoint(content, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    p = train_cli([*LENET, f"ckpt_path={bad}", "task=test", f"paths.log_dir={tmp_path / 'logs'}"])
    refused(p, "is not a PyTorch checkpoint")
    assert not (tmp_path / "logs").exists()


class _Marker:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_crafted_checkpoint_is_refused_without_unsafe_advice(finished, tmp_path):
    marker = tmp_path / "pwned"
    ck = torch.load(finished / "checkpoints" / "last.ckpt", weights_only=True)
    ck["hyper_parameters"]["evil"] = _Marker(str(marker))
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ck, crafted)
    for script, args in [
        ("train.py", [*LENET, f"ckpt_path={crafted}", "task=test", f"paths.log_dir={tmp_path / 'logs'}"]),
        ("predict.py", [str(crafted), str(tmp_path)]),
        ("generate.py", [str(crafted), "--out", str(tmp_path / "g.png")]),
    ]:
        p = run_cli(script, args)
        assert p.returncode == 2 and not marker.exists(), p.stderr[-2000:]
        assert "weights_only=False" not in p.stderr and "could run code" in p.stderr, p.stderr[-2000:]


@pytest.mark.parametrize(
    "script,args,needle",
    [
        ("predict.py", ["{ckpt}", "missing.png"], "missing.png is neither an image nor a folder"),
        ("predict.py", ["{ckpt}", "{ckpt}", "--grid", "10by10"], "--grid must be auto or ROWSxCOLS"),
        ("generate.py", ["{ckpt}", "--out", "g.png", "-n", "abc"], "argument -n: invalid int value: 'abc'"),
    ],
)
def test_module_commands_answer_one_line(script, args, needle, finished, tmp_path):
    ckpt = str(finished / "checkpoints" / "last.ckpt")
    refused(run_cli(script, [a.format(ckpt=ckpt) for a in args], cwd=tmp_path), needle)


# ------------------------------------------------------------------------------------ during a run
def test_a_diverging_loss_fails_the_run(tmp_path, data_dir):
    run = tmp_path / "run"
    p = train_cli([*LENET, "model.lr=1e6", "logger=none", f"hydra.run.dir={run}"])
    line = refused(p, "training diverged")
    assert "first value" in line or "is nan" in line or "is inf" in line
    assert json.loads((run / "results.json").read_text())["status"] == "failed"


def test_wandb_offline_is_quiet(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    p = train_cli([*LENET, "trainer.max_epochs=1", "logger=wandb", f"hydra.run.dir={tmp_path / 'run'}"])
    assert p.returncode == 0, p.stderr[-2000:]
    # wandb 0.31 warns once that Lightning passes its `anonymous` setting; nothing else reaches the console
    assert len([ln for ln in p.stderr.splitlines() if ln.strip()]) <= 1, p.stderr


class InterruptAtTest(L.Callback):
    """Ctrl-C while the best checkpoint is being tested (the fit has finished)."""

    def on_test_start(self, trainer, pl_module):
        if os.environ.get("HOSTILE_INTERRUPT") == "1":
            raise KeyboardInterrupt


def test_ctrl_c_during_the_final_test_then_resume_keeps_every_metric(tmp_path, data_dir, monkeypatch):
    run = tmp_path / "run"
    args = [*LENET, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={run}"]
    args += [f"+callbacks.interrupt._target_={__name__}.InterruptAtTest"]
    monkeypatch.setenv("HOSTILE_INTERRUPT", "1")
    p = train_cli(args)
    assert p.returncode == 130, p.stderr[-2000:]
    stopped = json.loads((run / "results.json").read_text())
    assert stopped["status"] == "interrupted" and "val/acc" in stopped["metrics"]
    monkeypatch.setenv("HOSTILE_INTERRUPT", "0")
    p = train_cli([*args, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    assert p.returncode == 0, p.stderr[-2000:]
    done = json.loads((run / "results.json").read_text())
    assert done["status"] == "completed"
    assert {"val/acc", "val/loss", "train/loss", "test/acc", "test/loss"} <= set(done["metrics"])


def test_nothing_left_behind_by_refusals(tmp_path):
    """A refused command leaves no stray folders in the working directory either."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for case in ("seed=-1", "task_name=..", "trainer.devices=999"):
        train_cli(["experiment=lenet_mnist", case], cwd=cwd)
    assert not list(cwd.iterdir())
    shutil.rmtree(cwd)
