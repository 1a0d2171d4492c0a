"""The one way a Trainer is made: from the run's `trainer`, `logger` and `callbacks` config.

The standard flow trains one model per run; a study (`entry:`) trains many, each with
`build_trainer(cfg, <its own folder>, name=..., max_epochs=...)`, so `trainer=gpu`,
`trainer.precision=...` and `logger=wandb` reach every model a study trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from hybridlearn.core.callbacks import ClassTagCallback


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group that has a `_target_` (null disables)."""
    if not group:
        return []
    return [instantiate(v) for v in group.values() if isinstance(v, DictConfig) and "_target_" in v]


def rooted(cfg: DictConfig, output_dir: str | Path, name: str = "") -> DictConfig:
    """A copy of `cfg` whose `${paths.output_dir}` is `output_dir` (loggers, checkpoints and the
    Trainer's root follow it) and whose W&B run name ends in `/<name>`."""
    sub = cfg.copy()
    with open_dict(sub):
        sub.paths.output_dir = str(output_dir)
        wandb = (sub.get("logger") or {}).get("wandb")
        if name and wandb is not None:
            wandb.name = f"{OmegaConf.select(cfg, 'logger.wandb.name') or cfg.get('task_name')}/{name}"
    return sub


def build_trainer(cfg: DictConfig, output_dir: str | Path, *, name: str = "", callbacks: Sequence[L.Callback] = (),
                  use_config_callbacks: bool = True, **trainer_overrides: Any) -> L.Trainer:
    """A Trainer from `cfg.trainer` (+ `trainer_overrides`), `cfg.logger` and `cfg.callbacks`, writing
    into `output_dir`. `name` names the model inside a study (its W&B run is `<run name>/<name>`)."""
    sub = rooted(cfg, output_dir, name)
    cbs = [*(instantiate_group(sub.get("callbacks")) if use_config_callbacks else []), *callbacks, ClassTagCallback()]
    loggers = instantiate_group(sub.get("logger"))
    trainer: L.Trainer = instantiate(sub.trainer, callbacks=cbs, logger=loggers or False,
                                     default_root_dir=str(output_dir), **trainer_overrides)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(sub, resolve=True, throw_on_missing=False))
    return trainer


def finish_loggers(trainer: L.Trainer | None, failed: bool = False) -> None:
    """Close the W&B runs of `trainer` (marked failed when `failed`), so every model of a run or
    sweep leaves one complete run."""
    for lg in (trainer.loggers if trainer is not None else []):
        if isinstance(lg, WandbLogger) and lg._experiment is not None:
            lg.experiment.finish(exit_code=1 if failed else 0)

