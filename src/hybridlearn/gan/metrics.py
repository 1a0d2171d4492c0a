"""GAN quality on 28x28 digits: FID in the 84-d feature space of an MNIST LeNet-5 ("LeNet-FID"),
the classifier's histogram of generated digits (mode coverage) and its mean confidence.

Inception-FID numbers are not comparable with these: the feature extractor is a small MNIST
classifier, so compare a generator's FID with the real-vs-real floor (test vs training images)
measured with the same extractor and the same sample counts.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import atomic_output
from hybridlearn.mnist.data import load_mnist, to_float, to_range
from hybridlearn.mnist.lenet import LeNet5Net

log = logging.getLogger(__name__)
CACHE_VERSION = 1


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


def train_classifier(mnist_dir: str | Path, n_train: int = 60000, epochs: int = 1, seed: int = 0,
                     batch_size: int = 128, lr: float = 2e-3) -> tuple[LeNet5Net, float]:
    """A LeNet-5 on MNIST (standard normalisation), trained without touching the global RNG."""
    raw = load_mnist(mnist_dir)
    x, y = to_float(raw["train_x"][:n_train], "standard"), raw["train_y"][:n_train]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LeNet5Net()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        steps = epochs * math.ceil(len(x) / batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(batch_size):
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    net.eval()
    tx, ty = to_float(raw["test_x"], "standard"), raw["test_y"]
    with torch.no_grad():
        acc = torch.cat([net(b).argmax(1) for b in tx.split(2000)]).eq(ty).float().mean().item()
    return net, acc


def load_classifier(path: str | Path) -> tuple[LeNet5Net, dict[str, Any]]:
    """A Lightning LeNet5 checkpoint (experiment=lenet_mnist) or a classifier cached by this module."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.fid.classifier_ckpt={path} is not a file; give a LeNet-5 .ckpt or null to train one")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if "hyper_parameters" in ck:  # hybridlearn.mnist.lenet.LeNet5 checkpoint
        hp = ck["hyper_parameters"]
        keys = ("in_size", "in_channels", "num_classes", "activation", "pool", "first_padding")
        net = LeNet5Net(**{k: hp[k] for k in keys if k in hp})
        sd = {k[len("net."):].replace("_orig_mod.", ""): v for k, v in ck["state_dict"].items() if k.startswith("net.")}
        info = {"source": str(path)}
    else:
        net = LeNet5Net()
        sd = ck["state_dict"]
        info = {"source": str(path), "test_acc": ck.get("test_acc")}
    if getattr(net, "classifier")[-2].out_features != 84:
        raise ConfigError(f"{path}: the classifier's penultimate layer must have 84 features")
    net.load_state_dict(sd)
    return net.eval(), info


def cached_classifier(cache_dir: str | Path, mnist_dir: str | Path, n_train: int, epochs: int,
                      seed: int = 0) -> tuple[LeNet5Net, dict[str, Any]]:
    """Load the LeNet-5 cached under cache_dir, training (and caching) it first when missing."""
    path = Path(cache_dir).expanduser() / f"gan_fid_lenet5_mnist_v{CACHE_VERSION}_n{n_train}_e{epochs}_s{seed}.pt"
    if path.is_file():
        try:
            return load_classifier(path)
        except Exception as e:  # a corrupt cache is rebuilt
            log.warning("rebuilding the FID classifier cache %s: %s", path, e)
    t0 = time.time()
    log.info("training the LeNet-5 for FID on %d MNIST images (cached in %s)", n_train, path)
    net, acc = train_classifier(mnist_dir, n_train, epochs, seed)
    with atomic_output(path, overwrite=True) as tmp:
        torch.save({"state_dict": net.state_dict(), "test_acc": acc}, tmp)
    log.info("FID classifier: test accuracy %.4f after %.1f s", acc, time.time() - t0)
    return net, {"source": str(path), "test_acc": acc}


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

    def __init__(self, classifier: LeNet5Net, classifier_info: dict[str, Any], batch_size: int = 1000, seed: int = 1234):
        self.classifier, self.classifier_info = classifier.eval(), classifier_info
        self.batch_size, self.seed = batch_size, seed
        self.fid = FrechetInceptionDistance(feature=LeNetFeatures(classifier), reset_real_features=False)

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> "GANEvaluator":
        if c.get("classifier_ckpt"):
            net, info = load_classifier(c["classifier_ckpt"])
        else:
            if not c.get("cache_dir") or not c.get("mnist_dir"):
                raise ConfigError("model.fid.cache_dir and model.fid.mnist_dir must be set to train the FID "
                                  "classifier (or give model.fid.classifier_ckpt, or set model.fid.enabled=false)")
            net, info = cached_classifier(c["cache_dir"], c["mnist_dir"], c["classifier_train_size"],
                                          c["classifier_epochs"])
        return cls(net, info, c["batch_size"], c["seed"])

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
    def samples(self, generator: nn.Module, latent_dim: int, n: int) -> torch.Tensor:
        p = next(generator.parameters())
        g = torch.Generator().manual_seed(self.seed)
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
        hist = torch.bincount(pred, minlength=10).float() / len(pred)
        nz = hist[hist > 0]
        return {
            "class_hist": [round(v, 4) for v in hist.tolist()],
            "confidence": conf.mean().item(),
            # classes holding at least a quarter of their uniform share (2.5% of samples)
            "modes_covered": int((hist >= 0.25 / 10).sum()),
            "class_entropy": float(-(nz * nz.log()).sum() / math.log(10)),  # 1 = uniform over digits
        }

    def evaluate(self, generator: nn.Module, latent_dim: int, n: int) -> dict[str, Any]:
        images = self.samples(generator, latent_dim, n)
        stats = self.class_stats(images)
        stats["fid"] = self.fid_of_images(images)
        return stats
