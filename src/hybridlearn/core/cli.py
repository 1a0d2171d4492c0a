"""The command line behind `python train.py` / `hybridlearn-train`: Hydra composes and checks the
config, and only then is the heavy run flow (torch, Lightning: `core.runner`) imported.

So a typo, an unknown experiment, `--help` or `--cfg job` answers in about a second, and every
check that needs no model (core.config.validate, core.runs.RunGuard) runs before torch is loaded.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib
import itertools
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hybridlearn.core.conf import register_core
from hybridlearn.core.config import conf_dir
from hybridlearn.core.errors import ConfigError, RunsFailed, one_line_errors
from hybridlearn.core.multirun import job_records, summarize
from hybridlearn.core.results import to_number
from hybridlearn.core.settings import group_options, load_settings

# The run flow, loaded by name once the config is known to be good (it imports torch and Lightning).
RUNNER = "hybridlearn.core.runner:run"


@functools.cache
def run_suffix() -> str:
    """Milliseconds and process id, fixed for the command: with the time to the second in the run
    folder's name, two runs started together never share a folder."""
    return f"{int(time.time() * 1000) % 1000:03d}-{os.getpid()}"


def overrides() -> list[str]:
    """The overrides typed on the command line ([] when composed by the API, as in tests)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def run_label(task_name: str) -> str:
    """A readable, unique run name for trackers (W&B): task, start time, and the overrides typed."""
    skip = ("experiment=", "logger=", "hydra", "paths.")
    extra = [o for o in overrides() if not o.lstrip("+~").startswith(skip)]
    label = f"{task_name}_{time.strftime('%m%d-%H%M%S')}_{run_suffix().split('-', 1)[0]}"
    return label + (f" {' '.join(extra)}" if extra else "")


OmegaConf.register_new_resolver("run_suffix", run_suffix, replace=True)
OmegaConf.register_new_resolver("run_label", run_label, use_cache=True, replace=True)
OmegaConf.register_new_resolver("if", lambda cond, yes, no: yes if cond else no, replace=True)  # ${if:${flag},a,b}


class ArgumentParser(argparse.ArgumentParser):
    """argparse for our module commands (predict.py, generate.py): a bad argument is one line,
    `error: <what>; see --help`, exit 2, instead of the usage block before it."""

    def error(self, message: str):
        raise ConfigError(f"{message}; see {self.prog} --help")


def load_entry(spec: str) -> Callable[..., Any]:
    """The function named by 'package.module:function' (the `entry:` key, the runner)."""
    module, _, fn = spec.partition(":")
    if not fn:
        raise ConfigError(f"entry must look like 'package.module:function' (got {spec!r})")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"entry {spec!r} cannot be loaded: {e}") from e


# The sweep folder of the last job this process ran: a sweeper's own error after its jobs names it.
_sweep_dirs: dict[str, Path] = {}


def objective(cfg: DictConfig) -> float | None:
    """The Hydra task function: run the job; return `optimized_metric` for sweepers (Optuna)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        _sweep_dirs["last"] = Path(HydraConfig.get().sweep.dir)
    metrics = load_entry(RUNNER)(cfg)
    key = cfg.get("optimized_metric")
    if not key:
        return None
    value = to_number(metrics.get(key)) if metrics else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None  # a failed trial: the sweeper records it as failed and the search goes on
    return float(value)


# ---------------------------------------------------------------------------------------- argv
_GROUP_ARG = re.compile(r"^\+?(?P<group>[a-z_]+(?:/[a-z_]+)*)=(?P<value>[^=]*)$")
MULTIRUN_FLAGS = ("-m", "--multirun")


def _bare_word(arg: str) -> bool:
    """Neither an override (`key=value`, `~key`) nor a flag."""
    return "=" not in arg and not arg.startswith(("-", "~"))


def search_dirs(args: list[str], conf: Path) -> list[Path]:
    """conf/ and the folders a `hydra.searchpath=[file://...]` override adds (a user's own experiments)."""
    dirs = [conf]
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            dirs += [Path(p.strip(" '\"")[len("file://") :]) for p in value.strip("[]").split(",") if "file://" in p]
    return dirs


def known_options(group: str, dirs: list[Path]) -> list[str]:
    """The options of a config group: YAML files in the config folders and settings in the ConfigStore."""
    files = [p.stem for d in dirs if (d / group).is_dir() for p in (d / group).glob("*.yaml")]
    return sorted(set(files) | set(group_options(group)))


def check_argv(args: list[str], conf: Path) -> None:
    """One line for what Hydra would answer with a page: an unknown option of a config group
    (`experiment=gan_mnst`, with the closest names), an unquoted value with spaces or accents, and
    `-m` after the overrides."""
    dirs = search_dirs(args, conf)
    for i, arg in enumerate(args):
        if arg in MULTIRUN_FLAGS and any("=" in a and not a.startswith("-") for a in args[:i]):
            rest = " ".join(args[:i] + args[i + 1 :])
            raise ConfigError(f"{arg} must come before the overrides: python train.py {arg} {rest}")
    for i, arg in enumerate(args):
        prev = args[i - 1] if i else ""
        if _bare_word(arg) and "=" in prev and not prev.startswith("-"):
            # the shell split `output=my out.mp4` into words (a word after a -flag is the flag's value)
            words = [prev, *itertools.takewhile(_bare_word, args[i:])]
            key, _, value = " ".join(words).partition("=")
            raise ConfigError(
                f"{arg!r} is not key=value: a value with spaces needs quotes for the shell and for Hydra: "
                f"\"{key}='{value}'\""
            )
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        if value[:1] not in ("'", '"') and (any(c.isspace() for c in value) or not value.isascii()):
            raise ConfigError(
                f"the value of {key} has spaces or non-ASCII letters; quote it for Hydra: {key}='{value}'"
            )
        m = _GROUP_ARG.match(arg)
        if not m or m["group"].startswith("hydra/"):
            continue  # Hydra's own groups (launchers, sweepers) are Hydra's plugins: Hydra names their options
        known = known_options(m["group"], dirs)
        if not known:
            continue  # a key, not a group
        names = m["value"].strip("[]").split(",")
        for name in names:
            if name not in known and name != "null":
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
                hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(known)}"
                raise ConfigError(f"unknown {m['group']} {name!r}; {hint}")


HELP = """usage: {prog} [-m] [group=option ...] [key=value ...]

A run is conf/train.yaml with the config groups' options below, then any key set on the command
line (model.lr=0.01). A bad key or value is refused in one line before anything runs.

  {prog} experiment=lenet_mnist                      # train, then test the best checkpoint
  {prog} -m experiment=lenet_mnist seed=0,1,2        # a multirun: one job per value, seeds.md
  {prog} experiment=lenet_mnist --cfg job            # the composed config (every setting), nothing run

Config groups (group=option):
{groups}
Every setting's type, range and help: src/hybridlearn/<package>/conf.py. Hydra's own flags:
--hydra-help (--cfg, --resolve, --multirun, --info, ...)."""


def app_help(prog: str, dirs: list[Path], preset: list[str]) -> str:
    """`--help`: the groups and their options, read from the config folders and the ConfigStore. Hydra's
    own --help composes a config repository per group (seconds with this many settings)."""
    groups = {p.name for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir()}
    groups |= {g for g, node in ConfigStore.instance().repo.items() if isinstance(node, dict)}
    lines = [f"  {g}: {', '.join(known_options(g, dirs))}" for g in sorted(groups - {"hydra"})]
    text = HELP.format(prog=prog, groups="\n".join(ln for ln in lines if not ln.endswith(": ")))
    return text + (f"\n{prog} sets {' '.join(preset)} unless the command line does." if preset else "")


@one_line_errors
def hydra_main(preset: list[str] | None = None) -> None:
    """Run the Hydra app on sys.argv; `preset` are overrides put first unless the user gives them.
    Returns the exit code: None, or 2 after a one-line error (errors inside the run exit there)."""
    for p in preset or []:
        key = p.split("=", 1)[0]
        if not any(a.split("=", 1)[0].lstrip("+~") == key for a in sys.argv[1:]):
            sys.argv.insert(1, p)
    run_suffix.cache_clear()  # a new command: its own run folder suffix (tests run several in one process)
    register_core()
    load_settings()
    conf = conf_dir()
    check_argv(sys.argv[1:], conf)
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(app_help(Path(sys.argv[0]).name, search_dirs(sys.argv[1:], conf), preset or []))
        return None
    # Hydra's own errors (an unknown key, a bad override) reach us instead of its multi-line report
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra.main(version_base="1.3", config_path=str(conf), config_name="train")(objective)()
    except (HydraException, OmegaConfBaseException) as e:
        if user_full_error:
            raise
        raise ConfigError(one_line(e)) from None
    except (AssertionError, AttributeError, KeyError, TypeError, ValueError) as e:
        # OmegaConf can fail inside Hydra's composition with a plain exception (a mapping typed on the
        # command line for a setting that is null by default): the run never started, so it is the
        # overrides', one line; an exception from the run itself keeps its traceback (a bug)
        if user_full_error or _inside_task(e):
            raise
        if (failed := _sweep_without_result(e)) is not None:
            raise failed from None
        raise ConfigError(
            f"the overrides could not be composed ({type(e).__name__}: {(str(e).splitlines() or [''])[0]}); set a null setting's keys "
            "through its config group (e.g. +model/tta=rotations) or check the override's form"
        ) from None
    finally:
        if not user_full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def _sweep_without_result(e: BaseException) -> RunsFailed | None:
    """A sweeper's error after its jobs ran and every one failed (Optuna's sweeper asks its study for
    the best trial, and raises): the jobs' table is written and the error names the first job's
    error, instead of a composition error. None when the exception did not come from such a sweep."""
    sweep_dir = _sweep_dirs.pop("last", None)
    if sweep_dir is None or not any(f.name == "sweep" for f in traceback.extract_tb(e.__traceback__)):
        return None
    records = job_records(sweep_dir) if sweep_dir.is_dir() else []
    if not records:
        return None
    if any(r.get("status") == "completed" for r in records):
        return None  # a job ran: the error is another one's (its composition)
    rows, _, md_path = summarize(sweep_dir, records)
    first = rows[0].get("error", rows[0]["status"])
    return RunsFailed(
        f"the sweep ended without a result ({type(e).__name__}: {(str(e).splitlines() or [''])[0]}): "
        f"all {len(rows)} jobs failed, see {md_path}; job {rows[0]['job']}: {first}"
    )


def _inside_task(e: BaseException) -> bool:
    """Whether the exception was raised inside the task function (the run), not while composing."""
    return any(f.name == objective.__name__ and f.filename == __file__ for f in traceback.extract_tb(e.__traceback__))


def _sections(text: str) -> list[str]:
    """A Hydra/OmegaConf message as lines, an indented list under a line ending in ':' folded into it
    ("Available options in 'hydra/launcher': basic, joblib"); the config search path and OmegaConf's
    indented key/type details are dropped (the key leads the line instead)."""
    out: list[str] = []
    items: list[str] = []
    for ln in text.splitlines() + ["."]:
        if ln.startswith(("\t", "    ")):
            items.append(ln.strip())
            continue
        if items and out and out[-1].endswith(":"):
            out[-1] += " " + ", ".join(items)
        items = []
        if ln.strip() and ln.strip() != "." and not ln.startswith("Config search path"):
            out.append(ln.strip().rstrip("."))
    return out


def one_line(e: BaseException) -> str:
    """Hydra's and OmegaConf's messages (several lines, a cause) as one line, the key first."""
    parts: list[str] = []
    while e is not None and len(parts) < 3:
        key = getattr(e, "full_key", None)
        lines = _sections(str(e))
        if key and lines:
            lines = [f"{key}: {lines[0]}"]
            parts = [p for p in parts if not p.startswith("Error merging override")]
        parts += [ln for ln in lines if ln not in parts]
        e = e.__cause__
    return "; ".join(parts)


def train_main() -> None:
    """`hybridlearn-train experiment=... [overrides]` (= `python train.py ...`)."""
    sys.exit(hydra_main())
