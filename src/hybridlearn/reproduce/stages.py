"""The reproduce plan and its resumable runner (`python train.py experiment=reproduce`).

Every run of a stage, planned by its experiment's `reproduce.py` (`registry`), is a subprocess
`train.py experiment=<name> ... hydra.run.dir=<dir>/<stage>/<run>` (or a module CLI): no experiment
is trained in this process. A run's folder holds
`reproduce_run.json` (the arguments it was started with): a second invocation skips a run whose
results.json says completed with the same arguments, resumes an unfinished resumable one (the GAN)
from `checkpoints/last.ckpt`, starts the others again, and moves aside a folder whose run had
other arguments or another composed config (a changed YAML default; `<run>.stale-N`), so a changed
setting never reuses an old result.

`reproduce.jobs` > 1 runs the stages in that many lanes at once (the longest expected stages
spread first, each lane's stages one after another, the runs of a stage in order), each run with
OMP_NUM_THREADS = cores / jobs: on 2 CPU cores the GAN's one long run beside the GOM stage's many
small ones, which a second thread barely speeds up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hybridlearn.core.config import check_choice, check_int, conf_dir
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import write_json_atomic
from hybridlearn.core.reproduce import PlanContext, Run, override_value
from hybridlearn.reproduce.registry import registry
from hybridlearn.reproduce.report import write_report

if TYPE_CHECKING:  # the stages run as subprocesses: this process trains nothing
    from hybridlearn.core.trainer import TrainerFactory

log = logging.getLogger(__name__)
MARKER = "reproduce_run.json"


@dataclass
class Plan:
    runs: dict[str, list[Run]] = field(default_factory=dict)  # stage -> its runs, in order


def _compose(overrides: list[str]) -> DictConfig:
    """The composed config of `train.py <overrides>`: checks every planned run's keys up front."""
    try:
        if GlobalHydra.instance().is_initialized():
            return compose("train", overrides=overrides)
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            return compose("train", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:  # bad override, unknown key
        raise ConfigError(
            f"reproduce: `train.py {' '.join(overrides)}` does not compose: "
            f"{str(e).splitlines()[0]}; fix reproduce.scale"
        ) from None


# ------------------------------------------------------------------------------------------ plan
def scale_settings(cfg: DictConfig) -> DictConfig:
    rp = cfg.reproduce
    return rp.scale.quick if rp.quick else rp.scale.paper


def make_plan(cfg: DictConfig, check: bool = True) -> Plan:
    """The runs of every selected stage. With `check`, each train run's overrides are composed
    first, so a typo fails in a second instead of after an hour."""
    rp = cfg.reproduce
    reg = registry(list(rp.modules))
    stages = list(rp.stages)
    for i, s in enumerate(stages):
        check_choice(f"reproduce.stages[{i}]", s, reg.stages)
    sc = scale_settings(cfg)
    common = [
        f"paths.data_dir={override_value(str(Path(cfg.paths.data_dir).resolve()))}",
        f"paths.cache_dir={override_value(str(Path(cfg.paths.cache_dir).expanduser().resolve()))}",
    ]
    plan = Plan()
    ctx = PlanContext(common, Path(cfg.paths.data_dir).resolve())
    for stage, module in reg.stage_modules.items():
        if stage not in stages:
            continue
        runs = module.plan(stage, sc[stage], ctx)
        if check:
            for r in runs:
                if r.kind == "train":
                    r.config = config_hash(_compose(r.args))
        plan.runs[stage] = runs
    return plan


def config_hash(cfg: DictConfig) -> str:
    """What a run's settings are, beyond its args: the composed config (unresolved, so the same
    config hashes the same in every process and folder)."""
    return hashlib.sha256(OmegaConf.to_yaml(cfg).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- state
def run_state(run_dir: Path, run: Run) -> str:
    """new | done | resume | rerun | stale (started with other arguments)."""
    marker = run_dir / MARKER
    if not run_dir.exists():
        return "new"
    if not marker.exists():
        return "stale" if any(run_dir.iterdir()) else "new"
    m = json.loads(marker.read_text())
    if m.get("args") != run.args:
        return "stale"
    if run.config and m.get("config") and m["config"] != run.config:  # a YAML default changed under the args
        return "stale"
    res = run_dir / "results.json"
    if res.exists() and json.loads(res.read_text()).get("status") == "completed":
        return "done"
    if run.resumable and (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "resume"
    return "rerun"


def _move_aside(run_dir: Path) -> Path:
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    run_dir.rename(aside)
    return aside


def _command(run: Run, run_dir: Path, python: str, resume: bool) -> list[str]:
    if run.kind == "module":
        args = list(run.args)
        for flag in run.run_dir_args:  # the file it writes lives in the run folder
            i = args.index(flag) + 1
            args[i] = str(run_dir / args[i])
        return [python, "-m", *args]
    train_py = conf_dir().parent / "train.py"
    head = [python, str(train_py)] if train_py.is_file() else [str(Path(python).parent / "hybridlearn-train")]
    extra = [f"ckpt_path={override_value(str(run_dir / 'checkpoints' / 'last.ckpt'))}"] if resume else []
    return [*head, *run.args, *extra, f"hydra.run.dir={override_value(str(run_dir))}"]


def _keep_epochs(run_dir: Path) -> None:
    """Before a resume: the CSV logger starts a new metrics.csv, so the earlier epochs are kept for
    the report as resumed/metrics_<n>.csv."""
    csv = run_dir / "csv" / "metrics.csv"
    if csv.is_file():
        hist = run_dir / "resumed"
        hist.mkdir(exist_ok=True)
        shutil.copy2(csv, hist / f"metrics_{len(list(hist.glob('metrics_*.csv'))):03d}.csv")


def execute(run: Run, root: Path, python: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Bring one run to `done` (skip, resume or start it). Returns {state, seconds, ok, error}.
    `env`: variables added to the run's environment (its thread count)."""
    run_dir = root / run.stage / run.name
    state = run_state(run_dir, run)
    if state == "done":
        return {"state": "skipped", "seconds": 0.0, "ok": True}
    if state == "stale":
        log.info(
            "reproduce: %s was run with other settings; moved to %s",
            run.rel,
            _move_aside(run_dir).name,
        )
    elif state == "rerun" and ((run_dir / "results.json").exists() or (run_dir / "checkpoints").is_dir()):
        # a run folder is never written over: the unfinished attempt is kept beside the new one
        log.info("reproduce: %s did not finish; moved to %s, starting again", run.rel, _move_aside(run_dir).name)
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = state == "resume"
    if resume:
        _keep_epochs(run_dir)
    write_json_atomic(run_dir / MARKER, {"args": run.args, "kind": run.kind, "config": run.config})
    cmd = _command(run, run_dir, python, resume)
    log.info(
        "reproduce: %s %s (log: %s)",
        "resuming" if resume else "running",
        run.rel,
        run_dir / "stage.log",
    )
    rc, seconds = _launch(cmd, run_dir / "stage.log", env)
    return _outcome(run, run_dir, cmd, rc, seconds, resume)


_LIVE: set[subprocess.Popen] = set()  # the runs started and not yet finished (of every lane)
_LIVE_LOCK = threading.Lock()


def _launch(cmd: list[str], log_file: Path, env: dict[str, str] | None = None) -> tuple[int, float]:
    """Run one stage's command with its output appended to `log_file`; (exit code, seconds)."""
    t0 = time.time()
    with open(log_file, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=os.getcwd(),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the run too: let it write its record and checkpoint
            _wait_live(60)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    return rc, time.time() - t0


def _wait_live(timeout: float) -> None:
    """After Ctrl-C (which every run in the process group got too): give the live runs `timeout`
    seconds to write their records and checkpoints, then kill what is left."""
    deadline = time.time() + timeout
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        try:
            proc.wait(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _outcome(run: Run, run_dir: Path, cmd: list[str], rc: int, seconds: float, resume: bool) -> dict[str, Any]:
    """{state, seconds, ok, error} of a finished command, from its exit code and its results.json."""
    if run.kind == "module" and rc == 0:  # module CLIs write no results.json of their own
        write_json_atomic(
            run_dir / "results.json",
            {
                "status": "completed",
                "duration_s": round(seconds, 3),
                "command": cmd[1:],
            },
        )
    res = run_dir / "results.json"
    record = json.loads(res.read_text()) if res.exists() else {}
    if rc == 0 and record.get("status") == "completed":
        return {"state": "resumed" if resume else "ran", "seconds": seconds, "ok": True}
    error = record.get("error")
    tail = (run_dir / "stage.log").read_text().strip().splitlines()[-1:] or [""]
    return {
        "state": "failed",
        "seconds": seconds,
        "ok": False,
        "error": error or f"exit code {rc}: {tail[0]}",
    }


# ---------------------------------------------------------------------------------------- entry
def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _log_stage(
    i: int, stages: list[str], fatal: bool, took: float, states: list[str], elapsed: float, left: float, rest: list[str]
):
    """One line per stage: how it went, the time so far and the time still expected (rest: the
    stages not finished yet)."""
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)) or "no runs"
    log.info(
        "reproduce: stage %d/%d %s %s in %s (%s); elapsed %s; left ~%s%s",
        i + 1,
        len(stages),
        stages[i],
        "FAILED" if fatal else "done",
        _fmt_s(took),
        counts,
        _fmt_s(elapsed),
        _fmt_s(left),
        f" ({', '.join(rest)})" if rest else "",
    )


def resolve_jobs(jobs: Any, n_stages: int) -> int:
    """reproduce.jobs: a positive int, or auto (2 lanes on a machine with 2 or more cores)."""
    if jobs in (None, "auto"):
        jobs = 2 if (os.cpu_count() or 1) >= 2 else 1
    else:
        jobs = check_int("reproduce.jobs (or auto)", jobs, 1, 1024)
    return max(1, min(jobs, n_stages))


def lanes_for(stages: list[str], expected: dict[str, float], jobs: int) -> list[list[str]]:
    """The stages spread over `jobs` lanes, longest expected first, each to the lane with the least
    expected time so far (LPT); each lane keeps the stages in report order."""
    lanes: list[list[str]] = [[] for _ in range(jobs)]
    load = [0.0] * jobs
    for s in sorted(stages, key=lambda s: -float(expected.get(s, 0))):
        i = load.index(min(load))
        lanes[i].append(s)
        load[i] += float(expected.get(s, 0))
    return [sorted(lane, key=stages.index) for lane in lanes if lane]


def run_reproduce(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry `hybridlearn.reproduce.stages:run_reproduce`: run the selected stages, write REPORT.md."""
    rp = cfg.reproduce
    root = Path(rp.dir).resolve()
    jobs = resolve_jobs(rp.get("jobs", 1), len(rp.stages))
    plan = make_plan(cfg)
    python = str(rp.get("python") or sys.executable)
    expected = dict(rp.expected_quick_s if rp.quick else rp.expected_s)
    stages = list(plan.runs)
    lanes = lanes_for(stages, expected, jobs)
    env = {}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # a user's own setting wins
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    if jobs > 1:
        log.info(
            "reproduce: %d lanes at once (%s), %s torch thread(s) per run",
            jobs,
            "; ".join(" then ".join(lane) for lane in lanes),
            env.get("OMP_NUM_THREADS") or os.environ["OMP_NUM_THREADS"],
        )
    t_start = time.time()
    measured = predicted = 0.0  # seconds run / expected for the stages that ran: the machine's speed
    summary: dict[str, Any] = {}
    failed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def finish_stage(stage: str, outcomes: dict[str, dict], took: float) -> None:
        nonlocal measured, predicted
        states = [o["state"] for o in outcomes.values()]
        optional = {r.name for r in plan.runs[stage] if r.optional}
        bad = [f"{n}: {o['error']}" for n, o in outcomes.items() if not o["ok"]]
        fatal = [f"{stage}/{n}: {o['error']}" for n, o in outcomes.items() if not o["ok"] and n not in optional]
        with lock:
            failed.extend(fatal)
            if any(s != "skipped" for s in states) and not fatal:  # the stage's time says how fast this machine is
                measured += took
                predicted += float(expected.get(stage, 0)) * sum(s != "skipped" for s in states) / max(len(states), 1)
            speed = min(max(measured / predicted, 0.25), 4.0) if predicted > 0 else 1.0
            finished = set(summary) | {stage}
            left = speed * max(sum(float(expected.get(s, 0)) for s in lane if s not in finished) for lane in lanes)
            rest = [s for s in stages if s not in finished]
            _log_stage(stages.index(stage), stages, bool(fatal), took, states, time.time() - t_start, left, rest)
            for b in bad:
                level = logging.WARNING if b.split(":", 1)[0] in optional else logging.ERROR
                log.log(level, "reproduce: %s/%s", stage, b)
            summary[stage] = {n: {k: v for k, v in o.items() if k != "ok"} for n, o in outcomes.items()}

    def run_lane(lane: list[str]) -> None:
        for stage in lane:
            t0 = time.time()
            outcomes = {}
            for r in plan.runs[stage]:
                if stop.is_set():
                    return
                outcomes[r.name] = execute(r, root, python, env)
            finish_stage(stage, outcomes, time.time() - t0)

    _run_lanes(lanes, run_lane, stop)
    report = write_report(
        root,
        quick=bool(rp.quick),
        stages=stages,
        expected={s: float(v) for s, v in expected.items()},
        gif_max_mb=float(rp.gif_max_mb),
        video_frames_n=int(rp.video_frames),
        modules=list(rp.modules),
    )
    log.info("reproduce: report %s", report)
    if failed:
        raise ConfigError(
            f"reproduce: {len(failed)} run(s) failed: {'; '.join(failed)}; the report has the rest "
            f"({report}); fix and run the same command again (finished runs are kept)"
        )
    return {
        "report": str(report),
        "stages": {s: summary[s] for s in stages if s in summary},
        "quick": bool(rp.quick),
        "jobs": jobs,
        "seconds": round(time.time() - t_start, 3),
    }


def _run_lanes(lanes: list[list[str]], run_lane, stop: threading.Event) -> None:
    """One lane: in this thread. Several: one thread each; Ctrl-C (which the runs get too) stops
    every lane before its next run and waits for the runs to write their records."""
    if len(lanes) == 1:
        run_lane(lanes[0])
        return
    errors: list[BaseException] = []

    def guarded(lane: list[str]) -> None:
        try:
            run_lane(lane)
        except BaseException as e:  # noqa: BLE001 - raised in the main thread
            errors.append(e)
            stop.set()

    threads = [
        threading.Thread(target=guarded, args=(lane,), name=f"reproduce-lane{i}") for i, lane in enumerate(lanes)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        _wait_live(60)
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]
