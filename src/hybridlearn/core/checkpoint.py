"""The one checkpoint loader: `weights_only=True` always, and one-line errors for a file that is not
a checkpoint or that holds another model; and what the checkpoints of a fit carry and where its
newest one is (ClassTagCallback, LastCheckpoint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.ckptfile import CLASS_KEY, CONFIG_KEY, EPOCHS_KEY, read_info
from hybridlearn.core.config import plain
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.settings import load_settings

M = TypeVar("M", bound=L.LightningModule)


def class_name(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def declared_model(target: str) -> dict[str, Any] | None:
    """The declared settings (core.settings, with their defaults) of the `model` option whose
    `_target_` is `target`, None when no option builds it."""
    load_settings()
    for item in ConfigStore.instance().repo.get("model", {}).values():
        node = getattr(item, "node", None)
        if isinstance(node, DictConfig) and node.get("_target_") == target:
            return OmegaConf.to_container(node, resolve=False)
    return None


def with_declared_defaults(saved: dict[str, Any], declared: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint's stored model config with every setting declared since it was written added at its
    declared default (nested too; a default that reads another part of a run, ${...}, is left out),
    so a new setting does not break the checkpoints written before it."""
    declared = declared_model(str(saved.get("_target_"))) if declared is None else declared
    out = dict(saved)
    for key, default in (declared or {}).items():
        if key not in out:
            if not (isinstance(default, str) and "${" in default):
                out[key] = default
        elif isinstance(default, dict) and isinstance(out[key], dict):
            out[key] = with_declared_defaults(out[key], default)
    return out


def rebuild_module(saved: dict[str, Any]) -> Any:
    """The module a checkpoint's stored config describes, settings declared since taking their defaults."""
    return instantiate_module(with_declared_defaults(saved))


def instantiate_module(config: Any) -> Any:
    """The LightningModule (or network) a config describes, built by Hydra, with the config kept on it
    (`hybridlearn_config`) so its checkpoints can rebuild it: networks handed to a module are objects,
    which Lightning's hyperparameters cannot hold."""
    module = instantiate(config)
    module.hybridlearn_config = plain(config)
    return module


class ClassTagCallback(L.Callback):
    """Writes into every checkpoint the LightningModule's class (loading a checkpoint of another
    experiment fails with one line naming what it holds), the config it was built from, and the
    fit's max_epochs (a resume must keep the length its learning-rate schedule was planned for)."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLASS_KEY] = class_name(pl_module)
        checkpoint[EPOCHS_KEY] = trainer.max_epochs
        config = getattr(pl_module, "hybridlearn_config", None)
        if config is not None:
            checkpoint[CONFIG_KEY] = config


class AtomicCheckpointIO(TorchCheckpointIO):
    """Each checkpoint written whole beside its target (`<file>.partial`), then renamed over it:
    a run killed while saving keeps its previous last.ckpt (Lightning writes the file in place).
    core.trainer gives it to every Trainer whose strategy would use TorchCheckpointIO."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):  # a remote store keeps its own semantics
            return super().save_checkpoint(checkpoint, path, storage_options)
        partial = f"{path}.partial"
        super().save_checkpoint(checkpoint, partial, storage_options)
        os.replace(partial, path)


class LastCheckpoint(ModelCheckpoint):
    """`<dirpath>/last.ckpt` at every save point of the run's checkpoint callback, improved or not:
    the resume point. Lightning 2.6's own `save_last` rewrites `last.ckpt` only when a top-k
    checkpoint is saved, so a run killed after epochs without a new best would resume from its
    last improvement. `callbacks.model_checkpoint.save_last: true` builds this beside the monitored
    callback (`core.trainer`); with no monitor and one file kept, its one file is the newest."""

    def __init__(
        self,
        dirpath: str | Path | None,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        train_time_interval: Any = None,
        save_on_train_epoch_end: bool | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=self.CHECKPOINT_NAME_LAST,
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            save_on_train_epoch_end=save_on_train_epoch_end,
            enable_version_counter=False,  # a resumed run rewrites its last.ckpt, never last-v1.ckpt
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # as Lightning's save_last: a fit that reached no save point (no validation ran) ends with one
        super().on_train_end(trainer, pl_module)
        if not self.best_model_path and self.dirpath and not trainer.fast_dev_run:
            self.best_model_path = self.format_checkpoint_name({})
            trainer.save_checkpoint(self.best_model_path)

    @property
    def state_key(self) -> str:
        # the monitored callback of a run without a monitor would share ModelCheckpoint's key
        return f"{type(self).__qualname__}[{self.dirpath}]"

    @property
    def path(self) -> str:
        return self.best_model_path


def last_checkpoint(trainer: L.Trainer) -> str:
    """The newest checkpoint a fit wrote (to resume from): its LastCheckpoint's file, else the
    checkpoint callback's last or best one; "" when none."""
    last = next((cb.path for cb in trainer.callbacks if isinstance(cb, LastCheckpoint) and cb.path), "")
    cb = trainer.checkpoint_callback
    return last or (getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "") if cb else "")


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The checkpoint dict at `path`, read with `weights_only=True` (nothing in it can run code), after
    core.ckptfile has read it without torch (one line for a file that is no checkpoint, or holds code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file; give a .ckpt (e.g. <run>/checkpoints/last.ckpt)")
    read_info(path, what)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/format error means "not a checkpoint we can read"
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataError(f"{what} {path} is not a readable PyTorch checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ck, dict) or not isinstance(ck.get("state_dict"), dict):
        raise DataError(f"{what} {path} holds no Lightning state_dict; give a .ckpt written by train.py")
    return ck


def describe(ck: dict[str, Any]) -> str:
    """A short guess of what a checkpoint holds (class, or its first weights)."""
    if ck.get(CLASS_KEY):
        return str(ck[CLASS_KEY]).rsplit(".", 1)[-1]
    prefixes = sorted({k.split(".", 1)[0] for k in ck["state_dict"]})
    return f"a model with weights {', '.join(prefixes[:4]) or '(none)'}"


def check_class(ck: dict[str, Any], cls: type, path: str | Path, what: str = "checkpoint") -> None:
    """One line when the checkpoint was written by another LightningModule class."""
    tag = ck.get(CLASS_KEY)
    if tag and tag != class_name(cls):
        raise ConfigError(
            f"{what} {path} holds {describe(ck)}, not {cls.__name__}; give a checkpoint of this experiment"
        )


def load_module(cls: type[M], path: str | Path, what: str = "checkpoint", **kwargs: Any) -> M:
    """The module a checkpoint holds, after checking the file and its class: rebuilt from the config it
    keeps (instantiate_module) when it has one, else `cls.load_from_checkpoint(path, weights_only=True)`;
    mismatched weights (a checkpoint of another model) give one line instead of a state_dict dump."""
    ck = read_checkpoint(path, what)
    check_class(ck, cls, path, what)
    try:
        if ck.get(CONFIG_KEY) and not kwargs:
            module = rebuild_module(ck[CONFIG_KEY])
            module.on_load_checkpoint(ck)  # Lightning's order: the hook first, then the weights
            module.load_state_dict(ck["state_dict"])
            return module
        return cls.load_from_checkpoint(Path(path).expanduser(), map_location="cpu", weights_only=True, **kwargs)
    except (RuntimeError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"{what} {path} holds {describe(ck)}, which does not fit {cls.__name__} ({first})") from None


def check_fits(path: str | Path, model: L.LightningModule, what: str = "ckpt_path") -> None:
    """Before `trainer.fit/test/predict(ckpt_path=...)`: the file is a checkpoint of `model`'s class
    whose weights have the same names and shapes."""
    ck = read_checkpoint(path, what)
    check_class(ck, type(model), path, what)
    own = model.state_dict()
    theirs = ck["state_dict"]
    missing = [k for k in own if k not in theirs]
    extra = [k for k in theirs if k not in own]
    wrong = [k for k in own if k in theirs and tuple(own[k].shape) != tuple(theirs[k].shape)]
    if missing or extra or wrong:
        detail = "; ".join(
            s
            for s in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(extra[:3])}" if extra else "",
                f"other shape {', '.join(wrong[:3])}" if wrong else "",
            )
            if s
        )
        raise ConfigError(
            f"{what}={path} holds {describe(ck)}, not this experiment's {type(model).__name__} ({detail})"
        )
