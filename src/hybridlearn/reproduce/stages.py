"""The reproduce plan and the state of its runs.

Every run of a stage, planned by its experiment's `reproduce.py` (`registry`), is a `train.py` job
(`experiment=<name> ...`) in `<reproduce dir>/<stage>/<run>`, launched by Hydra's launcher
(`hybridlearn.reproduce.sweep`). A run's folder holds `reproduce_run.json` (the arguments it was
started with): a second invocation skips a run whose results.json says completed with the same
arguments, resumes an unfinished resumable one (the GAN) from `checkpoints/last.ckpt`, starts the
others again, and moves aside a folder whose run had other arguments or another composed config
(a changed YAML default; `<run>.stale-N`), so a changed setting never reuses an old result and a
folder is never written over. The marker keeps the run's settings too: a setting added to the code
since, left at its declared default, is no change (finished runs survive a new option).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hybridlearn.core.config import check_choice, conf_dir
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import write_json_atomic
from hybridlearn.core.reproduce import PlanContext, Run, override_value
from hybridlearn.core.runs import read_record, running_elsewhere
from hybridlearn.core.settings import declared_defaults, flat
from hybridlearn.reproduce.registry import registry

log = logging.getLogger(__name__)
MARKER = "reproduce_run.json"


@dataclass
class Plan:
    runs: dict[str, list[Run]] = field(default_factory=dict)  # stage -> its runs, in order

    @property
    def all(self) -> list[Run]:
        return [r for runs in self.runs.values() for r in runs]


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
def scale_key(cfg: DictConfig) -> str:
    """`reproduce.scale.<quick|paper>`: what each stage runs at the selected scale."""
    return f"reproduce.scale.{'quick' if cfg.reproduce.quick else 'paper'}"


def repeated(items: list[Any]) -> list[Any]:
    """The items given more than once, each once, in a stable order."""
    return sorted({x for x in items if items.count(x) > 1}, key=str)


def check_seeds(key: str, settings: DictConfig) -> None:
    """A stage's lists of seeds (`seeds`, `code_seeds`, `cv_seeds`, ...) name each seed once: a seed
    twice would train the same run twice (or two jobs into one folder)."""
    for name, v in (settings or {}).items():
        if str(name).endswith("seeds") and OmegaConf.is_list(v):
            seeds = list(v)
            if twice := repeated(seeds):
                raise ConfigError(
                    f"{key}.{name}={seeds}: seed {', '.join(map(str, twice))} given twice; list each seed once"
                )


def make_plan(cfg: DictConfig, check: bool = True) -> Plan:
    """The runs of every selected stage. With `check`, each run's overrides are composed first, so
    a typo fails in a second instead of after an hour."""
    rp = cfg.reproduce
    reg = registry(list(rp.modules))
    stages = list(rp.stages)
    for i, s in enumerate(stages):
        check_choice(f"reproduce.stages[{i}]", s, reg.stages)
    scale = scale_key(cfg)
    sc = OmegaConf.select(cfg, scale)
    common = [
        f"paths.data_dir={override_value(str(Path(cfg.paths.data_dir).resolve()))}",
        f"paths.cache_dir={override_value(str(Path(cfg.paths.cache_dir).expanduser().resolve()))}",
    ]
    plan = Plan()
    ctx = PlanContext(common, Path(cfg.paths.data_dir).resolve())
    for stage, module in reg.stage_modules.items():
        if stage not in stages:
            continue
        key = f"{scale}.{stage}"
        check_seeds(key, sc[stage])
        runs = module.plan(stage, sc[stage], ctx)
        if twice := repeated([r.rel for r in runs]):  # two jobs would write one folder at once
            raise ConfigError(f"{key}: plans {', '.join(twice)} more than once; list each value of its lists once")
        if check:
            for r in runs:
                composed = _compose(r.args)
                r.config = config_hash(composed)
                r.settings = flat(OmegaConf.to_container(composed, resolve=False))
                r.defaults = declared_defaults(composed)
        plan.runs[stage] = runs
    return plan


def changed_settings(marker: dict[str, Any], run: Run) -> list[str]:
    """The settings of a run's marker that the plan's config no longer has as they were: changed,
    removed, or added since with a value other than their declared default (a new option, left at
    its default, changes nothing the run did). A marker without its settings: everything is changed."""
    old, new = marker.get("settings"), run.settings
    if old is None or new is None:
        return ["(settings not recorded)"]
    defaults = run.defaults or {}
    changed = [k for k in old if k not in new or new[k] != old[k]]
    changed += [k for k in new if k not in old and (k not in defaults or defaults[k] != new[k])]
    return sorted(changed)


def config_hash(cfg: DictConfig) -> str:
    """What a run's settings are, beyond its args: the composed config (unresolved, so the same
    config hashes the same in every process and folder)."""
    return hashlib.sha256(OmegaConf.to_yaml(cfg).encode()).hexdigest()[:16]


def expected_seconds(plan: Plan, expected: dict[str, float]) -> dict[str, float]:
    """{stage/run: seconds}: a run's cost times its stage's expected seconds per cost unit."""
    return {r.rel: float(expected.get(stage, 0)) * r.cost for stage, runs in plan.runs.items() for r in runs}


def stage_seconds(plan: Plan, seconds: dict[str, float]) -> dict[str, float]:
    """{stage: its runs' expected seconds, summed}."""
    return {stage: sum(seconds[r.rel] for r in runs) for stage, runs in plan.runs.items()}


def longest_first(runs: list[Run], seconds: dict[str, float]) -> list[Run]:
    """The runs by expected time, longest first (the plan's order among equals): with n at once, the
    long runs start first and the short ones fill the gaps at the end."""
    return sorted(runs, key=lambda r: -seconds.get(r.rel, 0.0))


def makespan(seconds: list[float], n: int) -> float:
    """The wall time of these runs, in this order, on n workers that each take the next run when free."""
    free = [0.0] * max(n, 1)
    for s in seconds:
        i = free.index(min(free))
        free[i] += s
    return max(free)


# ----------------------------------------------------------------------------------------- state
def run_state(run_dir: Path, run: Run) -> str:
    """new | done | running (in another process) | resume | rerun | stale (started with other arguments)."""
    marker = run_dir / MARKER
    if not run_dir.exists():
        return "new"
    if not marker.exists():
        return "stale" if any(run_dir.iterdir()) else "new"
    m = json.loads(marker.read_text())
    if m.get("args") != run.args:
        return "stale"
    if run.config and m.get("config") and m["config"] != run.config and changed_settings(m, run):
        return "stale"  # a default changed under the same args
    record = read_record(run_dir)
    if record.get("status") == "completed":
        return "done"
    if running_elsewhere(record):
        return "running"  # another command's job (a second `make reproduce` on the same folder)
    if run.resumable and (run_dir / "checkpoints" / "last.ckpt").is_file():
        return "resume"
    return "rerun"


def stale_reason(run_dir: Path, run: Run) -> str:
    """What differs in a stale run, in words: other arguments, or the settings that changed."""
    try:
        m = json.loads((run_dir / MARKER).read_text())
    except (OSError, ValueError):
        return "no record of its settings"
    if m.get("args") != run.args:
        return "other arguments"
    keys = changed_settings(m, run)
    return f"other settings ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"


def _move_aside(run_dir: Path) -> Path:
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    run_dir.rename(aside)
    return aside


def prepare(run: Run, root: Path) -> str:
    """Make a run's folder ready for its job: done (skip it), resume (from its last.ckpt) or start.
    A folder of other settings, or of an attempt that did not finish, is moved aside, never written over."""
    run_dir = root / run.stage / run.name
    state = run_state(run_dir, run)
    if state == "done":
        return "done"
    if state == "running":
        pid = running_elsewhere(read_record(run_dir))
        log.info("reproduce: %s is running in another process (pid %s); left to it", run.rel, pid)
        return "running"
    if state == "stale":
        why = stale_reason(run_dir, run)
        log.info("reproduce: %s was run with %s; moved to %s", run.rel, why, _move_aside(run_dir).name)
    elif state == "rerun" and ((run_dir / "results.json").exists() or (run_dir / "checkpoints").is_dir()):
        log.info("reproduce: %s did not finish; moved to %s, starting again", run.rel, _move_aside(run_dir).name)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / MARKER, {"args": run.args, "config": run.config, "settings": run.settings})
    return "resume" if state == "resume" else "start"


def resume_args(run: Run, root: Path) -> list[str]:
    """The overrides that resume a run in its folder."""
    return [f"ckpt_path={override_value(str(root / run.stage / run.name / 'checkpoints' / 'last.ckpt'))}"]


def outcome(run: Run, root: Path) -> dict[str, Any]:
    """{status, seconds, error} of a launched run, from its results.json (`not started` without one)."""
    try:
        record = json.loads((root / run.stage / run.name / "results.json").read_text())
    except (OSError, ValueError):
        record = {}
    return {
        "status": record.get("status", "not started"),
        "seconds": float(record.get("duration_s") or 0.0),
        "error": record.get("error"),
    }
