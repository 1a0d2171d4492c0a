"""GOM models built from their settings dataclasses (hybridlearn.gom.conf) as the runner builds them
from a run's config: the interpolated keys (`${seed}`, `${data.n_features}`) get explicit values."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from hybridlearn.core.checkpoint import instantiate_module


def build(model_config: Any, seed: int = 0, n_features: int = 68) -> Any:
    """The LightningModule a model settings dataclass (e.g. SigmoidMLPConfig(lr=0.5)) describes."""
    root = OmegaConf.create({"seed": seed, "data": {"n_features": n_features}})
    root.model = OmegaConf.structured(model_config)
    return instantiate_module(root.model)
