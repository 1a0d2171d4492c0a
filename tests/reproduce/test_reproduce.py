"""make reproduce: the plan, the order, the resume logic, the sweep with an in-process launcher, the
report read from the runs' own files, and the quick mode end to end with tiny settings under Hydra's
basic, joblib and submitit_local launchers (every run a real train.py job, seconds each)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
from pathlib import Path

import pytest
from conftest import compose_cfg, train_cli
from omegaconf import OmegaConf, open_dict
from PIL import Image

import hybridlearn.reproduce.sweep as sweep_mod
from hybridlearn.core.errors import ConfigError, DataError, RunsFailed
from hybridlearn.core.report import wall_time
from hybridlearn.core.reproduce import Run, flatten, override_value
from hybridlearn.gom.results import ResultsError
from hybridlearn.reproduce.report import write_report
from hybridlearn.reproduce.stages import (
    MARKER,
    expected_seconds,
    longest_first,
    make_plan,
    makespan,
    prepare,
    run_state,
    stage_seconds,
    stale_reason,
)
from hybridlearn.reproduce.sweep import (
    CONSOLE,
    MAX_SHOWN_CHARS,
    STOP,
    ReproduceJob,
    failures_line,
    job_overrides,
    run_reproduce,
    stop_file,
    stop_on_ctrl_c,
)

# Every stage in seconds: one GOM seed on a 2x2 grid, 2-fold CV, one digits seed for 1-2 epochs,
# the GAN for 2 epochs on 1024 images, the video for 6 frames at 64 px.
TINY = [
    "reproduce.quick=true",
    "reproduce.scale.quick.gom.seeds=[0]",
    "reproduce.scale.quick.gom.cv_features=[default]",
    "++reproduce.scale.quick.gom.set.grid.depths=[1]",
    "++reproduce.scale.quick.gom.set.grid.widths=[1,2]",
    "++reproduce.scale.quick.gom.set.grid.mlp_lrs=[0.1]",
    "++reproduce.scale.quick.gom.set.grid.ae_hidden=[[1,3],[69,70]]",
    "++reproduce.scale.quick.gom.set.grid.ae_lrs=[0.1]",
    "++reproduce.scale.quick.gom.set.grid.epochs=5",
    "++reproduce.scale.quick.gom.set.trainer.max_epochs=3",
    "++reproduce.scale.quick.gom.cv_set.cv.folds=2",
    "++reproduce.scale.quick.gom.cv_set.trainer.max_epochs=2",
    "++reproduce.scale.quick.gom.cv_set.study.forest_trees=4",
    "reproduce.scale.quick.digits.set.study.seeds=[0]",
    "++reproduce.scale.quick.digits.set.study.variants.transfer.model.pretrain.epochs=1",
    "++reproduce.scale.quick.digits.set.study.variants.transfer.model.pretrain.subset=2000",
    "++reproduce.scale.quick.digits.set.study.paper_epochs=[1,2]",
    "reproduce.scale.quick.digits.set.study.transfer_epochs=1",
    "reproduce.scale.quick.gan.set.trainer.max_epochs=2",
    "reproduce.scale.quick.gan.set.data.train_subset=1024",
    "++reproduce.scale.quick.gan.set.data.batch_size=256",
    "++reproduce.scale.quick.gan.set.data.test_subset=500",
    "++reproduce.scale.quick.gan.set.model.fid.num_samples=500",
    "++reproduce.scale.quick.gan.set.model.fid.num_real=500",
    "reproduce.scale.quick.gan.set.callbacks.gan_samples.epochs=[1,2]",
    "reproduce.scale.quick.style.set.data.max_frames=6",
    "reproduce.scale.quick.style.set.data.max_side=64",
]


def table(md: str, heading: str) -> list[list[str]]:
    """Rows (cells) of the first markdown table after the line starting with `heading`."""
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[i if lines[i].startswith("|") else i + 1 :]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows[1:]  # without the header


def first_number(cell: str) -> float:
    return float(re.search(r"-?\d+(\.\d+)?", cell).group())


# ------------------------------------------------------------------------------------ plan, state
def test_flatten_quotes_values_for_hydra():
    got = flatten({"a": {"b": 1, "c": [1, 2.5], "d": None, "e": True}, "s": "x y", "p": "/tmp/a_b.png"})
    assert got == ["a.b=1", "a.c=[1,2.5]", "a.d=null", "a.e=true", "s='x y'", "p=/tmp/a_b.png"]


def test_the_registry_is_the_composed_reproduce_modules(tmp_path):
    only_gom = ["experiment=reproduce", "reproduce.modules=[hybridlearn.gom.reproduce]"]
    cfg = compose_cfg([*only_gom, "reproduce.stages=[gom]"], tmp_path)
    assert list(make_plan(cfg, check=False).runs) == ["gom"]
    with pytest.raises(ConfigError, match=r"reproduce.stages\[0\] must be one of gom \(got 'digits'\)"):
        make_plan(compose_cfg([*only_gom, "reproduce.stages=[digits]"], tmp_path), check=False)
    with pytest.raises(ConfigError, match="reproduce.modules: No module named 'hybridlearn.nope'"):
        make_plan(compose_cfg(["experiment=reproduce", "reproduce.modules=[hybridlearn.nope.reproduce]"], tmp_path))
    md = write_report(tmp_path / "r", quick=False, stages=["gom"], modules=["hybridlearn.gom.reproduce"]).read_text()
    assert "## 1. Geographical" in md and "## 2. LeNet-5" not in md


def test_plan_quick_and_paper(tmp_path, data_dir):
    paper = make_plan(compose_cfg(["experiment=reproduce"], tmp_path))
    assert [r.name for r in paper.runs["gom"]][:5] == [f"study_seed{s}" for s in range(5)]  # >= 5 seeds
    # the GAN stages: one resumable run per training seed, the first one the report's grids
    assert [r.rel for r in paper.runs["gan"]] == ["gan/mnist", "gan/mnist_seed1", "gan/mnist_seed2"]
    assert all(r.resumable and r.args[-1] == f"seed={s}" for s, r in enumerate(paper.runs["gan"]))
    assert not any("max_epochs" in a for a in paper.runs["gan"][0].args)  # the paper's 200 epochs
    quick = make_plan(
        compose_cfg(["experiment=reproduce", "reproduce.quick=true", "reproduce.stages=[gan,style]"], tmp_path)
    )
    assert list(quick.runs) == ["gan", "style"]
    assert [r.rel for r in quick.runs["gan"]] == ["gan/mnist"]  # one seed
    assert "trainer.max_epochs=5" in quick.runs["gan"][0].args
    assert {r.name for r in quick.runs["style"]} == {"per_frame", "temporal_blend"}
    assert "model.temporal_blend=0.6" in next(r for r in quick.runs["style"] if r.name == "temporal_blend").args
    # the modern GAN: off by default, the paper GAN's settings (same steps) on experiment=gan_mnist_modern
    assert "gan_modern" not in paper.runs
    both = make_plan(
        compose_cfg(["experiment=reproduce", "reproduce.quick=true", "reproduce.stages=[gan,gan_modern]"], tmp_path)
    )
    g, m = both.runs["gan"][0], both.runs["gan_modern"][0]
    assert m.rel == "gan_modern/mnist" and m.resumable
    assert m.args[0] == "experiment=gan_mnist_modern" and m.args[1:] == g.args[1:]


def test_every_run_of_the_plan_is_a_train_py_run(tmp_path, data_dir):
    """The contact sheet too (experiment=digits_contact_sheet), so every run is a launcher's job."""
    plan = make_plan(compose_cfg(["experiment=reproduce", "reproduce.stages=[digits]"], tmp_path))
    sheet = next(r for r in plan.runs["digits"] if r.name == "contact_sheet")
    assert sheet.args[0] == "experiment=digits_contact_sheet" and sheet.config


def test_plan_refuses_unknown_stage_and_keys(tmp_path, data_dir):
    with pytest.raises(ConfigError, match="reproduce.stages"):
        make_plan(compose_cfg(["experiment=reproduce", "reproduce.stages=[gom,gann]"], tmp_path))
    with pytest.raises(ConfigError, match="does not compose"):  # a typo fails before any run starts
        make_plan(
            compose_cfg(
                [
                    "experiment=reproduce",
                    "reproduce.stages=[gan]",
                    "++reproduce.scale.paper.gan.set.trainer.max_epoch=3",
                ],
                tmp_path,
            )
        )


def test_plan_refuses_a_seed_given_twice(tmp_path, data_dir):
    """GOM's code_seeds [3, 1, 3] would be two jobs into gom/code_seed3 at once; the GAN's seeds [0, 0]
    the same run trained twice (gan_modern shares gan's seeds)."""
    for stage, setting, shown in (
        ("gom", "gom.code_seeds=[3,1,3]", "gom.code_seeds=[3, 1, 3]: seed 3 given twice"),
        ("gan_modern", "gan.seeds=[0,2,0]", "gan_modern.seeds=[0, 2, 0]: seed 0 given twice"),
    ):
        cfg = compose_cfg(
            ["experiment=reproduce", f"reproduce.stages=[{stage}]", f"reproduce.scale.paper.{setting}"],
            tmp_path / stage,
        )
        with pytest.raises(ConfigError, match=re.escape(f"reproduce.scale.paper.{shown}")):
            make_plan(cfg, check=False)
    # any other value twice that makes two runs of one folder
    cfg = compose_cfg(
        ["experiment=reproduce", "reproduce.stages=[gom]", "reproduce.scale.paper.gom.cv_features=[default,default]"],
        tmp_path / "cv",
    )
    with pytest.raises(ConfigError, match=r"reproduce.scale.paper.gom: plans gom/cv_default_seed0, .* more than once"):
        make_plan(cfg, check=False)


def test_run_state(tmp_path):
    run = Run("gan", "mnist", ["experiment=gan_mnist"], resumable=True)
    d = tmp_path / "gan" / "mnist"
    assert run_state(d, run) == "new"
    d.mkdir(parents=True)
    (d / MARKER).write_text(json.dumps({"args": run.args}))
    assert run_state(d, run) == "rerun"  # killed before any checkpoint
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (d / "results.json").write_text(json.dumps({"status": "interrupted"}))
    assert run_state(d, run) == "resume"
    assert run_state(d, Run("gan", "mnist", run.args)) == "rerun"  # not resumable: start again
    (d / "results.json").write_text(json.dumps({"status": "completed"}))
    assert run_state(d, run) == "done"
    assert run_state(d, Run("gan", "mnist", [*run.args, "trainer.max_epochs=3"], resumable=True)) == "stale"


def test_a_run_running_in_another_process_is_left_to_it(tmp_path, caplog):
    """A second `make reproduce` on the same folder: a run whose record says `running` with a live
    pid on this machine is neither resumed a second time nor moved aside; a dead pid or another
    machine's record is the usual interrupted run (resume)."""
    run = Run("gan", "mnist", ["experiment=gan_mnist"], resumable=True)
    d = tmp_path / "gan" / "mnist"
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (d / MARKER).write_text(json.dumps({"args": run.args}))
    other = subprocess.Popen(["sleep", "60"])
    try:
        record = {"status": "running", "pid": other.pid, "host": socket.gethostname()}
        (d / "results.json").write_text(json.dumps(record))
        assert run_state(d, run) == "running"
        with caplog.at_level("INFO"):
            assert prepare(run, tmp_path) == "running"
        assert f"gan/mnist is running in another process (pid {other.pid})" in caplog.text
        assert sorted(p.name for p in (tmp_path / "gan").iterdir()) == ["mnist"]  # nothing moved aside
        (d / "results.json").write_text(json.dumps({**record, "host": "another-node"}))
        assert run_state(d, run) == "resume"  # a cluster node's process cannot be asked
        (d / "results.json").write_text(json.dumps(record))
    finally:
        other.kill()
        other.wait()
    assert run_state(d, run) == "resume"  # killed: its pid is gone


def test_a_changed_default_behind_the_same_args_makes_a_run_stale(tmp_path):
    """The plan hashes each train run's composed config; a finished run whose marker holds another
    hash (a YAML default changed since) is run again, not reused. Markers without a hash are kept."""
    plan = make_plan(compose_cfg(["experiment=reproduce", "reproduce.stages=[gom]"], tmp_path / "c"))
    run = next(r for r in plan.runs["gom"] if r.name == "cv_default_seed0")
    assert run.config and len({r.config for r in plan.runs["gom"]}) == len(plan.runs["gom"])
    d = tmp_path / "gom" / run.name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"status": "completed"}))
    (d / MARKER).write_text(json.dumps({"args": run.args, "config": run.config}))
    assert run_state(d, run) == "done"
    (d / MARKER).write_text(json.dumps({"args": run.args, "config": "0123456789abcdef"}))
    assert run_state(d, run) == "stale"
    (d / MARKER).write_text(json.dumps({"args": run.args}))  # written before configs were hashed
    assert run_state(d, run) == "done"


def test_a_setting_added_since_at_its_default_keeps_a_finished_run(tmp_path):
    """The marker keeps the run's settings: a key the run did not have, now at its declared default
    (a new option), changes nothing; the same key at another value, a changed value or a removed
    key makes the run stale. The real marker of prepare() holds exactly the plan's settings."""
    plan = make_plan(compose_cfg(["experiment=reproduce", "reproduce.stages=[gan]"], tmp_path / "c"))
    run = plan.runs["gan"][0]
    assert run.settings["model.r1_gamma"] == run.defaults["model.r1_gamma"] == 0.0
    assert prepare(run, tmp_path) == "start"
    d = tmp_path / "gan" / run.name
    marker = json.loads((d / MARKER).read_text())
    assert marker["settings"] == json.loads(json.dumps(run.settings)) and marker["config"] == run.config
    (d / "results.json").write_text(json.dumps({"status": "completed"}))
    older = {k: v for k, v in marker["settings"].items() if not k.startswith(("model.r1_", "repeat."))}

    def state(settings: dict, config: str = "0123456789abcdef") -> str:
        (d / MARKER).write_text(json.dumps({"args": run.args, "config": config, "settings": settings}))
        return run_state(d, run)

    assert state(marker["settings"], run.config) == "done"
    assert state(older) == "done"  # made before R1 and repeat existed: both at their defaults now
    assert state(marker["settings"]) == "done"  # another hash, the same settings
    assert state({**older, "model.g_lr": 0.1}) == "stale"  # a value changed under the args
    assert state({k: v for k, v in older.items() if k != "data.batch_size"}) == "stale"  # lacked, not at default...
    assert state({**marker["settings"], "model.old_option": 1}) == "stale"  # ...or one that is gone
    run.settings = {**run.settings, "model.r1_gamma": 1.0}  # a new option that the YAML turns on
    assert state(older) == "stale"
    assert stale_reason(d, run) == "other settings (model.r1_gamma)"  # what the log line names
    assert state({**older, "model.g_lr": 0.1}) == "stale"
    assert stale_reason(d, run) == "other settings (model.g_lr, model.r1_gamma)"


# --------------------------------------------------------------------------------- order, folders
def test_runs_start_longest_first(tmp_path):
    """Each stage's expected time is shared out over its runs by their cost; the runs start longest
    first, so the GAN's long runs (one per seed) start at once and the short ones fill the end: on 2 workers
    within one GOM study of the lower bound (half of all the work), well before the plan's own order."""
    cfg = compose_cfg(["experiment=reproduce"], tmp_path)
    plan = make_plan(cfg, check=False)
    expected = dict(cfg.reproduce.expected_s)
    sec = expected_seconds(plan, expected)
    for stage, runs in plan.runs.items():  # a run: its cost times its stage's seconds per cost unit
        assert all(sec[r.rel] == pytest.approx(r.cost * expected[stage]) for r in runs)
    study, cv = sec["gom/study_seed0"], sec["gom/cv_default_seed0"]
    assert cv == pytest.approx(5 * study) and 10 * study + 6 * cv == pytest.approx(40 * expected["gom"])
    # the estimate follows the plan's seeds: one GAN seed is a third of three
    one = make_plan(compose_cfg(["experiment=reproduce", "reproduce.scale.paper.gan.seeds=[0]"], tmp_path), check=False)
    assert stage_seconds(one, expected_seconds(one, expected))["gan"] == pytest.approx(
        stage_seconds(plan, sec)["gan"] / 3
    )
    order = [r.rel for r in longest_first(plan.all, sec)]
    assert order[:4] == ["gan/mnist", "gan/mnist_seed1", "gan/mnist_seed2", "digits/study"]
    cvs = [f"gom/cv_{f}_seed{s}" for f in ("default", "chromatic") for s in (0, 1, 2)]
    assert order[4:10] == cvs and order[-1] == "digits/contact_sheet"  # among equals, the plan's order
    lpt = makespan([sec[r] for r in order], 2)
    assert sum(sec.values()) / 2 <= lpt <= sum(sec.values()) / 2 + study
    assert lpt <= 195 * 60 < makespan([sec[r.rel] for r in plan.all], 2)  # in plan order the GAN starts last
    assert makespan([3, 3, 2, 2, 2], 2) == 7 and makespan([5, 1, 1], 1) == 7  # each run to the first free worker


def test_prepare_skips_resumes_and_never_writes_over_a_folder(tmp_path):
    root = tmp_path
    gan = Run("gan", "mnist", ["experiment=gan_mnist"], resumable=True, config="abc")
    d = root / "gan" / "mnist"
    assert prepare(gan, root) == "start"
    assert json.loads((d / MARKER).read_text()) == {"args": gan.args, "config": "abc", "settings": None}
    # killed after an epoch: resumed in place from its last.ckpt (its Trainer keeps the first attempt's
    # CSV log in resumed/: core.results.keep_earlier_log, tested in tests/core/test_runs.py)
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (d / "results.json").write_text(json.dumps({"status": "interrupted"}))
    assert prepare(gan, root) == "resume"
    assert job_overrides(gan, root, resume=True) == [
        "experiment=gan_mnist",
        f"ckpt_path={override_value(str(d / 'checkpoints' / 'last.ckpt'))}",
        "hydra.mode=MULTIRUN",  # a failed run is recorded and the sweep goes on (core.runner)
        f"hydra.sweep.dir={override_value(str(root))}",
        "hydra.sweep.subdir=gan/mnist",
    ]
    (d / "results.json").write_text(json.dumps({"status": "completed"}))
    assert prepare(gan, root) == "done"
    # other settings: the finished run is moved aside, neither reused nor written over
    other = Run("gan", "mnist", [*gan.args, "trainer.max_epochs=3"], resumable=True)
    assert prepare(other, root) == "start"
    assert json.loads((root / "gan" / "mnist.stale-1" / "results.json").read_text())["status"] == "completed"
    assert [p.name for p in d.iterdir()] == [MARKER]
    # not resumable and not finished: started again in a fresh folder, the attempt kept beside it
    style = Run("style", "per_frame", ["experiment=style_video"])
    prepare(style, root)
    (root / "style" / "per_frame" / "results.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    assert prepare(style, root) == "start" and (root / "style" / "per_frame.stale-1" / "results.json").is_file()
    # a folder made by hand (no marker) is moved aside too
    mine = root / "style" / "temporal_blend"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    prepare(Run("style", "temporal_blend", ["experiment=style_video"]), root)
    assert (root / "style" / "temporal_blend.stale-1" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------- the sweep
class InProcessLauncher:
    """A launcher for the sweep's own logic: each job's ReproduceJob runs here, one after another, with
    `task(run_dir)` standing in for train.py's run (it writes the run's results.json)."""

    def __init__(self, job: ReproduceJob, task) -> None:
        self.batches: list[list[list[str]]] = []
        job.task_function = lambda cfg: task(Path(cfg.paths.output_dir))
        self.job = job

    def launch(self, job_overrides, initial_job_idx):
        self.batches.append([list(o) for o in job_overrides])
        for o in job_overrides:
            kv = dict(x.split("=", 1) for x in o)
            self.job(OmegaConf.create({"paths": {"output_dir": f"{kv['hydra.sweep.dir']}/{kv['hydra.sweep.subdir']}"}}))
        return []


def record(run_dir: Path, status: str, **extra) -> None:
    (run_dir / "results.json").write_text(json.dumps({"status": status, "duration_s": 1.0, **extra}))


@pytest.fixture
def sweep_setup(tmp_path, monkeypatch):
    """(config, job, reports) of a quick [gan, style] plan into tmp_path/r; write_report recorded."""
    reports = []
    monkeypatch.setattr(sweep_mod, "write_report", lambda root, **kw: reports.append(kw) or root / "REPORT.md")
    root = tmp_path / "r"
    cfg = compose_cfg(
        ["experiment=reproduce", "reproduce.quick=true", "reproduce.stages=[gan,style]", f"reproduce.dir={root}"],
        tmp_path / "c",
    )
    return cfg, ReproduceJob(None, stop_file(cfg)), reports


def test_the_sweep_launches_what_is_left_longest_first_then_reports(sweep_setup):
    cfg, job, reports = sweep_setup
    launcher = InProcessLauncher(job, lambda d: record(d, "completed"))
    run_reproduce(cfg, launcher, job, ["experiment=reproduce"])
    (batch,) = launcher.batches
    assert [o[-1] for o in batch] == [
        f"hydra.sweep.subdir={r}" for r in ("gan/mnist", "style/per_frame", "style/temporal_blend")
    ]
    plan = make_plan(cfg, check=False)
    assert [o[: len(r.args)] for o, r in zip(batch, plan.all)] == [r.args for r in plan.all]
    assert reports[0]["stages"] == ["gan", "style"] and reports[0]["quick"]
    run_reproduce(cfg, launcher, job, [])  # nothing left: no launch, the report again
    assert len(launcher.batches) == 1 and len(reports) == 2
    with pytest.raises(ConfigError, match=r"reproduce.stages=gan,style: .* not a sweep"):
        run_reproduce(cfg, launcher, job, ["reproduce.stages=gan,style"])
    for bad in (0, "two"):  # joblib's own error would come only after the plan, from inside the launcher
        odd = cfg.copy()
        with open_dict(odd):
            odd.hydra = {"launcher": {"n_jobs": bad}}
        with pytest.raises(ConfigError, match=rf"hydra.launcher.n_jobs={bad}: the runs at once must be"):
            run_reproduce(odd, launcher, job, [])
    assert len(launcher.batches) == 1


def test_a_second_command_on_the_folder_keeps_to_its_own_ctrl_c(sweep_setup, monkeypatch):
    """Two `make reproduce` on one folder (the second leaves the first's running run to it): the first's
    Ctrl-C (its stop file) neither stops the second's queue nor is cleared by the second's end."""
    cfg, job, reports = sweep_setup
    root = Path(cfg.reproduce.dir)
    root.mkdir(parents=True)
    with monkeypatch.context() as m:
        m.setattr(os, "getpid", lambda: 4_000_000)  # the other command's process, stopping on Ctrl-C
        other = stop_file(cfg)
    other.touch()
    assert job.stop.parent == root == other.parent
    launcher = InProcessLauncher(job, lambda d: record(d, "completed"))
    run_reproduce(cfg, launcher, job, [])
    assert all(results(root, r.rel)["status"] == "completed" for r in make_plan(cfg, check=False).all)
    assert other.exists() and not job.stop.exists()


def test_a_failed_run_fails_the_sweep_after_the_report(sweep_setup):
    cfg, job, reports = sweep_setup

    def task(d: Path) -> None:
        record(d, "failed", error="input file missing.mp4 not found") if d.name == "temporal_blend" else record(
            d, "completed"
        )

    with pytest.raises(
        RunsFailed, match=r"1 run\(s\) failed: style/temporal_blend: input file missing.mp4 not found; the report"
    ):
        run_reproduce(cfg, InProcessLauncher(job, task), job, [])
    assert len(reports) == 1


def test_ctrl_c_stops_the_queue_and_the_same_command_carries_on(sweep_setup):
    """The GAN is interrupted (its record says so, as core.runner writes it, and its job leaves the stop
    file); the queued runs do not start; the command exits 130 without a report. The same command
    then runs what is left (the GAN again: it had no last.ckpt yet, its attempt kept beside it)."""
    cfg, job, reports = sweep_setup
    root = Path(cfg.reproduce.dir)

    def ctrl_c(d: Path) -> None:
        record(d, "interrupted")
        raise SystemExit(130)

    with pytest.raises(SystemExit) as e:
        run_reproduce(cfg, InProcessLauncher(job, ctrl_c), job, [])
    assert e.value.code == 130 and not reports and not job.stop.exists()
    assert not (root / "style" / "per_frame" / "results.json").exists()
    launcher = InProcessLauncher(job, lambda d: record(d, "completed"))
    run_reproduce(cfg, launcher, job, [])
    assert len(launcher.batches[0]) == 3 and (root / "gan" / "mnist.stale-1" / "results.json").is_file()
    assert len(reports) == 1


def test_a_job_keeps_its_console_in_stage_log_and_stops_the_queue_on_ctrl_c(tmp_path, capfd):
    stop = tmp_path / STOP
    out = tmp_path / "style" / "per_frame"
    out.mkdir(parents=True)
    cfg = OmegaConf.create({"paths": {"output_dir": str(out)}})

    def talks(c):
        os.write(2, b"a progress bar\n")
        subprocess.run(["echo", "a child process"], check=True)
        return {"ok": 1}

    assert ReproduceJob(talks, stop)(cfg) == {"ok": 1}
    assert (out / CONSOLE).read_text() == "a progress bar\na child process\n"
    seen = capfd.readouterr()
    assert "progress" not in seen.err and "child" not in seen.out

    def interrupted(c):
        raise SystemExit(130)  # what core.runner raises after writing the `interrupted` record

    assert ReproduceJob(interrupted, stop)(cfg) is None and stop.exists()
    called = []
    assert ReproduceJob(called.append, stop)(cfg) is None and not called  # queued after the Ctrl-C: not started
    stop.unlink()

    def exits(c):
        raise SystemExit(2)

    with pytest.raises(RuntimeError, match="per_frame exited with code 2"):  # a failed job; the sweep goes on
        ReproduceJob(exits, stop)(cfg)


def test_the_first_ctrl_c_stops_the_queue_the_second_the_command(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    job = ReproduceJob(None, tmp_path / STOP)
    with stop_on_ctrl_c(job):
        signal.raise_signal(signal.SIGINT)  # the launcher's runs got it too: this process waits for their records
        assert job.stop.exists()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    job.stop.unlink()
    job.running_here = True  # hydra/launcher=basic: the run in this process is interrupted as usual
    with pytest.raises(KeyboardInterrupt), stop_on_ctrl_c(job):
        signal.raise_signal(signal.SIGINT)
    assert job.stop.exists() and signal.getsignal(signal.SIGINT) is before


# ------------------------------------------------------------------------------------- the report
SCORE = ("km", "km_median", "r2_lat", "r2_lon", "r2")


def _fake_runs(root: Path) -> None:
    """Run folders as the experiments write them, with known numbers."""
    for prefix, seed, (m1, m2, km) in [
        ("study_seed", 0, (25, 81, 4182.0)),
        ("study_seed", 1, (19, 87, 3900.0)),
        ("code_seed", 0, (7, 90, 4300.0)),
    ]:
        d = root / "gom" / f"{prefix}{seed}"
        d.mkdir(parents=True, exist_ok=True)
        depth = 1 if prefix == "code_seed" else 5
        mlp_best = {"depth": depth, "width": 5, "lr": 0.9, "best_val_energy": 0.037, "best_epoch": 90}
        mlp_best.update(epochs_run=100, final_train_energy=0.04, test_energy=0.05, test_km=4554.0, test_r2=0.01)
        m = {
            "mlp_n": 175,
            "mlp_seconds": 1.0,
            "mlp_best": mlp_best,
            "autoencoder_n": 405,
            "autoencoder_seconds": 2.0,
            "grids_seconds": 3.0,
            "seconds": 4.0,
            "hybrid": {
                "M1": {
                    "ae_hidden": m1,
                    "ae_lr": 0.1,
                    "test/km": km,
                    "test/km_median": 3400.0,
                    "test/r2_lat": 0.07,
                    "test/r2_lon": 0.06,
                },
                "M2": {
                    "ae_hidden": m2,
                    "ae_lr": 0.1,
                    "test/km": km - 300,
                    "test/km_median": 3100.0,
                    "test/r2_lat": 0.0,
                    "test/r2_lon": 0.2,
                },
            },
            "baselines": {
                **{f"baseline_mean_{k}": v for k, v in zip(SCORE, (4588.0, 4000.0, -0.01, 0.02, 0.0))},
                **{f"baseline_knn_{k}": v for k, v in zip(SCORE, (3520.0, 3000.0, 0.1, 0.2, 0.15))},
                "baseline_knn_k": 5,
            },
            "figures": {},
        }
        for h in m["hybrid"].values():
            h.update({"test/r2": 0.05, "epochs_trained": 3, "best_ckpt": ""})
        (d / ".hydra").mkdir()
        (d / ".hydra" / "config.yaml").write_text("trainer: {max_epochs: 500}\ngrid: {epochs: 100}\n")
        (d / "results.json").write_text(json.dumps({"status": "completed", "metrics": m, "duration_s": 40.0}))
    d = root / "gom" / "cv_default_seed0"
    d.mkdir()
    cv = {
        "cv/km": 3061.4,
        "cv/km_median": 1814.0,
        "cv/baseline_rf_latlon_km": 3654.0,
        "cv/baseline_rf_unit_km": 3422.0,
        "cv/baseline_knn_km": 3618.0,
        "cv/baseline_mean_km": 4604.0,
        "cv/baseline_rf_latlon_km_median": 2000.0,
        "cv/baseline_rf_unit_km_median": 1900.0,
        "cv/baseline_knn_km_median": 2100.0,
        "cv/baseline_mean_km_median": 4000.0,
        "cv/forest_trees": 500,
        "zhou2014_rf_km": 3113.0,
        "cv/folds": [{"n_test": 530, "test/km": 3000.0}, {"n_test": 529, "test/km": 3100.0}],
    }
    (d / "results.json").write_text(json.dumps({"status": "completed", "metrics": cv}))
    d = root / "gom" / "cv_default_seed1"  # another fold assignment: the file's mean row averages both
    d.mkdir()
    folds1 = [{"n_test": 530, "test/km": 2900.0}, {"n_test": 529, "test/km": 3100.0}]
    cv1 = {**cv, "cv/km": 3001.4, "cv/baseline_rf_unit_km": 3382.0, "cv/folds": folds1}
    (d / "results.json").write_text(json.dumps({"status": "completed", "metrics": cv1}))
    # a failed run whose error names machine folders: the report shows them relative to DATA_DIR
    d = root / "gom" / "cv_chromatic_seed0"
    d.mkdir()
    data = "/srv/machine/data"
    (d / MARKER).write_text(json.dumps({"args": ["experiment=gom_cv", f"paths.data_dir={data}"]}))
    err = (
        f"GOM data not found in {data}/gom: missing default_plus_chromatic_features_1059_tracks.txt "
        f"(https://archive.ics.uci.edu/static/public/315/x.zip: timed out); also see /home/someone/notes/x.log"
    )
    (d / "results.json").write_text(json.dumps({"status": "failed", "error": err}))
    d = root / "digits" / "study"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"status": "completed", "metrics": {}}))
    (d / "study.json").write_text(
        json.dumps(
            {
                "seeds": [0, 1],
                "paper_setup": {
                    "10": {"train_acc": [0.66, 0.68], "val_acc": [0.5, 0.6], "test_acc": [0.5, 0.55]},
                    "50": {"train_acc": [0.99, 1.0], "val_acc": [0.6, 0.62], "test_acc": [0.64, 0.66]},
                },
                "zero_shot_test_acc": [0.95, 0.94],
                "transfer": {"transfer (pretrained + augmentation)": [0.984, 0.992]},
                "transfer_scores": {
                    "transfer (pretrained + augmentation)": {
                        "correct": 241,
                        "n": 244,
                        "ci95": [0.9644, 0.9958],
                        "ece": [0.02, 0.01],
                    }
                },
                "transfer_errors_seed0": [{"sheet": "cossio.png", "row": 3, "col": 4, "true": 7, "pred": 1}],
                "lowo_seeds": [0, 1],
                "lowo": {"cossio": {"paper": [0.5, 0.6], "mnist_only": [0.945], "transfer": [0.97, 0.98]}},
                "lowo_scores": {
                    "cossio": {
                        "transfer": {
                            "acc": [0.97, 0.98],
                            "correct": [301, 304],
                            "n": 310,
                            "ece": [0.03, 0.01],
                            "ci95": [0.9624, 0.9847],
                            "ensemble_acc": 0.981,
                            "ensemble_ece": 0.015,
                        }
                    }
                },
                "pages": {
                    "small ruled JPEG scans (18-24 px per cell)": {
                        "n": 1200,
                        "found": 1.0,
                        "page_acc": 0.985,
                        "clean_acc": 0.99,
                    }
                },
            }
        )
    )
    d = root / "gan" / "mnist"
    (d / "samples").mkdir(parents=True)
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text(
        "trainer: {max_epochs: 3}\ndata: {batch_size: 512}\ncallbacks: {gan_samples: {epochs: [1, 3]}}\n"
    )
    for e in (1, 3):
        Image.new("RGB", (20, 20), (e * 40, 0, 0)).save(d / "samples" / f"epoch_{e:04d}.png")
    (d / "resumed").mkdir()  # epochs 1-2 before a kill, epoch 3 after the resume
    (d / "resumed" / "metrics_000.csv").write_text("epoch,fid,gen/modes_covered,step\n0,900.5,1,10\n1,500.25,4,20\n")
    (d / "csv").mkdir()
    (d / "csv" / "metrics.csv").write_text("epoch,fid,gen/modes_covered,step\n2,300.0,7,30\n")
    (d / "results.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "metrics": {
                    "fid": 300.0,
                    "fid_floor": 0.82,
                    "fid_history": [[3, 300.0]],
                    "test/fid": 310.0,
                    "gen/modes_covered": 7,
                },
            }
        )
    )
    for name, ratio in (("per_frame", 3.089), ("temporal_blend", 2.095)):
        d = root / "style" / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(
            json.dumps(
                {"status": "completed", "metrics": {"frames": 554, "flicker_ratio": ratio, "flicker_input": 0.0121}}
            )
        )


def test_report_filled_from_the_runs_files(tmp_path):
    _fake_runs(tmp_path)
    md = write_report(tmp_path, quick=False, stages=["gom", "digits", "gan", "style"]).read_text()
    assert md.startswith("# Hybrid supervised learning") and "QUICK" not in md.splitlines()[0]
    m = {(r[0], r[1]): r for r in table(md, "### Best autoencoders")}
    assert m["M1* (hidden units)", "paper text"][2:4] == ["19", "25, 19"]
    assert m["M2* (hidden units)", "paper text"][2:4] == ["87", "81, 87"]
    # the authors' code setting beside the paper text, in every GOM table
    assert m["M1* (hidden units)", "authors' code"][2:4] == ["19", "7"]
    hy = {(r[0], r[1]): r for r in table(md, "### Hybrid")}
    assert first_number(hy["hybrid M1*", "paper text"][3]) == pytest.approx((4182 + 3900) / 2, abs=0.5)
    assert hy["hybrid M1*", "paper text"][4] == "4182, 3900" and hy["hybrid M1*", "authors' code"][4] == "4300"
    mlp = [r for r in table(md, "### Best MLP") if r[1] == "authors' code"]
    assert [r[2] for r in mlp] == ["1 x 5"]
    cv = table(md, "### What we add: 10-fold")
    assert cv[1][:3] == ["default", "0", "2"]
    assert [first_number(c) for c in cv[1][3:11]] == [3061, 71, 1814, 3654, 3422, 3618, 4604, 3113]
    assert cv[2][:2] == ["default", "1"] and first_number(cv[2][3]) == 3001
    # the file's mean ± std over its CV seeds, baselines included
    assert cv[3][:2] == ["**default, mean ± std**", "2 seeds"]
    assert cv[3][3] == f"**{(3061.4 + 3001.4) / 2:.0f} ± {statistics.stdev([3061.4, 3001.4]):.0f}**"
    assert cv[3][7] == f"{(3422 + 3382) / 2:.0f} ± {statistics.stdev([3422, 3382]):.0f}"
    # the failed chromatic row: the cause, with no machine folder in it (nor anywhere in the report)
    assert cv[0][:2] == ["chromatic", "0"] and cv[0][2].startswith("failed: GOM data not found in DATA_DIR/gom")
    assert "/srv/machine" not in md and "/home/someone" not in md
    runs = {r[1]: r for r in table(md, "| stage | run |")}
    assert "DATA_DIR/gom: missing default_plus_chromatic" in runs["cv_chromatic_seed0"][4]
    assert "https://archive.ics.uci.edu/static/public/315/x.zip" in runs["cv_chromatic_seed0"][4]
    assert "see x.log" in runs["cv_chromatic_seed0"][4]
    dg = {r[0]: r for r in table(md, "### Figs. 12-13")}
    assert dg["10"][1] == "0.645" and dg["10"][2] == "0.670 ± 0.014" and dg["50"][3] == "0.615"
    tr = {r[0]: r for r in table(md, "### What we add: transfer")}
    assert tr["transfer (pretrained + augmentation)"][2] == "0.984, 0.992"
    ci = {r[0]: r for r in table(md, "| model | digits right |")}
    assert ci["transfer (pretrained + augmentation)"][1:] == ["241/244 (0.988)", "[0.964, 0.996]", "0.015"]
    lowo = {r[0]: r for r in table(md, "| held-out writer | paper's LeNet |")}
    assert lowo["cossio"][1:] == ["0.550 ± 0.071", "0.945 (1 seed)", "0.975 ± 0.007"]
    lw = table(md, "| fine-tuned variant |")
    assert lw == [["transfer", "cossio", "0.975 ± 0.007", "[0.962, 0.985]", "0.020", "0.981 (0.015)"]]
    pg = table(md, "| pages | digits |")
    assert pg == [["small ruled JPEG scans (18-24 px per cell)", "1200", "1.000", "0.985", "0.990"]]
    gan = {r[0]: r[1] for r in table(md, "| metric | value |")}
    assert gan["LeNet-FID, best epoch"] == "300.00 (epoch 3)" and gan["epochs trained"] == "3"
    assert gan["real-vs-real floor"] == "0.82" and gan["test: best checkpoint vs test images"] == "310.00"
    assert gan["LeNet-FID, epoch 1"] == "900.50" and gan["digits covered (>= 2.5% of samples), last epoch"] == "7"
    assert (tmp_path / "figures" / "gan_epoch_001.png").is_file() and (
        tmp_path / "figures" / "gan_epoch_003.png"
    ).is_file()
    assert (tmp_path / "figures" / "gan_fid_curve.png").is_file()
    st = {r[0]: r for r in table(md, "| variant |")}
    assert first_number(st["per_frame"][2]) == 3.089 and first_number(st["temporal_blend"][2]) == 2.095
    assert "M1* = 25, 19 (seeds) vs the paper's 19" in md
    # the counts come from the runs: their metrics and their config
    assert "175 MLPs and 405 autoencoders per seed, 100 full-batch epochs each." in md
    assert write_report(tmp_path, quick=False, stages=["gom", "digits", "gan", "style"]).read_text() == md
    (tmp_path / "gom" / "study_seed0.stale-1").mkdir()  # moved aside: not a seed of the report
    quick = write_report(tmp_path, quick=True, stages=["gan"]).read_text()
    assert quick.splitlines()[0].startswith("# QUICK MODE") and "## 1. Geographical" in quick  # the folder's runs
    assert table(quick, "### Best autoencoders")[0][3] == "25, 19"
    empty = tmp_path / "empty"
    assert "Not run" in write_report(empty, quick=False, stages=["gom"]).read_text()


def _epoch_csv(path: Path, seconds: dict[int, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["epoch,step,time/epoch_s,train/loss"] + [f"{e},{e * 10 + 9},{s},0.5" for e, s in seconds.items()]
    path.write_text("\n".join([*rows, f"{max(seconds)},99,,0.4"]) + "\n")  # a step row without the epoch's time


def test_a_resumed_runs_wall_time_adds_its_earlier_attempts_epochs(tmp_path):
    run = tmp_path / "gan" / "mnist"
    # attempt 1 finished epochs 0-2 and was killed in epoch 3; attempt 2 was killed before its first
    # epoch (the reproduce stage copied the same file again); attempt 3 trained epochs 2-4 once more
    _epoch_csv(run / "resumed" / "metrics_000.csv", {0: 10.0, 1: 11.0, 2: 12.0})
    shutil.copy2(run / "resumed" / "metrics_000.csv", run / "resumed" / "metrics_001.csv")
    _epoch_csv(run / "csv" / "metrics.csv", {2: 13.0, 3: 14.0, 4: 15.0})
    assert wall_time(run, {"duration_s": 50.0}) == (50.0 + 10.0 + 11.0, 3)
    # the last attempt killed before its first epoch: csv/ still holds attempt 1's file, all of it counts
    _epoch_csv(run / "csv" / "metrics.csv", {0: 10.0, 1: 11.0, 2: 12.0})
    assert wall_time(run, {"duration_s": 4.0}) == (4.0 + 33.0, 3)
    # a run never resumed: its record; a run with no duration: none
    fresh = tmp_path / "gan" / "mnist_seed1"
    _epoch_csv(fresh / "csv" / "metrics.csv", {0: 10.0})
    assert wall_time(fresh, {"duration_s": 12.5}) == (12.5, 1) and wall_time(run, {"status": "running"}) == (None, 3)


def test_report_fails_on_a_renamed_result_key(tmp_path):
    """A key the GOM section reads, renamed in a run's results.json, names itself instead of "n/a"."""
    _fake_runs(tmp_path)
    f = tmp_path / "gom" / "study_seed1" / "results.json"
    r = json.loads(f.read_text())
    r["metrics"]["hybrid"]["M2"]["test/km_mean"] = r["metrics"]["hybrid"]["M2"].pop("test/km")
    f.write_text(json.dumps(r))
    with pytest.raises(ResultsError, match=r"gom/study_seed1: hybrid.M2: .* no `test/km`"):
        write_report(tmp_path, quick=False, stages=["gom"])
    f = tmp_path / "gom" / "cv_default_seed0" / "results.json"
    r = json.loads(f.read_text())
    r["metrics"]["n_folds"] = r["metrics"].pop("cv/folds")
    f.write_text(json.dumps(r))
    shutil.rmtree(tmp_path / "gom" / "study_seed1")
    with pytest.raises(ResultsError, match="gom/cv_default_seed0: .* no `cv/folds`"):
        write_report(tmp_path, quick=False, stages=["gom"])


def test_report_fails_on_a_renamed_study_field(tmp_path):
    """A field the digits section reads, renamed in study.json, names the file and itself instead of "n/a"."""
    _fake_runs(tmp_path)
    f = tmp_path / "digits" / "study" / "study.json"
    f.write_text(f.read_text().replace('"ensemble_acc"', '"ensemble_accuracy"'))
    with pytest.raises(DataError, match=r"digits/study/study.json: not a readable .*ensemble_accuracy"):
        write_report(tmp_path, quick=False, stages=["digits"])


def test_report_puts_the_modern_gan_beside_the_papers_step_for_step(tmp_path):
    _fake_runs(tmp_path)
    d = tmp_path / "gan_modern" / "mnist"
    (d / "csv").mkdir(parents=True)
    (d / "samples").mkdir()
    (d / ".hydra").mkdir()
    (d / ".hydra" / "config.yaml").write_text(
        "model: {loss: nonsaturating, g_lr: 0.0002, d_lr: 0.0002, b1: 0.5, b2: 0.999, d_steps: 1,\n"
        "        label_smoothing: 0.1, spectral_norm: true, ema_decay: 0.999}\n"
    )
    (d / "csv" / "metrics.csv").write_text(
        "epoch,fid,gen/modes_covered,step\n0,800.0,2,10\n1,200.0,9,20\n2,150.5,10,30\n3,120.0,10,40\n"
    )
    Image.new("RGB", (20, 20)).save(d / "samples" / "epoch_0004.png")
    (d / "results.json").write_text(
        json.dumps({"status": "completed", "metrics": {"fid_floor": 0.82, "test/fid": 140.0}})
    )
    md = write_report(tmp_path, quick=False, stages=["gan", "gan_modern"]).read_text()
    rows = table(md, "### Beyond the paper")
    by_epoch = {r[0]: r for r in rows}
    # the paper's run has epochs 1-3 (two CSV attempts), the modern one 1-4: compared on the common 1-3
    assert by_epoch["1"][1:] == ["900.50", "800.00", "1", "2"]
    assert by_epoch["3"][1:] == ["300.00", "150.50", "7", "10"]
    assert "4" not in by_epoch
    assert by_epoch["best"][1:3] == ["300.00 (epoch 3)", "150.50 (epoch 3)"]  # not epoch 4's 120: same steps
    assert by_epoch["test: best checkpoint vs test images"][1:3] == ["310.00", "140.00"]
    assert (
        "trained with the nonsaturating loss, Adam lr G 0.0002 / D 0.0002, betas (0.5, 0.999), 1 D step(s) per G step, "
        "one-sided label smoothing 0.1 (D's real targets 0.9), spectral norm in D, an EMA generator (decay 0.999): "
    ) in md
    assert (tmp_path / "figures" / "gan_modern_fid_curve.png").is_file()
    # a second training seed of both models: their test FIDs over seeds, beside the first seed's
    assert "over training seeds" not in md  # one seed each: no such row
    for stage, fid in (("gan", 330.0), ("gan_modern", 160.0)):
        seed1 = tmp_path / stage / "mnist_seed1"
        seed1.mkdir()
        (seed1 / "results.json").write_text(
            json.dumps({"status": "completed", "seed": 1, "metrics": {"test/fid": fid}})
        )
    md = write_report(tmp_path, quick=False, stages=["gan", "gan_modern"]).read_text()
    by_epoch = {r[0]: r for r in table(md, "### Beyond the paper")}
    assert by_epoch["test: mean ± std over training seeds"][1:3] == [
        "320.00 ± 14.14 (seeds 0, 1)",
        "150.00 ± 14.14 (seeds 0, 1)",
    ]
    assert "| test: mean ± std over training seeds | 320.00 ± 14.14 (seeds 0, 1) |" in md  # the paper's section too
    # without its run the section says how to run it
    shutil.rmtree(tmp_path / "gan_modern")
    assert "reproduce.stages=[gan_modern]" in write_report(tmp_path, quick=False, stages=["gan_modern"]).read_text()


# --------------------------------------------------------------------------- quick mode, end to end
# The style stage alone in seconds: 2 runs of 6 frames at 64 px (the launcher tests)
TINY_STYLE = [
    "reproduce.quick=true",
    "reproduce.stages=[style]",
    "reproduce.scale.quick.style.set.data.max_frames=6",
    "reproduce.scale.quick.style.set.data.max_side=64",
]


def reproduce_cli(root: Path, *args: str, timeout: float) -> tuple:
    """One `make reproduce` invocation into `root` (its runs, its reproduce.log, REPORT.md); the
    process (text output) and the log lines this invocation added to reproduce.log."""
    log = root / "reproduce.log"
    before = len(log.read_text().splitlines()) if log.exists() else 0
    p = train_cli(["experiment=reproduce", *args, f"reproduce.dir={root}"], timeout=timeout)
    lines = log.read_text().splitlines()[before:] if log.exists() else []
    return p, "\n".join(lines)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    """Every stage at TINY scale, the runs one after another in the command's process (hydra/launcher=basic)."""
    root = tmp_path_factory.mktemp("reproduce") / "quick"
    p, log = reproduce_cli(root, *TINY, "hydra/launcher=basic", timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, log


def results(root: Path, rel: str) -> dict:
    return json.loads((root / rel / "results.json").read_text())


def test_quick_tiny_end_to_end(tiny):
    root, log = tiny
    md = (root / "REPORT.md").read_text()
    assert md.splitlines()[0].startswith("# QUICK MODE")
    assert re.findall(r"reproduce: (\w+): \d+ completed \(", log) == ["gom", "digits", "gan", "style"]
    # the tables hold the runs' own numbers
    g = results(root, "gom/study_seed0")["metrics"]
    m = {(r[0], r[1]): r for r in table(md, "### Best autoencoders")}
    assert m["M1* (hidden units)", "paper text"][3] == str(g["hybrid"]["M1"]["ae_hidden"])
    c = results(root, "gom/code_seed0")["metrics"]
    assert m["M1* (hidden units)", "authors' code"][3] == str(c["hybrid"]["M1"]["ae_hidden"])
    hy = {(r[0], r[1]): r for r in table(md, "### Hybrid")}
    assert first_number(hy["hybrid M2*", "paper text"][3]) == pytest.approx(g["hybrid"]["M2"]["test/km"], abs=0.5)
    cv = results(root, "gom/cv_default_seed0")["metrics"]
    row = table(md, "### What we add: 10-fold")[0]
    assert row[:3] == ["default", "0", "2"]
    assert first_number(row[3]) == pytest.approx(cv["cv/km"], abs=0.5)
    assert first_number(row[7]) == pytest.approx(cv["cv/baseline_rf_unit_km"], abs=0.5)
    st = json.loads((root / "digits/study/study.json").read_text())
    dg = {r[0]: r for r in table(md, "### Figs. 12-13")}
    assert first_number(dg["2"][2]) == pytest.approx(st["paper_setup"]["2"]["train_acc"][0], abs=5e-4)
    gm = results(root, "gan/mnist")["metrics"]
    gan = {r[0]: r[1] for r in table(md, "| metric | value |")}
    assert first_number(gan["LeNet-FID, last epoch"]) == pytest.approx(gm["fid"], abs=5e-3)
    assert first_number(gan["real-vs-real floor"]) == pytest.approx(gm["fid_floor"], abs=5e-3)
    sty = {r[0]: r for r in table(md, "| variant |")}
    for v in ("per_frame", "temporal_blend"):
        assert first_number(sty[v][2]) == pytest.approx(
            results(root, f"style/{v}")["metrics"]["flicker_ratio"], abs=5e-4
        )
    figs = {f.name for f in (root / "figures").iterdir()}
    assert {
        "gan_epoch_001.png",
        "gan_epoch_002.png",
        "gan_training.gif",
        "gan_fid_curve.png",
        "digits_fig04_contact_sheet.png",
        "digits_fig12_13_curves.png",
        "style_video_frames.png",
    } <= figs
    assert all((root / "figures" / f).stat().st_size <= 2 * 2**20 for f in figs)
    assert not any(f.endswith(".mp4") for f in figs)


def test_second_run_skips_and_killed_runs_resume(tiny):
    root, _ = tiny
    md = (root / "REPORT.md").read_text()
    # 1. nothing left to do: every run skipped, the same report
    p, log = reproduce_cli(root, *TINY, "hydra/launcher=basic", timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "reproduce: 0 run(s) to do" in log and "reproduce: gan: 1 skipped" in log and "started" not in log
    assert (root / "REPORT.md").read_text() == md
    # 2. the GAN killed (interrupted record, last.ckpt kept) and a style run killed before its record
    gan = root / "gan" / "mnist"
    (gan / "results.json").write_text(json.dumps({"status": "interrupted"}))
    (root / "style" / "per_frame" / "results.json").unlink()
    shutil.copy2(gan / "csv" / "metrics.csv", gan / "metrics_before.csv")
    p, log = reproduce_cli(root, *TINY, "hydra/launcher=basic", timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "reproduce: 2 run(s) to do" in log and "gan/mnist (resumed)" in log and "gom/study" not in log
    r = results(root, "gan/mnist")
    assert r["status"] == "completed" and f"ckpt_path={gan / 'checkpoints' / 'last.ckpt'}" in r["overrides"]
    assert (gan / "resumed" / "metrics_000.csv").read_text() == (gan / "metrics_before.csv").read_text()
    assert results(root, "style/per_frame")["status"] == "completed"
    new = (root / "REPORT.md").read_text()
    # the same numbers; only the wall-time table may move
    assert new.split("## Runs")[0] == md.split("## Runs")[0]
    # its wall time: this attempt's, plus the first attempt's epochs (it trained none again)
    with open(gan / "metrics_before.csv", newline="") as fh:
        first = {r["epoch"]: float(r["time/epoch_s"]) for r in csv.DictReader(fh) if r.get("time/epoch_s")}
    assert len(first) == 2  # TINY trains 2 epochs
    runs = {(row[0], row[1]): row[3] for row in table(new, "| stage | run |")}
    assert runs["gan", "mnist"] == f"{r['duration_s'] + sum(first.values()):.0f} s (2 attempts)"


def test_submitit_local_runs_the_same_plan(tmp_path, data_dir):
    """hydra/launcher=submitit_local (what submitit_slurm does on a cluster): each run a submitit job in
    a process of its own, into the same folders, with the same report."""
    root = tmp_path / "quick"
    p, log = reproduce_cli(root, *TINY_STYLE, "hydra/launcher=submitit_local", timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "reproduce: style: 2 completed" in log
    plan = {r.name: r for r in make_plan(compose_cfg(["experiment=reproduce", *TINY_STYLE], tmp_path / "c"), False).all}
    sty = {r[0]: r for r in table((root / "REPORT.md").read_text(), "| variant |")}
    for v in ("per_frame", "temporal_blend"):
        r = results(root, f"style/{v}")
        assert r["status"] == "completed" and r["overrides"] == plan[v].args
        assert first_number(sty[v][2]) == pytest.approx(r["metrics"]["flicker_ratio"], abs=5e-4)
    assert len(list((root / ".submitit").glob("*/*_result.pkl"))) == 2  # the jobs went through submitit


def test_a_failed_run_fails_the_command_in_one_line(tmp_path, data_dir):
    """The default launcher (joblib, worker processes): one run fails, the other completes, the report
    is written, and the command ends with one line and exit code 2."""
    root = tmp_path / "quick"
    bad = "++reproduce.scale.quick.style.variants.temporal_blend.input=missing.mp4"
    p, log = reproduce_cli(root, *TINY_STYLE, bad, timeout=300)
    assert p.returncode == 2, p.stdout[-3000:] + p.stderr[-3000:]
    (err,) = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert err.startswith("error: reproduce: 1 run(s) failed: style/temporal_blend: input file missing.mp4 not found")
    assert "Joblib.Parallel(n_jobs=" in p.stdout
    assert results(root, "style/per_frame")["status"] == "completed" and (root / "REPORT.md").is_file()
    assert results(root, "style/temporal_blend")["status"] == "failed"


def test_the_launchers_settings_are_given_on_the_command_line(tmp_path, data_dir):
    """`hydra.launcher.n_jobs=1` (README: one run after another) sets the launcher that experiment=reproduce
    chose; each job is composed again with it, and its own experiment has no such launcher of its own."""
    root = tmp_path / "quick"
    p, log = reproduce_cli(root, *TINY_STYLE, "hydra.launcher.n_jobs=1", timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "with 1 at once" in log and "reproduce: style: 2 completed" in log
    assert "Joblib.Parallel(n_jobs=1," in p.stdout


def test_many_failures_are_one_short_line_naming_the_first_three():
    """Ten runs failing on one long cause (a wrong DATA_DIR) name the first three, each cut short."""
    failed = [f"gom/study_seed{i}: GOM data not found in /x/gom: " + "downloads failed; " * 40 for i in range(10)]
    line = failures_line(failed, Path("REPORT.md"))
    assert line.startswith("reproduce: 10 run(s) failed: gom/study_seed0: GOM data not found")
    assert "gom/study_seed2:" in line and "gom/study_seed3:" not in line and "(+7 more)" in line
    assert len(line) < 4 * MAX_SHOWN_CHARS and "\n" not in line and "the report has the rest (REPORT.md)" in line
    short = failures_line(["style/per_frame: input missing"], None)
    assert "failed: style/per_frame: input missing; the report" in short and "more)" not in short
    # the launcher stopped before the runs (a bad launcher override): its cause first, the runs counted once
    stopped = failures_line(["gan/mnist: not started"] * 3, None, "the launcher stopped: X: " + "y" * 400)
    assert stopped.startswith("reproduce: the launcher stopped: X: yyy") and "...; 3 run(s) failed:" in stopped
