"""Lightning vs a bare PyTorch loop: one LeNet-5 epoch on MNIST, same model, data, batch size.

    DATA_DIR=../shared/data python benchmarks/bench_lenet.py [--repeats 3] [--batch-size 128]
    DATA_DIR=../shared/data python benchmarks/bench_lenet.py --repeats 1 --train-subset 512   # smoke (no claim)

Both paths see the same in-memory batches (hybridlearn.core.loaders) and use Adam without a
scheduler; the Lightning path also computes and logs torchmetrics accuracy every step, as
`experiment=lenet_mnist` does. Runs alternate so machine noise hits both alike; the table
reports the median epoch time of each and their ratio (goal: Lightning <= 1.2x bare).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hybridlearn.core.loaders import tensor_loader
from hybridlearn.mnist.conf import LeNet5Config, MNISTDataConfig
from hybridlearn.mnist.data import MNISTDataModule
from hybridlearn.mnist.lenet import LeNet5

warnings.filterwarnings("ignore")


def settings(batch_size: int = 128, train_subset: int | None = None, lr: float = 2e-3):
    """data=mnist and model=lenet5 (Adam, no scheduler) as a run composes them, on $DATA_DIR."""
    return OmegaConf.create(
        {
            "paths": {"data_dir": os.environ.get("DATA_DIR", "./data"), "cache_dir": "."},
            "seed": 0,
            "data": OmegaConf.structured(MNISTDataConfig(batch_size=batch_size, train_subset=train_subset)),
            "model": OmegaConf.structured(LeNet5Config(lr=lr, scheduler=None)),
        }
    )


def mnist_train(batch_size: int = 128, train_subset: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST training split (images, labels) of data=mnist."""
    dm = instantiate(settings(batch_size, train_subset).data)
    dm.setup()
    return dm.tensors["train"]


def bare_epoch(model: torch.nn.Module, loader, lr: float) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


class Timer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


def lightning_epoch(dm: MNISTDataModule, lr: float, seed: int) -> float:
    L.seed_everything(seed, verbose=False)
    model: LeNet5 = instantiate(settings(lr=lr).model)
    timer = Timer()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    return timer.seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--train-subset", type=int, default=None, help="train on the first N images (a smoke run)")
    args = ap.parse_args()

    dm = instantiate(settings(args.batch_size, args.train_subset).data)
    dm.setup()
    x, y = dm.tensors["train"]
    bare, light = [], []
    for r in range(args.repeats):
        torch.manual_seed(r)
        net = instantiate(settings().model.net)
        bare.append(bare_epoch(net, tensor_loader(x, y, batch_size=args.batch_size, shuffle=True, seed=r), args.lr))
        light.append(lightning_epoch(dm, args.lr, r))
    b, lt = statistics.median(bare), statistics.median(light)
    n = len(x)
    print(
        f"LeNet-5, MNIST train split {n} images, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} epochs"
    )
    print("| path | epoch s | images/s |")
    print("|---|---|---|")
    print(f"| bare PyTorch loop | {b:.2f} | {n / b:,.0f} |")
    print(f"| Lightning (LeNet5 module, torchmetrics, logging) | {lt:.2f} | {n / lt:,.0f} |")
    print(f"| **ratio Lightning / bare** | **{lt / b:.3f}x** | goal <= 1.2x |")


if __name__ == "__main__":
    main()
