"""The one way a Trainer is made: from the run's `trainer`, `logger` and `callbacks` config.

The standard flow trains one model per run; a study (`entry:`) trains many, each with
`trainers.build(<its own folder>, name=..., max_epochs=...)` of the run's `TrainerFactory`, so
`trainer=gpu`, `trainer.precision=...` and `logger=wandb` reach every model a study trains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.plugins import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf, open_dict

from hybridlearn.core.checkpoint import AtomicCheckpointIO, ClassTagCallback, LastCheckpoint
from hybridlearn.core.results import keep_earlier_log


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group that has a `_target_` (null disables)."""
    if not group:
        return []
    return [instantiate(v) for v in group.values() if isinstance(v, DictConfig) and "_target_" in v]


def instantiate_callbacks(group: DictConfig | None) -> list[Any]:
    """The callbacks group, where a ModelCheckpoint's `save_last: true` means a `last.ckpt` at each
    of its save points (core.checkpoint.LastCheckpoint), not only at those that save a new best."""
    out = []
    for v in group.values() if group else ():
        if not (isinstance(v, DictConfig) and "_target_" in v):
            continue
        if v.get("save_last") is True and issubclass(get_class(v._target_), ModelCheckpoint):
            keys = ("every_n_epochs", "every_n_train_steps", "train_time_interval", "save_on_train_epoch_end")
            out += [instantiate(v, save_last=False), LastCheckpoint(v.get("dirpath"), **{k: v.get(k) for k in keys})]
        else:
            out.append(instantiate(v))
    return out


def rooted(cfg: DictConfig, output_dir: str | Path, name: str = "") -> DictConfig:
    """A copy of `cfg` whose `${paths.output_dir}` is `output_dir` (loggers, checkpoints and the
    Trainer's root follow it) and whose W&B run name ends in `/<name>`."""
    sub = cfg.copy()
    with open_dict(sub):
        sub.paths.output_dir = str(output_dir)
        wandb = (sub.get("logger") or {}).get("wandb")
        if name and wandb is not None:
            wandb.name = f"{OmegaConf.select(cfg, 'logger.wandb.name') or cfg.get('task_name')}/{name}"
            if wandb.get("id"):  # one W&B run per model of a study, each resumable under its own id
                wandb.id = f"{wandb.id}-{re.sub(r'[^A-Za-z0-9_-]+', '-', name)}"
    return sub


def build_trainer(
    cfg: DictConfig | None,
    output_dir: str | Path,
    *,
    name: str = "",
    callbacks: Sequence[L.Callback] = (),
    use_config_callbacks: bool = True,
    **trainer_overrides: Any,
) -> L.Trainer:
    """A Trainer from `cfg.trainer` (+ `trainer_overrides`), `cfg.logger` and `cfg.callbacks`, writing
    into `output_dir`. `name` names the model inside a study (its W&B run is `<run name>/<name>`).
    With `cfg=None` (outside a run: Python API, tests) a quiet single-device Trainer."""
    if cfg is None:
        quiet = dict(
            accelerator="auto",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        return L.Trainer(
            default_root_dir=str(output_dir),
            callbacks=[*callbacks, ClassTagCallback()],
            **{**quiet, **trainer_overrides},
        )
    sub = rooted(cfg, output_dir, name)
    if name:  # one fit of many: the study shows one bar over its fits (core.progress), not one per fit
        trainer_overrides.setdefault("enable_progress_bar", False)
    cbs = [
        *(instantiate_callbacks(sub.get("callbacks")) if use_config_callbacks else []),
        *callbacks,
        ClassTagCallback(),
    ]
    loggers = instantiate_group(sub.get("logger"))
    for lg in loggers:  # a run resumed in place keeps its earlier attempts' CSV logs
        if isinstance(lg, CSVLogger):
            keep_earlier_log(Path(output_dir), Path(lg.log_dir) / "metrics.csv")
    # Callbacks that Lightning refuses in some settings are dropped there instead of failing the run.
    settings = {**OmegaConf.to_container(sub.trainer, resolve=True), **trainer_overrides}
    if "enable_model_summary" not in settings and not any(isinstance(cb, ModelSummary) for cb in cbs):
        # `callbacks.model_summary: null` means no summary (Lightning would print its own, Rich's on the console)
        trainer_overrides["enable_model_summary"] = False
    if settings.get("enable_progress_bar") is False:
        cbs = [cb for cb in cbs if not isinstance(cb, ProgressBar)]
    if not loggers:
        cbs = [cb for cb in cbs if not isinstance(cb, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(
        sub.trainer, callbacks=cbs, logger=loggers or False, default_root_dir=str(output_dir), **trainer_overrides
    )
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not XLA's, nor one the config chose
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    for lg in trainer.loggers:  # fast_dev_run swaps the loggers for dummies: start no real run then
        lg.log_hyperparams(OmegaConf.to_container(sub, resolve=True, throw_on_missing=False))
    return trainer


class TrainerFactory:
    """The Trainers of one run, built from its config and kept: the runner closes their W&B runs and,
    on Ctrl-C, finds the last checkpoint among them. Made by `core.runner` and handed explicitly to
    whatever trains models inside the run (a study's entry, the cached MNIST LeNet-5 behind
    `model.pretrained: mnist`, the GAN's FID classifier), so `trainer=gpu` and `logger=wandb` reach
    those models too. `TrainerFactory()` (no config: Python API, tests) builds quiet Trainers."""

    def __init__(self, cfg: DictConfig | None = None):
        self.cfg = cfg
        self.built: list[L.Trainer] = []

    def folder(self, name: str, default: str | Path) -> Path:
        """`<run>/<name>` inside a run, else `default` (a helper model's logs go beside the run's)."""
        return Path(self.cfg.paths.output_dir) / name if self.cfg is not None else Path(default)

    def build(self, output_dir: str | Path, cfg: DictConfig | None = None, **kwargs: Any) -> L.Trainer:
        """`build_trainer(<the run's config>, output_dir, **kwargs)`, remembered; `cfg`: a variant of
        the run's config instead (a study's model with trainer settings of its own)."""
        trainer = build_trainer(cfg if cfg is not None else self.cfg, output_dir, **kwargs)
        self.built.append(trainer)
        return trainer


def finish_loggers(trainer: L.Trainer | None, failed: bool = False) -> None:
    """Close the W&B run of `trainer` (marked failed when `failed`), so every model of a run or sweep
    leaves one complete run. A WandbLogger starts its run on first use; `wandb.run` is the active one."""
    if trainer is None or not any(isinstance(lg, WandbLogger) for lg in trainer.loggers):
        return
    import wandb  # only where W&B is in use (its import is slow)

    if wandb.run is not None:
        wandb.run.finish(exit_code=1 if failed else 0)
