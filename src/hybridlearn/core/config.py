"""Early config checks: every run is validated before any data is read or any model built (the
settings' declarations, core.settings); small checks of values that are no setting; `conf_dir`."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.settings import check_settings


def plain(v: Any) -> Any:
    """DictConfig/ListConfig (from Hydra) -> dict/list, anything else unchanged: what a module
    saves in its hparams must be plain, so checkpoints load with weights_only=True."""
    return OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad key: every setting against its declaration
    (core.settings), then the rules between keys each declaration carries."""
    check_settings(cfg)


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
