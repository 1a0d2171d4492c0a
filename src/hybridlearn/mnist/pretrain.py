"""The one MNIST LeNet-5 pretraining, trained by a Lightning Trainer and cached on disk by a hash of
its settings. Its users: `model.pretrained: mnist` (digits transfer and study) and the GAN's FID
classifier (hybridlearn.gan.metrics), each with its own settings (epochs, images, augmentation).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from hybridlearn.core.checkpoint import read_checkpoint
from hybridlearn.core.config import plain
from hybridlearn.core.errors import ConfigError, HybridlearnError
from hybridlearn.core.io import atomic_output
from hybridlearn.core.loaders import tensor_loader
from hybridlearn.core.settings import check_settings
from hybridlearn.core.trainer import TrainerFactory, finish_loggers
from hybridlearn.mnist.augment import HandwritingAugment
from hybridlearn.mnist.conf import MNISTPretrainConfig, pretrain_augment_settings
from hybridlearn.mnist.data import load_mnist, to_float

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when the training changes, so old caches are not reused


class MNISTPretraining(L.LightningModule):
    """Cross-entropy on MNIST for any classifier `net` (a LeNet5Net): Adam + one-cycle, optional
    handwriting augmentation of the training batches, test accuracy."""

    def __init__(self, net: nn.Module, lr: float, augment: nn.Module | None = None):
        super().__init__()
        self.net, self.lr, self.augment = net, lr, augment
        self.test_counts = torch.zeros(2, dtype=torch.long)  # correct, seen

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.augment is not None:
            with torch.no_grad():
                x = self.augment(x)
        loss = F.cross_entropy(self.net(x), y)
        self.log("pretrain/loss", loss, on_step=True, on_epoch=True, batch_size=len(y))
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_counts += torch.tensor([int((self.net(x).argmax(1) == y).sum()), len(y)])

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "step"},
        }


def pretrained_lenet(
    net: nn.Module, trainers: TrainerFactory | None = None, **settings: Any
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, info) of a copy of `net` trained on the 60k MNIST training images (or the first
    `subset`); info holds `mnist_test_acc` (10k test images) and `source` (the cache file).

    `settings`: those of `model.pretrain` (hybridlearn.mnist.conf.MNISTPretrainConfig; the ones not
    given take its defaults, `data_dir` and `cache_dir` must be given), checked against their
    declarations before any training. Cached as `<cache_dir>/lenet5_mnist_<key>.pt`, the key hashing
    the architecture and the training settings, so every later run (every seed of a study, every GAN
    run) reuses it. Trained by a Trainer of `trainers` (the run's: its accelerator, precision and
    loggers apply, logs in `<run>/lenet_pretrain/`; None: a quiet one); the global RNG is left as it was.
    """
    s = pretrain_settings(settings)
    aug = pretrain_augment(s["augment"], s["value_range"])  # checked before the (long) training
    key_settings = {k: s[k] for k in ("epochs", "lr", "batch_size", "value_range", "augment", "seed", "subset")}
    key_settings.update(arch=repr(net), v=CACHE_VERSION)
    key = hashlib.sha1(json.dumps(key_settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(s["cache_dir"]).expanduser() / f"lenet5_mnist_{key}.pt"
    cached = _read_cache(path)
    if cached is not None:
        return cached
    log.info("pretraining LeNet-5 on MNIST for %d epoch(s) -> %s", s["epochs"], path)
    started = time.time()
    train, test = _mnist_loaders(s["data_dir"], s["subset"], s["value_range"], s["batch_size"], s["seed"])
    with torch.random.fork_rng():
        torch.manual_seed(s["seed"])
        model = copy.deepcopy(net)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        module = MNISTPretraining(model, s["lr"], aug)
        acc = _fit_and_test(module, train, test, s["epochs"], trainers or TrainerFactory())
    log.info("MNIST LeNet-5: test accuracy %.4f after %.0f s", acc, time.time() - started)
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_output(path, overwrite=True) as tmp_path:
        torch.save({"state_dict": sd, "mnist_test_acc": acc, "settings": key_settings}, tmp_path)
    return sd, {"source": str(path), "mnist_test_acc": acc}


def pretrain_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` merged onto MNISTPretrainConfig's defaults and checked (one line naming
    `model.pretrain.<key>`); `augment` stays as given (true / false / a mapping: the cache key)."""
    try:
        node = OmegaConf.merge(OmegaConf.structured(MNISTPretrainConfig), plain(dict(settings)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"model.pretrain: {str(e).splitlines()[0]}") from None
    check_settings(node, "model.pretrain")
    for key in ("data_dir", "cache_dir"):
        if key not in settings:
            raise ConfigError(f"model.pretrain.{key} must be given (a run takes it from paths.{key})")
    return {**OmegaConf.to_container(node, resolve=False), "augment": plain(settings.get("augment", True))}


def pretrain_augment(augment: bool | Mapping[str, Any], value_range: str) -> HandwritingAugment | None:
    """`model.pretrain.augment`: true / false, or the settings of a HandwritingAugment (the rest their
    defaults; `value_range` that of the pretraining's images)."""
    node = pretrain_augment_settings(plain(augment), value_range, "model.pretrain.augment")
    return None if node is None else instantiate(node)


def _read_cache(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(state dict, info) of a cached pretraining, None when there is none (a corrupt file is rebuilt)."""
    if not path.is_file():
        return None
    try:
        ck = read_checkpoint(path, "cached MNIST LeNet-5")
    except HybridlearnError as e:
        log.warning("rebuilding %s", e)
        return None
    log.info("pretrained MNIST LeNet-5 from cache %s", path)
    return ck["state_dict"], {"source": str(path), "mnist_test_acc": ck.get("mnist_test_acc")}


def _mnist_loaders(data_dir: str, subset: int | None, value_range: str, batch_size: int, seed: int):
    """(train loader over the first `subset` training images, test loader over the 10k test images)."""
    raw = load_mnist(data_dir)
    n = subset or len(raw["train_y"])
    train = tensor_loader(
        to_float(raw["train_x"][:n], value_range),
        raw["train_y"][:n],
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
    )
    test = tensor_loader(to_float(raw["test_x"], value_range), raw["test_y"], batch_size=2000, shuffle=False)
    return train, test


def _fit_and_test(module: MNISTPretraining, train, test, epochs: int, trainers: TrainerFactory) -> float:
    """Train `module` for `epochs` epochs with a Trainer of `trainers`; its MNIST test accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        # What is trained is fixed by the settings (the cache key): the run's debug limits and
        # devices (fast_dev_run, limit_*, DDP) must not change it, only where and how fast it runs.
        trainer = trainers.build(
            trainers.folder("lenet_pretrain", tmp),
            name="lenet_pretrain",
            use_config_callbacks=False,
            max_epochs=epochs,
            min_epochs=1,
            max_steps=-1,
            fast_dev_run=False,
            limit_train_batches=1.0,
            limit_val_batches=0,
            limit_test_batches=1.0,
            overfit_batches=0.0,
            devices=1,
            num_nodes=1,
            strategy="auto",
            enable_checkpointing=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        try:
            trainer.fit(module, train_dataloaders=train)
            module.test_counts.zero_()
            trainer.test(module, dataloaders=test, verbose=False)
        finally:
            finish_loggers(trainer)
    correct, seen = module.test_counts.tolist()
    return correct / seen
