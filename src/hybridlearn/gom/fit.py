"""One GOM model trained and tested by a Trainer of the run's own config: every hybrid of the study goes
through `fit_and_test`, so `trainer=gpu` and `logger=wandb` reach each (one W&B run per model, named
`<run>/<model>`; the CV's folds get theirs from core.cv)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridlearn.core.trainer import TrainerFactory, finish_loggers
from hybridlearn.gom.data import GomDataModule
from hybridlearn.gom.models import GomModule


def fit_and_test(
    trainers: TrainerFactory, dm: GomDataModule, model: GomModule, max_epochs: int, out: Path, name: str
) -> dict[str, Any]:
    """Train `model` on `dm` with a Trainer of the run's factory (its trainer/logger/callbacks config)
    into its own folder `out` (checkpoints, logs, W&B run `<run>/<name>`), test its best checkpoint
    (the weights in memory when no checkpoint callback is configured) and return its results
    (`dm.data` then holds the data it used)."""
    trainer = trainers.build(out, name=name, max_epochs=max_epochs)
    trainer.fit(model, datamodule=dm)
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    if best:
        trainer.test(model, datamodule=dm, ckpt_path=best, weights_only=True, verbose=False)
    else:  # callbacks=none: no checkpoint, test the weights in memory
        trainer.test(model, datamodule=dm, verbose=False)
    finish_loggers(trainer)  # this model's W&B run is complete (a failure is closed by the core)
    r = dict(model.extra_results)
    r["epochs_trained"] = trainer.current_epoch
    r["best_ckpt"] = best
    return r
