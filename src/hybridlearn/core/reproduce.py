"""What an experiment hands `make reproduce` (its `<package>/reproduce.py`): the runs of its stage
and the context its report section reads. The sweep and the page assembly live in
`hybridlearn.reproduce`; this module only holds the shared types and the override grammar."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.settings import flat


@dataclass
class Run:
    """One job of a stage: `train.py <args>` into `<reproduce dir>/<stage>/<name>`."""

    stage: str
    name: str
    args: list[str]
    resumable: bool = False  # a Lightning fit that resumes from checkpoints/last.ckpt
    optional: bool = False  # its failure is reported but does not fail the command (data that may be offline)
    # its share of the stage's expected time (reproduce.expected_s), relative to the stage's other runs:
    # the runs start longest first
    cost: float = 1.0
    # hash of the composed config the args stand for (make_plan fills it): a changed YAML default
    # behind the same args makes a finished run stale; None: not known (older markers)
    config: str | None = None
    # that config as {dotted key: value} and the declared defaults of its settings (make_plan fills
    # both): a setting added since the run was made, at its default, does not make the run stale
    settings: dict[str, Any] | None = None
    defaults: dict[str, Any] | None = None

    @property
    def rel(self) -> str:
        return f"{self.stage}/{self.name}"


@dataclass
class PlanContext:
    """What every stage's plan shares: the overrides of every train run, the data folder."""

    common: list[str]
    data_dir: Path


@dataclass
class ReportContext:
    """The reproduce folder a section reads, where its figures go, and the report's options."""

    root: Path
    figs: Path
    quick: bool = False
    gif_max_mb: float = 2.0
    video_frames_n: int = 4


def override_value(v: Any) -> str:
    """A value in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(override_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{override_value(x)}" for k, x in v.items()) + "}"
    s = str(v)
    if s and all(c.isalnum() or c in "._-/" for c in s):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def flatten(node: Any, prefix: str = "") -> list[str]:
    """{a: {b: 1, c: [2]}} -> ["a.b=1", "a.c=[2]"]: a nested mapping as key=value overrides."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping) and not node:
        return []
    return [f"{k}={override_value(v)}" for k, v in flat(node, prefix).items()]
