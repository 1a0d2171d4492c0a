"""The experiments of `make reproduce`: the modules named by `reproduce.modules` in
conf/experiment/reproduce.yaml, imported once, here. Each module (`<package>/reproduce.py`) has

    STAGES                      the stages it serves, in run and report order
    plan(stage, settings, ctx)  its runs (`core.reproduce.Run`) from `reproduce.scale.<scale>.<stage>`
    section(stage, ctx)         its report section (markdown lines)
    differences(ctx)            where its numbers differ from the paper's, and why (bullet texts)

Adding an experiment to the report is adding its module to that list."""

from __future__ import annotations

import importlib
from types import ModuleType

from omegaconf import OmegaConf

from hybridlearn.core.config import conf_dir
from hybridlearn.core.errors import ConfigError


def _load() -> list[ModuleType]:
    names = OmegaConf.load(conf_dir() / "experiment" / "reproduce.yaml").reproduce.modules
    try:
        return [importlib.import_module(str(n)) for n in names]
    except ImportError as e:
        raise ConfigError(f"reproduce.modules in conf/experiment/reproduce.yaml: {e}; fix the module name") from None


MODULES = _load()
# every stage of `make reproduce` -> its module, in run and report order
STAGE_MODULES = {stage: m for m in MODULES for stage in m.STAGES}
STAGES = tuple(STAGE_MODULES)
