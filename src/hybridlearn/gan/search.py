"""The conditional part of the GAN's Optuna search (conf/hparams_search/gan_optuna.yaml):
hydra-optuna-sweeper calls `label_smoothing_for_bce(cfg, trial)` for every trial after the
`params` of the YAML were drawn (`hydra.sweeper.custom_search_space`).

One-sided label smoothing sets BCE targets, so it is drawn only for `model.loss=nonsaturating`;
a hinge trial keeps the search's `model.label_smoothing: 0.0` (the GAN refuses smoothing with hinge).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

LOSS_KEY, SMOOTHING_KEY = "model.loss", "model.label_smoothing"
SMOOTHING_CHOICES = (0.0, 0.1)


def label_smoothing_for_bce(cfg: DictConfig, trial: Any) -> None:
    if trial.params.get(LOSS_KEY, "nonsaturating") == "nonsaturating":
        trial.suggest_categorical(SMOOTHING_KEY, list(SMOOTHING_CHOICES))
