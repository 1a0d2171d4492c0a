"""Callbacks shared by every experiment."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image

from hybridlearn.core.errors import TrainingError
from hybridlearn.core.plotting import plot_curves


class RNGStateCallback(L.Callback):
    """Saves the torch / numpy / python RNG states in checkpoints and restores them when training
    resumes, so a resumed seeded run draws the same dropout masks and noise as an uninterrupted one.

    States are stored as tensors and plain ints so checkpoints load with `weights_only=True`.
    They are applied at the first training epoch after a resume, i.e. after the sanity check and
    anything else that runs at fit start.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        s, self._pending = self._pending, None
        torch.set_rng_state(s["torch"])
        n = s["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate((s["python_version"], tuple(s["python"]), None))
        if "cuda" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])


class FiniteLoss(L.Callback):
    """Stops the run, as failed, at the first loss that is NaN or infinite, or that has grown
    `divergence_factor` times over the run's first training loss (lr=1e6 ends "completed" with a test
    loss of 1e32 otherwise): the step and the metric in one line."""

    def __init__(self, divergence_factor: float | None = 1e6):
        self.divergence_factor = divergence_factor
        self.first: float | None = None  # the first training loss of this fit (or of the resumed part)

    def _check(self, name: str, value: Any, trainer: L.Trainer) -> None:
        if not (isinstance(value, torch.Tensor) and value.numel() == 1):
            return
        v = value.detach().float().item()
        where = f"at step {trainer.global_step} (epoch {trainer.current_epoch})"
        if not math.isfinite(v):
            raise TrainingError(
                f"{name} is {v} {where}; training diverged: lower the learning rate (model.lr) or check the data"
            )
        if self.first is None and name == "train/loss":
            self.first = abs(v)
        limit = None if self.divergence_factor is None or not self.first else self.divergence_factor * self.first
        if limit is not None and abs(v) > limit:
            raise TrainingError(
                f"{name} is {v:.3g} {where}, {self.divergence_factor:g}x its first value {self.first:.3g}; training "
                "diverged: lower the learning rate (model.lr), or raise callbacks.finite_loss.divergence_factor"
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self._check("train/loss", loss, trainer)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") and "loss" in key:
                self._check(key, value, trainer)


def batch_len(batch: Any) -> int:
    """The number of samples in a batch: the first dimension of its first tensor (a tensor, or a
    tuple / list / dict of them, as data loaders yield); 0 when it holds none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    return next((n for n in map(batch_len, items) if n), 0)


class EpochTime(L.Callback):
    """Per training epoch, in the loggers and results.json:
    - `time/train_s`: from the epoch's start to its last training batch (steps and data loading);
    - `time/samples_per_s`: this process's training samples over that time (a run's frames/s);
    - `time/epoch_s`: wall time since the previous epoch's training ended (its evaluation and
      checkpoints, then this epoch's training); their sum over epochs is the fit's wall time but the
      last evaluation, and stays right for a run resumed from a checkpoint (one row per epoch)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.mark = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.end, self.samples = time.perf_counter(), None, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.samples += batch_len(batch)
        self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        pl_module.log("time/epoch_s", now - self.mark, on_epoch=True)
        self.mark = now
        if self.end is None:
            return
        seconds = self.end - self.start
        pl_module.log("time/train_s", seconds, on_epoch=True)
        if self.samples and seconds > 0:
            pl_module.log("time/samples_per_s", self.samples / seconds, on_epoch=True)


class LearningCurves(L.Callback):
    """Per-epoch metrics -> `<run>/learning_curves.png` at the end of fit (one panel per metric,
    train vs val), also sent to TensorBoard / W&B: the first picture a user looks at."""

    def __init__(self, filename: str = "learning_curves.png"):
        self.filename = filename
        self.history: dict[str, dict[str, list[float]]] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation ran inside this epoch already, so both splits' epoch values are here.
        epoch: dict[tuple[str, str], float] = {}
        for key, value in trainer.callback_metrics.items():
            split, _, name = key.partition("/")
            if split not in ("train", "val") or not name or name.endswith("_step") or value.numel() != 1:
                continue
            epoch[(name.removesuffix("_epoch"), split)] = float(value)
        for (name, split), v in epoch.items():
            self.history.setdefault(name, {}).setdefault(split, []).append(v)

    # kept in checkpoints, so a resumed run draws every epoch, not only those since the resume
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = state_dict["history"]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # loss and accuracy first, then the rest; train before val in every panel; at most 4 panels
        first = {"loss": 0, "acc": 1}
        names = sorted(self.history, key=lambda k: (first.get(k, 2), k))
        panels = {
            k: {s: [self.history[k][s]] for s in ("train", "val") if len(self.history[k].get(s, [])) > 1} for k in names
        }
        panels = {k: v for k, v in panels.items() if v}
        if not panels or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        path = plot_curves(
            dict(list(panels.items())[:4]),
            Path(trainer.default_root_dir) / self.filename,
            title=type(pl_module).__name__,
        )
        log_picture(trainer, "learning_curves", path)


def log_picture(trainer: L.Trainer, key: str, path: Path) -> None:
    """Send a PNG the run wrote to the run's TensorBoard and W&B loggers (others keep the file only)."""
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):
            img = np.asarray(Image.open(path).convert("RGB"))
            lg.experiment.add_image(key, img, global_step=trainer.global_step, dataformats="HWC")
        elif isinstance(lg, WandbLogger):
            lg.log_image(key=key, images=[str(path)], step=trainer.global_step)
