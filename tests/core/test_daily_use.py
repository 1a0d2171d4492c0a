"""What a user meets every day: short experiment names, one-line answers to typos and bad values
before anything heavy is imported, a quiet console, refusing to write over a finished run, W&B resume."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, ROOT, compose_cfg, run_cli, train_cli
from omegaconf import OmegaConf

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.runs import check_run_dir, newest_last_ckpt, prepare, running_elsewhere

ALIASES = {
    "gan": "gan_mnist",
    "gom": "gom_study",
    "digits": "lenet_digits",
    "mnist": "lenet_mnist",
    "style": "style_video",
}


@pytest.mark.parametrize("short", sorted(ALIASES))
def test_short_experiment_names_compose_the_papers_default(short, tmp_path):
    a = OmegaConf.to_container(compose_cfg([f"experiment={short}"], tmp_path), resolve=False)
    b = OmegaConf.to_container(compose_cfg([f"experiment={ALIASES[short]}"], tmp_path), resolve=False)
    assert a == b


def one_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-1500:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


def test_unknown_experiment_names_the_closest(tmp_path):
    line = one_line(train_cli(["experiment=gan_mnst", f"paths.log_dir={tmp_path}"]))
    assert "did you mean gan_mnist" in line
    assert "known: " in one_line(train_cli(["experiment=zzz", f"paths.log_dir={tmp_path}"]))
    assert "did you mean gpu" in one_line(train_cli(["trainer=gpuu", f"paths.log_dir={tmp_path}"]))


BAD_VALUES = {
    "model.lr=nan": "model.lr must be a finite number",
    "model.lr=inf": "model.lr must be a finite number",
    "model.lr=-1": "model.lr must be > 0",
    "data.batch_size=2.5": "data.batch_size: Value '2.5' of type 'float' could not be converted to Integer",
    "trainer.max_epochs=1.5": "trainer.max_epochs: Value '1.5' of type 'float' could not be converted to Integer",
    "task_name=" + "x" * 300: "task_name must be a file name of at most 100 characters",
    "output=my out é.mp4": "quote it for Hydra: output='my out é.mp4'",
}


def test_a_value_split_by_the_shell_gets_the_quoted_form(tmp_path):
    """`output=my out é.mp4` typed without quotes reaches us as three words."""
    line = one_line(train_cli(["experiment=lenet_mnist", "output=my", "out", "é.mp4", f"paths.log_dir={tmp_path}"]))
    assert line.endswith("\"output='my out é.mp4'\"") and "'out' is not key=value" in line
    assert not list(tmp_path.iterdir())
    # a word after a -flag is the flag's value, and ~key deletes a key: neither is a split value
    assert train_cli(["--cfg", "job", "experiment=lenet_mnist", "~callbacks.model_summary"]).returncode == 0


@pytest.mark.parametrize("arg", sorted(BAD_VALUES), ids=lambda a: a[:24])
def test_bad_value_is_one_line_before_any_run_folder(arg, tmp_path):
    line = one_line(train_cli(["experiment=lenet_mnist", arg, f"paths.log_dir={tmp_path}"]))
    assert BAD_VALUES[arg] in line
    assert not list(tmp_path.iterdir()), "nothing is created for a refused run"


def test_bad_paths_are_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in one_line(train_cli(["experiment=lenet_mnist", f"hydra.run.dir={a_file}"]))
    p = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "experiment=lenet_mnist"],
        env={**os.environ, "DATA_DIR": str(a_file), "HYBRIDLEARN_LOG_DIR": str(tmp_path / "logs")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "DATA_DIR=" in one_line(p) and "is a file" in p.stderr
    p = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "experiment=lenet_mnist"],
        env={**os.environ, "HYBRIDLEARN_LOG_DIR": str(a_file / "logs")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "cannot create the run folder" in one_line(p)


def test_a_finished_run_folder_is_never_written_over(tmp_path, lenet_run: Path):
    before = {p: p.stat().st_mtime_ns for p in lenet_run.rglob("*") if p.is_file()}
    line = one_line(train_cli(["experiment=lenet_mnist", "debug=fdr", f"hydra.run.dir={lenet_run}"]))
    assert "already holds a run (status completed)" in line and "ckpt_path=" in line
    assert before == {p: p.stat().st_mtime_ns for p in lenet_run.rglob("*") if p.is_file()}


def test_a_run_folder_in_use_by_a_live_process_is_not_resumed_twice(tmp_path):
    """results.json says `running` with the pid and host of a process that is alive: resuming that
    folder in place (two processes writing one run) is refused in one line; once it is gone, or for
    another machine's record (a cluster node), resuming goes ahead."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    other = subprocess.Popen(["sleep", "60"])
    try:
        record = {"status": "running", "pid": other.pid, "host": socket.gethostname()}
        (run_dir / "results.json").write_text(json.dumps(record))
        assert running_elsewhere(record) == other.pid
        with pytest.raises(ConfigError, match=rf"is in use: its run is running in process {other.pid}; wait"):
            check_run_dir(run_dir, str(last))
        assert running_elsewhere({**record, "host": "another-node"}) is None
        assert running_elsewhere({**record, "pid": os.getpid()}) is None  # this process: its own record
        assert running_elsewhere({**record, "status": "interrupted"}) is None
    finally:
        other.kill()
        other.wait()
    assert running_elsewhere(record) is None
    check_run_dir(run_dir, str(last))  # an interrupted run: resumed in place


def test_ckpt_path_last_picks_the_newest_run(tmp_path):
    runs = tmp_path / "lenet_mnist" / "runs"
    for name in ("2026-01-01_10-00-00_001-1", "2026-01-02_09-00-00_000-2", "2026-01-01_23-00-00_999-3"):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (runs / "2026-01-03_00-00-00_000-4").mkdir()  # newer, but never saved a checkpoint
    assert newest_last_ckpt(tmp_path, "lenet_mnist").parent.parent.name == "2026-01-02_09-00-00_000-2"
    with pytest.raises(ConfigError, match="no run of task_name=gom_mlp"):
        newest_last_ckpt(tmp_path, "gom_mlp")


def test_wandb_id_is_kept_and_reused_on_resume(tmp_path, lenet_run):
    """A run gets its W&B id up front; a run resumed from its checkpoint continues that W&B run."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    shutil.copyfile(lenet_run / "checkpoints" / "last.ckpt", ckpt)  # a real one: resume reads it first
    (run / "results.json").write_text(json.dumps({"status": "interrupted", "wandb_id": "abc123"}))
    cfg = compose_cfg(["experiment=lenet_mnist", "logger=wandb"], tmp_path / "new")
    prepare(cfg, None)
    assert len(cfg.logger.wandb.id) == 8 and cfg.logger.wandb.resume is None
    cfg = compose_cfg(
        ["experiment=lenet_mnist", "logger=wandb", f"ckpt_path={ckpt}", "trainer.max_epochs=1"], tmp_path / "new"
    )
    prepare(cfg, None)
    assert cfg.logger.wandb.id == "abc123" and cfg.logger.wandb.resume == "allow"


def test_console_is_quiet_and_train_log_keeps_lightnings_notices(lenet_run: Path):
    console = (lenet_run.parent / "console.txt").read_text()
    for noise in ("GPU available", "TPU available", "Tip", "ModelSummary", "absl", "Trainable params", "Test metric"):
        assert noise not in console, noise
    assert "Run directory:" in console and "test: test/acc" in console
    log = (lenet_run / "train.log").read_text()
    assert "GPU available: False" in log and "Trainable params" in log


def test_corrupt_checkpoint_is_exactly_one_line(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    line = one_line(train_cli(["experiment=gom_mlp", "task=test", f"ckpt_path={bad}", f"paths.log_dir={tmp_path}"]))
    assert "bad.ckpt is not a PyTorch checkpoint (" in line and "give a .ckpt written by train.py" in line


def test_diverging_run_fails_naming_the_step_and_metric(tmp_path, data_dir):
    run = tmp_path / "run"
    args = ["experiment=lenet_mnist", "model.lr=1e35", "data.train_subset=1024", "trainer.max_epochs=2", "logger=none"]
    line = one_line(train_cli([*args, f"hydra.run.dir={run}"]))
    assert "train/loss is nan at step" in line or "train/loss is inf at step" in line, line
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "failed" and "at step" in res["error"]


def test_every_experiment_config_passes_the_checks(tmp_path):
    for exp in sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")):
        prepare(compose_cfg([f"experiment={exp}"], tmp_path), None)


def test_help_lists_every_group_and_its_options(tmp_path):
    """`--help` is ours: the groups' options from conf/ and the ConfigStore (Hydra's own --help builds
    a config repository per group: seconds); a user's searchpath adds its experiments."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\n")
    p = run_cli("train.py", ["--help", f"hydra.searchpath=[file://{tmp_path}]"])
    assert p.returncode == 0 and p.stdout.startswith("usage: train.py"), p.stderr[-2000:]
    groups = dict(ln.strip().split(": ", 1) for ln in p.stdout.splitlines() if ln.startswith("  ") and ": " in ln)
    assert {"lenet_mnist", "gan_mnist_dcgan", "style_video", "mine"} <= set(groups["experiment"].split(", "))
    assert {"lenet5", "mlp_gan", "gom_hybrid"} <= set(groups["model"].split(", "))  # settings dataclasses
    assert "hydra" not in groups and "--hydra-help" in p.stdout
    s = run_cli("stylize.py", ["--help"])
    assert s.returncode == 0 and "stylize.py sets experiment=style_video" in s.stdout
