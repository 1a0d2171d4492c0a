"""The experiments of `make reproduce`: the modules named by `reproduce.modules` (its default in
hybridlearn/reproduce/conf.py, or the command line), imported by name. Each module (`<package>/reproduce.py`) has

    STAGES                      the stages it serves, in run and report order
    plan(stage, settings, ctx)  its runs (`core.reproduce.Run`) from `reproduce.scale.<scale>.<stage>`
    section(stage, ctx)         its report section (markdown lines)
    differences(ctx)            where its numbers differ from the paper's, and why (bullet texts)

Adding an experiment to the report is adding its module to that list."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from hybridlearn.core.errors import ConfigError
from hybridlearn.reproduce.conf import MODULES


@dataclass(frozen=True)
class Registry:
    modules: tuple[ModuleType, ...]

    @property
    def stage_modules(self) -> dict[str, ModuleType]:
        """Every stage -> its module, in run and report order."""
        return {stage: m for m in self.modules for stage in m.STAGES}

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.stage_modules)


@functools.cache
def _registry(names: tuple[str, ...]) -> Registry:
    try:
        return Registry(tuple(importlib.import_module(n) for n in names))
    except ImportError as e:
        raise ConfigError(f"reproduce.modules: {e}; name an experiment's reproduce module") from None


def registry(names: Sequence[str] | None = None) -> Registry:
    """The experiments' modules of `names` (None: the default list), imported once."""
    return _registry(tuple(str(n) for n in (MODULES if names is None else names)))
