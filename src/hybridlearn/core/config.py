"""Early config checks: every run is validated before any data is read or any model built."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.lean import check_names

# Keys that must be strictly positive wherever they appear (model, data, ...).
POSITIVE_KEYS = ("lr", "learning_rate", "batch_size", "eval_batch_size")
# Keys that must be whole numbers wherever they appear (a float there fails deep inside training).
INT_KEYS = (
    "batch_size",
    "eval_batch_size",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "epochs",
    "num_workers",
    "threads",
    "cv_folds",
    "seed",
    "num_samples",
    "nrow",
    "accumulate_grad_batches",
    "check_val_every_n_epoch",
    "log_every_n_steps",
    "num_sanity_val_steps",
)
CHECKED_GROUPS = ("model", "data", "trainer", "callbacks")
TASKS = ("fit", "predict", "test")


def plain(v: Any) -> Any:
    """DictConfig/ListConfig (from Hydra) -> dict/list, anything else unchanged: what a module
    saves in its hparams must be plain, so checkpoints load with weights_only=True."""
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v


def _walk(node: Any, prefix: str):
    """(dotted key, value) of every leaf, MISSING for `???`; values that need the running job
    (`${hydra:...}`) are skipped."""
    if isinstance(node, (Mapping, DictConfig)):
        keys = list(node.keys())
    elif isinstance(node, (Sequence, ListConfig)) and not isinstance(node, str):
        keys = list(range(len(node)))
    else:
        yield prefix, node
        return
    for k in keys:
        try:
            v = node[k]
        except MissingMandatoryValue:
            v = MISSING
        except InterpolationResolutionError:
            continue
        yield from _walk(v, f"{prefix}[{k}]" if isinstance(k, int) else f"{prefix}.{k}" if prefix else str(k))


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1].split("[", 1)[0]


def _check_value(path: str, value: Any) -> None:
    """Every number finite; whole-number keys integers; positive keys > 0."""
    leaf = _leaf(path)
    if value is None or isinstance(value, bool):
        if value is not None and (leaf in POSITIVE_KEYS or leaf.endswith("_lr") or leaf in INT_KEYS):
            raise ConfigError(f"{path} must be a number (got {value!r})")
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number (got {value})")
    if (leaf in INT_KEYS or leaf.endswith("_epochs")) and isinstance(value, float):
        raise ConfigError(f"{path} must be a whole number (got {value})")
    if leaf in POSITIVE_KEYS or leaf.endswith("_lr"):
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a positive number (got {value!r})")
        if value <= 0:
            raise ConfigError(f"{path} must be > 0 (got {value})")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key."""
    # Hydra's own node is Hydra's to resolve, later
    missing = [p for k in cfg.keys() if k != "hydra" for p, v in _walk(cfg[k], str(k)) if v is MISSING]
    if missing:
        raise ConfigError(
            f"missing required config value(s): {', '.join(sorted(missing))}; set them on the command line"
        )
    if cfg.get("task", "fit") not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)} (got {cfg.task!r})")
    if cfg.get("task", "fit") == "test" and not cfg.get("entry") and not cfg.get("ckpt_path"):
        raise ConfigError(
            "task=test needs ckpt_path=<a .ckpt of this experiment> (testing untrained weights means nothing)"
        )
    ckpt = cfg.get("ckpt_path")
    if ckpt and not Path(str(ckpt)).expanduser().is_file():
        raise ConfigError(
            f"ckpt_path={ckpt} is not a file; give the path of a .ckpt (e.g. <run>/checkpoints/last.ckpt), "
            "or ckpt_path=last for the newest run of this task_name"
        )
    skip = cfg.get("skip_imports")
    try:
        if isinstance(skip, str) or not isinstance(skip, (Sequence, ListConfig, type(None))):
            raise ValueError(f"{skip!r} is not a list")
        check_names(skip or [])
    except ValueError as e:
        raise ConfigError(f"skip_imports: {e}; give a list of top-level package names, e.g. [scipy]") from None
    check_bool("defer_dynamo", cfg.get("defer_dynamo", False))
    if cfg.get("malloc_keep_mb") is not None:
        check_int("malloc_keep_mb", cfg.malloc_keep_mb, 0, 1 << 20)
    if not isinstance(cfg.get("seed"), int) and cfg.get("seed") is not None:
        raise ConfigError(f"seed must be an integer or null (got {cfg.seed!r})")
    data_dir = OmegaConf.select(cfg, "paths.data_dir", default=None)
    if data_dir and Path(str(data_dir)).exists() and not Path(str(data_dir)).is_dir():
        raise ConfigError(f"DATA_DIR={data_dir} is a file, not a folder; point DATA_DIR at the data folder")
    for group in CHECKED_GROUPS:
        for path, value in _walk(cfg.get(group) or {}, group):
            _check_value(path, value)
    trainer = cfg.get("trainer") or {}
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < -1 or max_epochs == 0):
        raise ConfigError(f"trainer.max_epochs must be a positive integer or -1 (got {max_epochs!r})")


def check_int(key: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{key} must be an integer in [{lo}, {hi}] (got {v!r})")
    return v


def check_int_list(key: str, v: Any, lo: int, hi: int) -> list[int]:
    if isinstance(v, (str, bytes)) or not isinstance(v, (Sequence, ListConfig)):
        raise ConfigError(f"{key} must be a list (got {v!r})")
    return [check_int(f"{key}[{i}]", x, lo, hi) for i, x in enumerate(v)]


def check_float(key: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not (lo < v <= hi):
        raise ConfigError(f"{key} must be a number in ({lo}, {hi}] (got {v!r})")
    return float(v)


def check_choice(key: str, v: Any, choices: Sequence[str | None]) -> str | None:
    if v not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)  # None is typed `null`
        raise ConfigError(f"{key} must be one of {shown} (got {v!r})")
    return v


def check_bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false (got {v!r})")
    return v


def check_fraction(key: str, v: Any, hi: float = 1.0, *, hi_included: bool = False) -> float:
    """A share that may be none of it: a number in [0, hi) (a dropout, a smoothing: `hi` would never
    change or learn anything), or [0, hi] with `hi_included` (a blend weight, a strength)."""
    number = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    if not number or not (0 <= v <= hi if hi_included else 0 <= v < hi):
        raise ConfigError(f"{key} must be a number in [0, {hi:g}{']' if hi_included else ')'} (got {v!r})")
    return float(v)


def conf_dir() -> Path:
    """The `conf/` folder: $HYBRIDLEARN_CONF, else the one beside the source tree (editable install)."""
    env = os.environ.get("HYBRIDLEARN_CONF")
    candidates = [Path(env)] if env else [p / "conf" for p in Path(__file__).resolve().parents]
    for c in candidates:
        if (c / "train.yaml").is_file():
            return c
    raise ConfigError(
        "conf/train.yaml not found; install the checkout with `make install` or set HYBRIDLEARN_CONF=<repo>/conf"
    )
