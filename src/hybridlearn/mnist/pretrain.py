"""A LeNet-5 trained on MNIST on the fly (a few epochs, plain PyTorch) and cached on disk, as the
starting point for fine-tuning on the digit sheets (`model.pretrained: mnist`)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hybridlearn.core.io import atomic_output
from hybridlearn.mnist.augment import HandwritingAugment
from hybridlearn.mnist.data import load_mnist, to_float

log = logging.getLogger(__name__)


def mnist_lenet_weights(
    net: nn.Module,
    data_dir: str = "./data",
    cache_dir: str = "~/.cache/hybridlearn",
    epochs: int = 2,
    lr: float = 2e-3,
    batch_size: int = 128,
    value_range: str = "standard",
    augment: bool = True,
    seed: int = 0,
    subset: int | None = None,
) -> dict[str, torch.Tensor]:
    """State dict of a copy of `net` trained on the 60k MNIST training images (or the first `subset`).

    Cached as `<cache_dir>/lenet5_mnist_<key>.pt`, the key hashing the architecture and these
    settings, so every later run (and every seed of a study) reuses it.
    """
    settings = {"arch": repr(net), "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "value_range": value_range, "augment": augment, "seed": seed, "subset": subset, "v": 1}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir).expanduser() / f"lenet5_mnist_{key}.pt"
    if path.is_file():
        log.info("pretrained MNIST LeNet-5 from cache %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)

    log.info("pretraining LeNet-5 on MNIST for %d epoch(s) -> %s", epochs, path)
    started = time.time()
    raw = load_mnist(data_dir)
    x, y = to_float(raw["train_x"], value_range), raw["train_y"]
    tx, ty = to_float(raw["test_x"], value_range), raw["test_y"]
    if subset:  # quick pretraining (tests): the first `subset` training images
        x, y = x[:subset], y[:subset]
    model = copy.deepcopy(net)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        aug = HandwritingAugment(value_range=value_range) if augment else None
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps = epochs * (-(-len(x) // batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(batch_size):
                xb = x[idx]
                if aug is not None:
                    xb = aug(xb)
                loss = F.cross_entropy(model(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    model.eval()
    with torch.no_grad():
        acc = sum(int((model(tx[i : i + 2000]).argmax(1) == ty[i : i + 2000]).sum()) for i in range(0, len(tx), 2000)) / len(tx)
    log.info("MNIST LeNet-5: test accuracy %.4f after %.0f s", acc, time.time() - started)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save(sd, tmp)
    (path.with_suffix(".json")).write_text(json.dumps({**settings, "mnist_test_acc": acc}, indent=2))
    return sd
