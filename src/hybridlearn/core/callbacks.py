"""Callbacks shared by every experiment."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from hybridlearn.core.checkpoint import CLASS_KEY, class_name


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
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
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


class ClassTagCallback(L.Callback):
    """Writes the LightningModule's class into every checkpoint, so loading a checkpoint of another
    experiment fails with one line naming what it holds (core.checkpoint)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_KEY] = class_name(pl_module)
