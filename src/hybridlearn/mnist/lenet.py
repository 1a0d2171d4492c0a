"""LeNet-5 (LeCun et al. 1998) as a LightningModule, with the variants the paper's authors used."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from hybridlearn.core.config import plain
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.mnist.augment import TestTimeAugment
from hybridlearn.mnist.pretrain import mnist_lenet_weights

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet5Net(nn.Module):
    """conv 5x5 -> 6, subsample, conv 5x5 -> 16, subsample, 120, 84, 10.

    `first_padding=2` ("same" on 28x28, as Keras' padding='same') feeds 28x28 MNIST at LeNet's
    32x32 geometry; use 0 for 32x32 inputs.
    """

    def __init__(self, in_size: int = 28, in_channels: int = 1, num_classes: int = 10,
                 activation: str = "relu", pool: str = "max", first_padding: int = 2):
        super().__init__()
        act, pool_cls = ACTIVATIONS[activation], POOLS[pool]
        side = ((in_size + 2 * first_padding - 4) // 2 - 4) // 2
        if side < 1:
            raise ConfigError(f"model.in_size={in_size} with first_padding={first_padding} is too small for LeNet-5")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=first_padding), act(), pool_cls(2),
            nn.Conv2d(6, 16, 5), act(), pool_cls(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * side * side, 120), act(), nn.Linear(120, 84), act(),
        )
        self.head = nn.Linear(84, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 84-d penultimate features (used as the feature space for FID)."""
        return self.classifier(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def keras_init_(net: nn.Module) -> None:
    """Keras' defaults: Glorot-uniform kernels, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def net_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """LeNet5Net weights from a Lightning checkpoint (keys `net.*`) or a plain state_dict file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained={path} is not a file; give a .ckpt (e.g. from experiment=lenet_mnist) or 'mnist'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/format error is a bad file
        raise DataError(f"model.pretrained={path}: cannot load ({type(e).__name__}: {e})") from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise DataError(f"model.pretrained={path}: no state_dict inside")
    if any(k.startswith("net.") for k in sd):
        sd = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
    return {k.replace("_orig_mod.", ""): v for k, v in sd.items()}


def load_pretrained_(net: nn.Module, pretrained: str, pretrain: Mapping[str, Any] | None = None) -> None:
    if pretrained == "mnist":
        sd = mnist_lenet_weights(net, **dict(pretrain or {}))
    else:
        sd = net_state_dict(pretrained)
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConfigError(f"model.pretrained={pretrained}: weights do not fit this LeNet-5 (in_size/first_padding/"
                          f"num_classes must match the pretrained model): {' '.join(first[1:2]) or first[0]}") from None


class LeNet5(L.LightningModule):
    def __init__(
        self,
        in_size: int = 28,
        in_channels: int = 1,
        num_classes: int = 10,
        activation: str = "relu",
        pool: str = "max",
        first_padding: int = 2,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: str | None = "onecycle",
        compile: bool = False,
        init: str = "torch",
        pretrained: str | None = None,
        pretrain: Mapping[str, Any] | None = None,
        freeze: str | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tta: Mapping[str, Any] | None = None,
    ):
        """`init`: torch (PyTorch defaults) | keras (Glorot-uniform weights, zero biases, as the
        paper's Keras models). `pretrained`: a Lightning .ckpt or a state_dict .pt of a LeNet-5 of
        the same shape, or "mnist" for a LeNet-5 trained on MNIST on the fly and cached (settings
        in `pretrain`, see hybridlearn.mnist.pretrain). `freeze`: null | features (the conv
        layers) | all_but_head. `augment`: a callable applied to training batches only.
        `tta`: null, or the settings of a `hybridlearn.mnist.augment.TestTimeAugment` (e.g.
        {rotate: [-8, 8], value_range: standard}) used by validation, test and predict.
        `pretrained`, `pretrain` and `augment` are not saved in checkpoints (a checkpoint already
        holds the trained weights); `tta` is, so predict.py predicts as the test did."""
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation must be one of {sorted(ACTIVATIONS)} (got {activation!r})")
        if pool not in POOLS:
            raise ConfigError(f"model.pool must be one of {sorted(POOLS)} (got {pool!r})")
        if optimizer not in ("adam", "sgd"):
            raise ConfigError(f"model.optimizer must be adam or sgd (got {optimizer!r})")
        if scheduler not in (None, "onecycle", "cosine"):
            raise ConfigError(f"model.scheduler must be null, onecycle or cosine (got {scheduler!r})")
        if lr <= 0:
            raise ConfigError(f"model.lr must be > 0 (got {lr})")
        if init not in ("torch", "keras"):
            raise ConfigError(f"model.init must be torch or keras (got {init!r})")
        if freeze not in (None, "features", "all_but_head"):
            raise ConfigError(f"model.freeze must be null, features or all_but_head (got {freeze!r})")
        if tta is not None and not isinstance(tta, Mapping):
            raise ConfigError(f"model.tta must be null or a mapping like {{rotate: [-8, 8]}} (got {tta!r})")
        tta = plain(tta)
        self.save_hyperparameters(ignore=["pretrained", "pretrain", "augment"])
        self.net = LeNet5Net(in_size, in_channels, num_classes, activation, pool, first_padding)
        if init == "keras":
            keras_init_(self.net)
        if pretrained:
            load_pretrained_(self.net, pretrained, pretrain)
        if freeze:
            frozen = [self.net.features] + ([self.net.classifier] if freeze == "all_but_head" else [])
            for m in frozen:
                m.requires_grad_(False)
        self.augment = augment
        if tta is not None:
            try:
                self.tta = TestTimeAugment(**tta)
            except TypeError as e:
                raise ConfigError(f"model.tta: {e} (keys: rotate, value_range)") from None
        else:
            self.tta = None
        if compile:
            self.net = torch.compile(self.net)
        self.acc = nn.ModuleDict({s: MulticlassAccuracy(num_classes, average="micro", validate_args=False) for s in ("val_", "test_")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation. With `tta`, the log of the mean softmax over its views: argmax,
        softmax and cross-entropy of these are those of the averaged prediction."""
        if self.tta is None:
            return self(x)
        return self.tta(self.net, x).clamp_min(1e-12).log()

    def _step(self, batch, stage: str, batch_idx: int = 0) -> torch.Tensor:
        x, y = batch
        logits = self(x) if stage == "train" else self.eval_logits(x)
        loss = F.cross_entropy(logits, y)
        if stage == "train":
            # Each self.log call costs ~0.5 ms in Lightning (bench_lenet): count correct answers
            # here and log the epoch's accuracy once, at its last batch (so callbacks see it).
            self._train_counts += torch.stack([(logits.detach().argmax(1) == y).sum(), y.new_tensor(len(y))])
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
            if batch_idx + 1 >= self.trainer.num_training_batches:
                correct, seen = self._train_counts.tolist()
                self.log("train/acc", correct / seen, on_epoch=True, prog_bar=True)
            return loss
        acc = self.acc[stage + "_"]
        acc.update(logits.detach(), y)  # accumulate only; computed once per epoch when logged
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log(f"{stage}/acc", acc, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_counts = torch.zeros(2, dtype=torch.long, device=self.device)  # correct, seen

    def training_step(self, batch, batch_idx):
        if self.augment is not None:
            x, y = batch
            with torch.no_grad():
                x = self.augment(x)
            batch = (x, y)
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return F.softmax(self.eval_logits(x), dim=-1)

    def _trainable(self):
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.hparams
        if hp.optimizer == "adam":
            opt = torch.optim.Adam(self._trainable(), lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.SGD(self._trainable(), lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
        if hp.scheduler is None:
            return opt
        steps = self.trainer.estimated_stepping_batches
        if hp.scheduler == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=max(1, int(steps)))
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
