"""LeNet-5 (LeCun et al. 1998) as a LightningModule, with the variants the paper's authors used: the
network (LeNet5Net) is built from `model.net` and handed to the LightningModule (LeNet5), which holds
the training choices (optimizer, schedule, initialisation, pretrained weights, augmentation)."""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from hybridlearn.core.checkpoint import check_class, read_checkpoint
from hybridlearn.core.ckptfile import CONFIG_KEY
from hybridlearn.core.config import plain
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import write_text_atomic
from hybridlearn.core.plotting import save_figure
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.mnist.augment import HandwritingAugment, TestTimeAugment
from hybridlearn.mnist.conf import LeNet5NetConfig, MNISTPretrainConfig, feature_side
from hybridlearn.mnist.pretrain import pretrained_lenet

log = logging.getLogger(__name__)

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet5Net(nn.Module):
    """conv 5x5 -> 6, subsample, conv 5x5 -> 16, subsample, 120, 84, 10 (settings: LeNet5NetConfig).

    `first_padding=2` ("same" on 28x28, as Keras' padding='same') feeds 28x28 MNIST at LeNet's
    32x32 geometry; use 0 for 32x32 inputs. `width` scales every layer's channels/units (1 = LeCun's
    6/16/120/84); `dropout` > 0 adds dropout after the two hidden fully connected layers (the
    parameter names stay those of the plain network, so checkpoints load either way).
    """

    def __init__(
        self,
        in_size: int,
        in_channels: int,
        num_classes: int,
        activation: str,
        pool: str,
        first_padding: int,
        width: float,
        dropout: float,
    ):
        super().__init__()
        self.in_size = in_size  # the side of the images it reads (predict.py prepares cells to it)
        self.in_channels, self.num_classes = in_channels, num_classes
        act, pool_cls = ACTIVATIONS[activation], POOLS[pool]
        side = feature_side(in_size, first_padding)
        c1, c2, f1, f2 = (max(1, round(n * width)) for n in (6, 16, 120, 84))

        def hidden_act() -> nn.Module:  # dropout rides with the activation: no parameter index moves
            return nn.Sequential(act(), nn.Dropout(dropout)) if dropout > 0 else act()

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=first_padding),
            act(),
            pool_cls(2),
            nn.Conv2d(c1, c2, 5),
            act(),
            pool_cls(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, f1),
            hidden_act(),
            nn.Linear(f1, f2),
            hidden_act(),
        )
        self.head = nn.Linear(f2, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 84-d penultimate features (used as the feature space for FID)."""
        return self.classifier(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class LeNet5Ensemble(nn.Module):
    """Several LeNet5Nets of one shape read as one network: `forward` gives the log of the members'
    mean softmax, so softmax, argmax and cross-entropy of it are the averaged prediction (predict.py,
    task=test and TTA read it like one network's logits). Trained member by member (LeNet5 sums the
    members' own cross-entropies, so each learns as if alone: a deep ensemble, Lakshminarayanan et
    al. 2017); the members differ by their start (their MNIST pretraining seeds)."""

    def __init__(self, members: list[LeNet5Net]):
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0]  # what the ensemble reads and predicts: its members' (predict.py prepares cells to it)
        self.in_size, self.in_channels, self.num_classes = first.in_size, first.in_channels, first.num_classes

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logits, [members, N, classes]."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_of_softmax(self.member_logits(x))


def mean_of_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log(mean_k softmax(logits[k])), computed in log space: logits of the averaged probabilities."""
    return torch.logsumexp(F.log_softmax(logits, -1), 0) - math.log(len(logits))


def build_net(settings: Mapping[str, Any] | None = None) -> LeNet5Net:
    """The LeNet5Net of `settings` (a `model.net` mapping; the missing keys take their declared defaults)."""
    return instantiate(OmegaConf.merge(OmegaConf.structured(LeNet5NetConfig), settings or {}))


def keras_init_(net: nn.Module) -> None:
    """Keras' defaults: Glorot-uniform kernels, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


# the network's keys among the hyperparameters of checkpoints written before `model.net` existed
OLD_NET_KEYS = ("in_size", "in_channels", "num_classes", "activation", "pool", "first_padding")


def read_lenet(path: str | Path, what: str = "model.pretrained") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(LeNet5Net weights, its `model.net` settings) of a LeNet5 Lightning checkpoint (keys `net.*`)
    or of a cached pretraining (hybridlearn.mnist.pretrain: no settings, the defaults), read by the
    one checkpoint loader (weights_only=True; one line for a non-checkpoint or another model's)."""
    ck = read_checkpoint(path, what)
    check_class(ck, LeNet5, path, what)
    config = ck.get(CONFIG_KEY)
    networks = config.get("ensemble", 1) if isinstance(config, dict) else 1
    if networks > 1:
        raise ConfigError(
            f"{what}={path} is an ensemble of {networks} LeNet-5s; give the checkpoint of one network "
            "(a run with model.ensemble=1)"
        )
    sd = ck["state_dict"]
    if any(k.startswith("net.") for k in sd):
        sd = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
    if isinstance(config, dict) and isinstance(config.get("net"), dict):
        arch = dict(config["net"])
    else:
        arch = {k: v for k, v in (ck.get("hyper_parameters") or {}).items() if k in OLD_NET_KEYS}
    return {k.replace("_orig_mod.", ""): v for k, v in sd.items()}, arch


def load_weights_(net: nn.Module, sd: Mapping[str, torch.Tensor], pretrained: str) -> None:
    """`net.load_state_dict(sd)`, one line naming `model.pretrained` when the shapes differ."""
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConfigError(
            f"model.pretrained={pretrained}: weights do not fit this LeNet-5 (model.net's in_size/first_padding/"
            f"width/num_classes must match the pretrained model): {' '.join(first[1:2]) or first[0]}"
        ) from None


class LeNet5(L.LightningModule):
    """LeNet-5 training (settings: LeNet5Config): cross-entropy, Adam or SGD with an optional one-cycle
    or cosine schedule, accuracy and a test confusion matrix, class probabilities for task=predict."""

    def __init__(
        self,
        net: LeNet5Net,
        ensemble: int,
        optimizer: str,
        lr: float,
        weight_decay: float,
        scheduler: str | None,
        compile: bool,
        init: str,
        pretrained: str | None,
        pretrain: Mapping[str, Any],
        freeze: str | None,
        augment: HandwritingAugment | None,
        tta: TestTimeAugment | None,
    ):
        """`net` is trained in place; `ensemble` > 1 makes it the first of an ensemble (LeNet5Ensemble)
        of that many copies, each re-initialised, and (`pretrained: mnist`) each loaded from its own
        pretraining seed, `pretrain.seed + k`. `init`: torch (PyTorch defaults) | keras (Glorot-uniform weights,
        zero biases, as the paper's Keras models). `pretrained`: a Lightning .ckpt or cached .pt of a
        LeNet-5 of the same network, or "mnist" for one trained on MNIST with the `pretrain` settings
        (hybridlearn.mnist.pretrain); loaded by `prepare_helpers`, and not at all when a checkpoint's
        weights are loaded. `freeze`: null | features (the conv layers) | all_but_head. `augment`
        transforms training batches; `tta` averages validation, test and predict over views.
        Checkpoints keep the config the module was built from (core.checkpoint), so they rebuild it
        with its network, augmentation and TTA: predict.py predicts as the test did."""
        super().__init__()
        self.save_hyperparameters(ignore=["net", "pretrained", "pretrain", "augment", "tta"])
        if init == "keras":
            keras_init_(net)
        nets = [net] + [copy.deepcopy(net) for _ in range(ensemble - 1)]
        with torch.random.fork_rng(devices=[]):  # RNG-neutral: member k trains on the batches a single run would
            for m in nets[1:]:  # a copy starts elsewhere (with pretrained weights: its own pretraining)
                for layer in m.modules():
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
                if init == "keras":
                    keras_init_(m)
        for m in nets:
            if freeze:
                for part in [m.features] + ([m.classifier] if freeze == "all_but_head" else []):
                    part.requires_grad_(False)
        self.net = net if ensemble == 1 else LeNet5Ensemble(nets)
        self.augment, self.tta = augment, tta
        # weights to load before training (prepare_helpers): a constructor reads no file and trains nothing
        self.pending_weights = (pretrained, dict(plain(pretrain))) if pretrained else None
        self.compiled = False
        n = net.num_classes
        self.acc = nn.ModuleDict(
            {s: MulticlassAccuracy(n, average="micro", validate_args=False) for s in ("val_", "test_")}
        )
        # test confusion matrix; metric states are not saved, so checkpoints keep their keys
        self.confmat = MulticlassConfusionMatrix(n, validate_args=False)

    @property
    def members(self) -> list[LeNet5Net]:
        """The LeNet5Nets trained, each on its own loss (one network: the network itself)."""
        return list(self.net.members) if isinstance(self.net, LeNet5Ensemble) else [self.net]

    def data_signature(self) -> dict[str, Any]:
        """What data the network takes (core.runner checks it against the data module's)."""
        return {"input": (self.net.in_channels, self.net.in_size, self.net.in_size), "classes": self.net.num_classes}

    def prepare_helpers(self, trainers: TrainerFactory | None = None) -> None:
        """Load `pretrained` weights: a LeNet-5 file, or the MNIST pretraining (hybridlearn.mnist.pretrain)
        trained by a Trainer of `trainers` (the run's; None: a quiet one) unless cached. Once; `setup`
        calls it when no caller did (Python API)."""
        if self.pending_weights is None:
            return
        pretrained, settings = self.pending_weights
        for k, member in enumerate(self.members):
            if pretrained == "mnist":
                seed = settings.get("seed", MNISTPretrainConfig.seed) + k
                sd, _ = pretrained_lenet(member, trainers, **{**settings, "seed": seed})
            else:  # one file: one network (hybridlearn.mnist.conf refuses it for an ensemble)
                sd = read_lenet(pretrained)[0]
            load_weights_(member, sd, pretrained)
        self.pending_weights = None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.pending_weights = None  # a checkpoint's weights replace any pretrained ones

    def setup(self, stage: str) -> None:
        self.prepare_helpers()
        if self.hparams.compile and not self.compiled:  # after the pretrained weights: they load into the plain network
            for m in self.members:  # in place: the weights keep their names, so checkpoints load either way
                m.compile()
            self.compiled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def eval_logits(self, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Logits for evaluation. With `tta`, the log of the mean softmax over its views: argmax,
        softmax and cross-entropy of these are those of the averaged prediction. `member`: that
        member of an ensemble alone (the study scores the single networks from the same fit)."""
        net = self.net if member is None else self.members[member]
        if self.tta is None:
            return net(x)
        return self.tta(net, x).clamp_min(1e-12).log()

    def _step(self, batch, stage: str, batch_idx: int = 0) -> torch.Tensor:
        x, y = batch
        if stage == "train":
            # each member learns from its own loss (their sum: the members' gradients are their own)
            member_logits = [m(x) for m in self.members]
            loss = sum(F.cross_entropy(lg, y) for lg in member_logits)
            logits = member_logits[0] if len(member_logits) == 1 else mean_of_softmax(torch.stack(member_logits))
        else:
            logits = self.eval_logits(x)
            loss = F.cross_entropy(logits, y)
        if stage == "train":
            # Each self.log call costs ~0.5 ms in Lightning (bench_lenet): count correct answers
            # here and log the epoch's accuracy once, at its last batch (so callbacks see it).
            self._train_counts += torch.stack([(logits.detach().argmax(1) == y).sum(), y.new_tensor(len(y))])
            self.log(
                "train/loss",
                loss,
                on_step=True,
                on_epoch=True,
                prog_bar=True,
                batch_size=len(y),
                sync_dist=True,
            )
            if batch_idx + 1 >= self.trainer.num_training_batches:
                correct, seen = self._train_counts.tolist()
                self.log(
                    "train/acc",
                    correct / seen,
                    on_epoch=True,
                    prog_bar=True,
                    sync_dist=True,
                )
            return loss
        acc = self.acc[stage + "_"]
        acc.update(logits.detach(), y)  # accumulate only; computed once per epoch when logged
        if stage == "test":
            self.confmat.update(logits.detach(), y)
        self.log(
            f"{stage}/loss",
            loss,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
            sync_dist=True,
        )
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

    def on_test_epoch_start(self) -> None:
        self.confmat.reset()

    def on_test_epoch_end(self) -> None:
        counts = self.confmat.compute().cpu()  # synchronised across DDP ranks
        if int(counts.sum()) > 0:
            self._write_confusion_matrix(counts)

    @rank_zero_only
    def _write_confusion_matrix(self, counts: torch.Tensor) -> None:
        """`<run>/confusion_matrix.png` (torchmetrics' plot) and the same figure in TensorBoard / W&B."""
        fig, _ = self.confmat.plot(counts)
        fig.suptitle(f"test confusion matrix ({int(counts.sum())} images; rows: true, columns: predicted)")
        for lg in self.trainer.loggers:
            if type(lg).__name__ == "TensorBoardLogger":
                lg.experiment.add_figure(
                    "test/confusion_matrix",
                    fig,
                    global_step=self.global_step,
                    close=False,
                )
        path = save_figure(fig, Path(self.trainer.default_root_dir) / "confusion_matrix.png")
        for lg in self.trainer.loggers:
            if type(lg).__name__ == "WandbLogger":
                lg.log_image(key="test/confusion_matrix", images=[str(path)])
        self.extra_results = {
            **getattr(self, "extra_results", {}),
            "confusion_matrix": str(path),
        }

    def predict_step(self, batch, batch_idx):
        """Class probabilities (with the model's TTA); the labels too when the data has them."""
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) and len(batch) > 1 else (batch, None)
        x = x[0] if isinstance(x, (tuple, list)) else x
        out = {"probs": F.softmax(self.eval_logits(x), dim=-1).cpu()}
        if y is not None:
            out["label"] = y.cpu()
        return out

    def write_predictions(self, predictions: list, output_dir: Path) -> dict[str, Any]:
        """`<output_dir>/predictions.csv`: index, digit, confidence (and label when known), one row
        per image of the predict split, in order (task=predict)."""
        probs = torch.cat([p["probs"] for p in predictions])
        labels = torch.cat([p["label"] for p in predictions]) if all("label" in p for p in predictions) else None
        conf, digit = probs.max(1)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["index", "digit", "confidence"] + (["label"] if labels is not None else []))
        for i in range(len(digit)):
            w.writerow([i, int(digit[i]), f"{float(conf[i]):.6f}"] + ([int(labels[i])] if labels is not None else []))
        path = write_text_atomic(Path(output_dir) / "predictions.csv", buf.getvalue())
        out: dict[str, Any] = {"predictions": str(path), "n": len(digit)}
        if labels is not None:
            out["predict/acc"] = float((digit == labels).float().mean())
        return out

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
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "step"},
        }
