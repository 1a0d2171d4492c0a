"""`make reproduce` as one Hydra sweep: the plan's runs are the jobs of the configured Hydra launcher.

experiment=reproduce selects the sweeper `reproduce` (hydra_plugins/hybridlearn_reproduce) and
`hydra.mode: MULTIRUN`, so `python train.py experiment=reproduce` needs no -m. The sweeper calls
`run_reproduce` with its launcher:

1. the plan (each run's overrides composed first) and each run's folder made ready: a finished run
   is skipped, an unfinished GAN resumes from its last.ckpt, a folder of other settings is moved aside;
2. the runs left, longest expected first, handed to the launcher as one batch of `train.py` jobs, each
   into `<reproduce dir>/<stage>/<run>` (hydra.sweep.dir / hydra.sweep.subdir): `hydra/launcher=reproduce`
   (joblib: 2 processes at once on >= 2 cores, each with cores // 2 torch threads, which joblib's loky
   backend sets), `basic` (one after another in this process), `submitit_local`, `submitit_slurm`;
3. each run's outcome from its results.json, REPORT.md, and RunsFailed when a run that is not optional
   failed.

Ctrl-C reaches every process of the terminal's group: the running runs write their `interrupted`
record (and the GAN its last.ckpt), no queued run starts (the stop file in the reproduce folder, which
each job reads first), and the same command carries on where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import TaskFunction
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.config import validate
from hybridlearn.core.errors import ConfigError, RunsFailed
from hybridlearn.core.reproduce import Run, override_value
from hybridlearn.reproduce.report import write_report
from hybridlearn.reproduce.stages import (
    expected_seconds,
    longest_first,
    make_plan,
    makespan,
    outcome,
    prepare,
    resume_args,
    stage_seconds,
)

log = logging.getLogger(__name__)
STOP = ".interrupted"  # in the reproduce folder while a Ctrl-C stops the sweep (stop_file)
CONSOLE = "stage.log"  # a run's console output, in its folder


def reproduce_dir(config: DictConfig) -> Path:
    rp = OmegaConf.select(config, "reproduce.dir", default=None)
    if not rp:
        raise ConfigError(
            "hydra/sweeper=reproduce runs the plan of experiment=reproduce: python train.py experiment=reproduce"
        )
    return Path(str(rp)).resolve()


def stop_file(config: DictConfig) -> Path:
    """This command's stop file, named by its process: a second `make reproduce` on the same folder (the
    runs the first is running left to it) neither sees the first's Ctrl-C nor clears it."""
    return reproduce_dir(config) / f"{STOP}-{os.getpid()}"


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[None]:
    """This process's stdout and stderr (the file descriptors, so progress bars and child processes
    too) appended to `path` meanwhile: two runs at once do not share the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


class ReproduceJob:
    """The task function the launcher runs for each run (in this process, a joblib worker or a SLURM
    job): train.py's, with the run's console in `<run>/stage.log`. A run stopped by Ctrl-C leaves the
    stop file, so the runs still queued do not start."""

    def __init__(self, task_function: TaskFunction, stop: Path) -> None:
        self.task_function = task_function
        self.stop = stop
        self.running_here = False  # a run is going on in this very process (hydra/launcher=basic)

    def __call__(self, cfg: DictConfig) -> Any:
        out = Path(cfg.paths.output_dir)
        name = f"{out.parent.name}/{out.name}"
        if self.stop.exists():  # Ctrl-C before it started: no record, it starts next time
            log.info("reproduce: %s not started (stopped)", name)
            return None
        log.info("reproduce: %s started (console: %s)", name, out / CONSOLE)
        t0 = time.time()
        self.running_here = True
        try:
            with console_to(out / CONSOLE):
                return self.task_function(cfg)
        except (KeyboardInterrupt, SystemExit) as e:
            if isinstance(e, KeyboardInterrupt) or e.code == 130:  # the run wrote its `interrupted` record
                self.stop.touch()
                return None
            raise RuntimeError(f"{name} exited with code {e.code}") from None  # a failed job; the sweep goes on
        finally:
            self.running_here = False
            log.info("reproduce: %s ended after %s", name, fmt_s(time.time() - t0))


@contextlib.contextmanager
def stop_on_ctrl_c(job: ReproduceJob) -> Iterator[None]:
    """While the launcher runs: the first Ctrl-C leaves the stop file (the running runs got the signal
    too and write their records), the second stops this process at once. A run in this very process
    (hydra/launcher=basic) is interrupted as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    presses = 0

    def on_ctrl_c(signum: int, frame: Any) -> None:
        nonlocal presses
        presses += 1
        job.stop.touch()
        if job.running_here or presses > 1:
            raise KeyboardInterrupt
        log.warning(
            "reproduce: Ctrl-C: no run starts any more, the running ones write their records "
            "(Ctrl-C again: stop at once); the same command carries on"
        )

    old = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """This module's lines also appended to `path` (the command's own log, beside REPORT.md)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s"))
    logger = logging.getLogger("hybridlearn.reproduce")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


MAX_SHOWN, MAX_SHOWN_CHARS = 3, 300  # failures named in the command's error line, and their length


def fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def job_overrides(run: Run, root: Path, resume: bool, launcher: Sequence[str] = ()) -> list[str]:
    """A run as a job: its train.py overrides, in its own folder `<root>/<stage>/<run>`; in MULTIRUN
    mode, so a failed run is recorded and the others go on (core.runner); `launcher` from
    `launcher_override`."""
    return [
        *run.args,
        *(resume_args(run, root) if resume else []),
        *launcher,
        "hydra.mode=MULTIRUN",
        f"hydra.sweep.dir={override_value(str(root))}",
        f"hydra.sweep.subdir={override_value(run.rel)}",
    ]


def launcher_override(config: DictConfig) -> list[str]:
    """`hydra/launcher=<choice>` for every job where experiment=reproduce, not the command line, chose the
    launcher: Hydra composes each job again with the command line's hydra overrides, so without it
    `hydra.launcher.n_jobs=1` fails in every job ("Could not override"), whose experiment has none."""
    choices = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    given = OverridesParser.create().parse_overrides(list(OmegaConf.select(config, "hydra.overrides.hydra") or []))
    if "hydra/launcher" not in choices or any(o.key_or_group == "hydra/launcher" for o in given):
        return []  # carried into the jobs by Hydra already (or no Hydra run: a composed config)
    return [f"hydra/launcher={choices['hydra/launcher']}"]


def check_arguments(arguments: Sequence[str]) -> None:
    """The command line configures one plan: a sweep (`a=1,2`) would only be ignored."""
    for o in OverridesParser.create().parse_overrides(list(arguments)):
        if o.is_sweep_override():
            raise ConfigError(
                f"{o.input_line}: experiment=reproduce runs one plan, not a sweep; give a list in brackets "
                "(reproduce.stages=[gan,style])"
            )


def parallel_runs(config: DictConfig) -> int | None:
    """How many runs the launcher runs at once, where its config says (joblib's n_jobs; negative: joblib's
    cores + 1 + n_jobs, not estimated here). A value joblib refuses is named before any run starts."""
    n = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n == 0):
        raise ConfigError(
            f"hydra.launcher.n_jobs={n}: the runs at once must be a whole number >= 1 (or -1: one per core)"
        )
    return n if isinstance(n, int) and n >= 1 else None


def run_reproduce(
    config: DictConfig, launcher: Launcher, job: ReproduceJob, arguments: Sequence[str]
) -> list[JobReturn]:
    """The sweep: plan, launch what is left, report (see the module's docstring)."""
    check_arguments(arguments)
    validate(config)
    n = parallel_runs(config)
    rp = config.reproduce
    root = reproduce_dir(config)
    plan = make_plan(config)
    expected = {s: float(v) for s, v in (rp.expected_quick_s if rp.quick else rp.expected_s).items()}
    seconds = expected_seconds(plan, expected)
    root.mkdir(parents=True, exist_ok=True)
    job.stop.unlink(missing_ok=True)
    with log_to(root / "reproduce.log"):
        states = {r.rel: prepare(r, root) for r in plan.all}
        todo = longest_first([r for r in plan.all if states[r.rel] not in ("done", "running")], seconds)
        wall = f", ~{fmt_s(makespan([seconds[r.rel] for r in todo], n))} with {n} at once" if n else ""
        busy = sum(st == "running" for st in states.values())
        log.info(
            "reproduce: %d run(s) to do, %d finished already%s; expected %s of runs%s; into %s",
            len(todo),
            sum(st == "done" for st in states.values()),
            f", {busy} running in another process" if busy else "",
            fmt_s(sum(seconds[r.rel] for r in todo)),
            wall,
            root,
        )
        for r in todo:
            log.info(
                "reproduce:   %s%s (~%s)",
                r.rel,
                " (resumed)" if states[r.rel] == "resume" else "",
                fmt_s(seconds[r.rel]),
            )
        carried = launcher_override(config)
        t0 = time.time()
        returns: list[JobReturn] = []
        stopped = None
        if todo:
            with stop_on_ctrl_c(job):
                try:
                    returns = list(
                        launcher.launch([job_overrides(r, root, states[r.rel] == "resume", carried) for r in todo], 0)
                    )
                except Exception as e:  # noqa: BLE001 - a worker killed (out of memory), a job lost: reported below
                    stopped = f"the launcher stopped: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
        interrupted = job.stop.exists()
        job.stop.unlink(missing_ok=True)
        outcomes = {r.rel: outcome(r, root) for r in todo}
        failed = _log_stages(plan.runs, states, outcomes, time.time() - t0)
        if interrupted:
            print(
                "interrupted; run the same command again: finished runs are kept, the GAN resumes from its last.ckpt",
                file=sys.stderr,
            )
            raise SystemExit(130)
        report = write_report(
            root,
            quick=bool(rp.quick),
            stages=list(plan.runs),
            expected=stage_seconds(plan, seconds),
            gif_max_mb=float(rp.gif_max_mb),
            video_frames_n=int(rp.video_frames),
            modules=list(rp.modules),
        )
        log.info("reproduce: report %s", report)
    if stopped or failed:
        raise RunsFailed(failures_line(failed, report, stopped))
    return returns


def failures_line(failed: list[str], report: Path | None, stopped: str | None = None) -> str:
    """The command's one error line: why the launcher stopped (if it did), then the first few failed
    runs, each cut short (often one cause repeated)."""

    def short(text: str) -> str:
        return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."

    shown = [short(f) for f in failed[:MAX_SHOWN]]
    more = f" (+{len(failed) - MAX_SHOWN} more)" if len(failed) > MAX_SHOWN else ""
    cause = f"{short(stopped)}; " if stopped else ""
    return (
        f"reproduce: {cause}{len(failed)} run(s) failed: {'; '.join(shown)}{more}; the report has the rest "
        f"({report}); fix and run the same command again (finished runs are kept)"
    )


def _log_stages(
    runs: dict[str, list[Run]], states: dict[str, str], outcomes: dict[str, dict[str, Any]], wall: float
) -> list[str]:
    """One line per stage (its runs' states and time), a line per failed run; returns the failures
    that fail the command (`stage/run: error`), the optional runs' only logged."""
    fatal = []
    for stage, stage_runs in runs.items():
        left = {"done": "skipped", "running": "running in another process"}
        said = [left.get(states[r.rel]) or outcomes[r.rel]["status"] for r in stage_runs]
        took = sum(outcomes[r.rel]["seconds"] for r in stage_runs if r.rel in outcomes)
        counts = ", ".join(f"{said.count(s)} {s}" for s in dict.fromkeys(said))
        log.info("reproduce: %s: %s (%s of runs)", stage, counts, fmt_s(took))
        for r in stage_runs:
            o = outcomes.get(r.rel)
            if o is None or o["status"] == "completed":
                continue
            line = f"{r.rel}: {o['error'] or o['status']}"
            log.log(logging.WARNING if r.optional else logging.ERROR, "reproduce: %s", line)
            if not r.optional:
                fatal.append(line)
    log.info("reproduce: %d run(s) in %s", len(outcomes), fmt_s(wall))
    return fatal
