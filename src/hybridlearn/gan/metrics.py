"""GAN quality on 28x28 digits: FID in the 84-d feature space of an MNIST LeNet-5 ("LeNet-FID"),
the classifier's histogram of generated digits (mode coverage) and its mean confidence.

Inception-FID numbers are not comparable with these: the feature extractor is a small MNIST
classifier, so compare a generator's FID with the real-vs-real floor (test vs training images)
measured with the same extractor and the same sample counts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.gan.conf import FIDConfig
from hybridlearn.mnist.data import to_range
from hybridlearn.mnist.lenet import LeNet5Net, build_net, read_lenet
from hybridlearn.mnist.pretrain import pretrained_lenet

log = logging.getLogger(__name__)


def fid_settings(fid: Mapping[str, Any]) -> FIDConfig:
    """`model.fid` as the runner passes it (every key of hybridlearn.gan.conf.FIDConfig, resolved) as a
    FIDConfig; one line for a mapping that is not one (the Python API builds it from the dataclass)."""
    known = {f.name for f in dataclasses.fields(FIDConfig)}
    unknown, missing = sorted(set(fid) - known), sorted(known - set(fid))
    wrong = [f"{what} {keys}" for what, keys in (("unknown key(s)", unknown), ("no", missing)) if keys]
    if wrong:
        raise ConfigError(f"model.fid has {' and '.join(wrong)}; build it from hybridlearn.gan.conf.FIDConfig")
    return FIDConfig(**fid)


def tanh_to_standard(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> MNIST mean/std normalisation (what the LeNet-5 classifiers are trained on)."""
    return to_range((x + 1) * 0.5, "standard", inplace=True)


class LeNetFeatures(nn.Module):
    """Feature extractor for torchmetrics' FID: [-1, 1] images -> 84-d LeNet-5 features."""

    num_features = 84

    def __init__(self, net: LeNet5Net):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(tanh_to_standard(x.float()))


def load_classifier(path: str | Path) -> tuple[LeNet5Net, dict[str, Any]]:
    """A LeNet-5 checkpoint (experiment=lenet_mnist) or a cached MNIST pretraining, as the FID classifier."""
    what = "model.fid.classifier_ckpt"
    sd, arch = read_lenet(path, what)
    net = build_net(arch)
    if net.classifier[-2].out_features != 84:
        raise ConfigError(f"{what}={path}: the classifier's penultimate layer must have 84 features")
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise ConfigError(f"{what}={path}: weights do not fit LeNet-5 ({str(e).strip().splitlines()[0]})") from None
    return net.eval(), {"source": str(path)}


def mnist_classifier(
    data_dir: str | Path,
    cache_dir: str | Path,
    n_train: int | None,
    epochs: int,
    seed: int = 0,
    trainers: TrainerFactory | None = None,
) -> tuple[LeNet5Net, dict[str, Any]]:
    """The FID classifier: the MNIST LeNet-5 pretraining (hybridlearn.mnist.pretrain, cached) with
    standard normalisation, no augmentation, `epochs` epochs on the first `n_train` images, trained
    by a Trainer of `trainers` (None: a quiet one) when not cached."""
    net = build_net()
    sd, info = pretrained_lenet(
        net,
        trainers,
        data_dir=str(data_dir),
        cache_dir=str(cache_dir),
        epochs=epochs,
        value_range="standard",
        augment=False,
        seed=seed,
        subset=None if not n_train or n_train >= 60000 else n_train,
    )
    net.load_state_dict(sd)
    return net.eval(), {"source": info["source"], "test_acc": info["mnist_test_acc"]}


def collect_images(loader, n: int) -> torch.Tensor:
    """The first n images of a loader of (x, ...) batches (or of x batches)."""
    out, got = [], 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out.append(x[: n - got].detach().cpu())
        got += len(out[-1])
        if got >= n:
            break
    if not out:
        raise ValueError("the loader is empty")
    return torch.cat(out)


class GANEvaluator:
    """LeNet-FID against a fixed real reference, plus class histogram and confidence of samples.

    Generated samples come from a private, fixed set of latent vectors (`seed`), so evaluations
    neither consume the global RNG (seeded resumes stay exact) nor vary between epochs by chance.
    """

    def __init__(
        self,
        classifier: LeNet5Net,
        classifier_info: dict[str, Any],
        batch_size: int,
        seed: int,
    ):
        self.classifier, self.classifier_info = classifier.eval(), classifier_info
        self.batch_size, self.seed = batch_size, seed
        self.fid = FrechetInceptionDistance(feature=LeNetFeatures(classifier), reset_real_features=False)

    @classmethod
    def from_config(cls, c: FIDConfig, trainers: TrainerFactory | None = None) -> GANEvaluator:
        """The evaluator of `model.fid`: its classifier read from `classifier_ckpt`, or the MNIST
        pretraining (trained by a Trainer of `trainers` when not cached)."""
        if c.classifier_ckpt:
            net, info = load_classifier(c.classifier_ckpt)
        else:
            net, info = mnist_classifier(
                c.mnist_dir, c.cache_dir, c.classifier_train_size, c.classifier_epochs, trainers=trainers
            )
        return cls(net, info, c.batch_size, c.seed)

    def with_new_reference(self) -> GANEvaluator:
        """An evaluator of the same classifier and settings whose real reference is set apart from this one's."""
        return GANEvaluator(self.classifier, self.classifier_info, self.batch_size, self.seed)

    @torch.no_grad()
    def set_reference(self, real: torch.Tensor) -> None:
        self.fid.reset_real_features = True
        self.fid.reset()
        self.fid.reset_real_features = False
        for b in real.split(self.batch_size):
            self.fid.update(b.float().cpu(), real=True)

    @torch.no_grad()
    def fid_of_images(self, images: torch.Tensor) -> float:
        self.fid.reset()
        for b in images.split(self.batch_size):
            self.fid.update(b.float().cpu(), real=False)
        return float(self.fid.compute())

    @torch.no_grad()
    def samples(self, generator: nn.Module, latent_dim: int, n: int, draw: int = 0) -> torch.Tensor:
        """n images of the fixed latent vectors of draw `draw` (seed `seed + draw`), generator in eval mode."""
        p = next(generator.parameters())
        g = torch.Generator().manual_seed(self.seed + draw)
        z = torch.randn(n, latent_dim, generator=g)
        was_training = generator.training
        generator.eval()
        out = torch.cat([generator(b.to(p.device, p.dtype)).float().cpu() for b in z.split(self.batch_size)])
        generator.train(was_training)
        return out

    @torch.no_grad()
    def class_stats(self, images: torch.Tensor) -> dict[str, Any]:
        probs = torch.cat([F.softmax(self.classifier(tanh_to_standard(b)), 1) for b in images.split(self.batch_size)])
        conf, pred = probs.max(1)
        counts = torch.bincount(pred, minlength=10)
        hist = counts.float() / len(pred)
        balanced = (counts * 100 - 10 * len(pred)).abs() <= 3 * len(pred)
        nz = hist[hist > 0]
        return {
            "class_hist": [round(v, 4) for v in hist.tolist()],
            "confidence": conf.mean().item(),
            # classes holding at least a quarter of their uniform share (2.5% of samples)
            "modes_covered": int((hist >= 0.25 / 10).sum()),
            "class_entropy": float(-(nz * nz.log()).sum() / math.log(10)),  # 1 = uniform over digits
            # classes holding 10 % +- 3 % of the samples (counted exactly: |count - n/10| <= 3 n/100)
            "classes_balanced": int(balanced.sum()),
            "balanced": bool(balanced.all()),
        }

    def evaluate_images(self, images: torch.Tensor) -> dict[str, Any]:
        """Class statistics and FID of generated images."""
        return {**self.class_stats(images), "fid": self.fid_of_images(images)}

    def evaluate(self, generator: nn.Module, latent_dim: int, n: int, draws: int = 1) -> dict[str, Any]:
        """evaluate_images of draw 0; with `draws` > 1, `fid` is the mean over that many independent
        draws, `fid_std` their standard deviation (n - 1) and `fid_draws` each one."""
        stats = self.evaluate_images(self.samples(generator, latent_dim, n))
        fids = [stats["fid"]] + [self.fid_of_images(self.samples(generator, latent_dim, n, d)) for d in range(1, draws)]
        t = torch.tensor(fids, dtype=torch.float64)
        return {
            **stats,
            "fid": float(t.mean()),
            "fid_std": float(t.std()) if draws > 1 else None,
            "fid_draws": [round(f, 4) for f in fids],
        }
