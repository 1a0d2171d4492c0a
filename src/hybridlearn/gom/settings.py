"""The run config as GOM objects: the data module and its tensors, the models (built as the runner builds
them, so their checkpoints keep their config), the grid's networks and training options. Every key is
declared, and checked before anything trains, in gom.conf."""

from __future__ import annotations

import copy
import os
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.checkpoint import instantiate_module
from hybridlearn.gom.data import GomData, GomDataModule
from hybridlearn.gom.grid import NetSpec
from hybridlearn.gom.nets import ae_sizes, mlp_sizes


def datamodule(cfg: DictConfig) -> GomDataModule:
    """The run's GomDataModule (data=gom)."""
    return instantiate(cfg.data)


def prepare_data(cfg: DictConfig) -> GomData:
    """The GOM tensors exactly as the experiment's GomDataModule builds them."""
    dm = datamodule(cfg)
    dm.setup()
    return dm.data


def build_model(cfg: DictConfig, **over: Any) -> L.LightningModule:
    """The run's model with dotted overrides of cfg.model (`**{"autoencoder.hidden": 87}`), set on a copy
    of the whole config so that the keys that follow them (model.net.code) follow."""
    if over:
        cfg = copy.deepcopy(cfg)
        for key, value in over.items():
            OmegaConf.update(cfg.model, key, value, merge=False)
    return instantiate_module(cfg.model)


def set_threads(node: Any) -> None:
    """torch's intra-op threads from `<node>.threads` (null: torch's default)."""
    if node.threads is not None:
        torch.set_num_threads(node.threads)


def hidden_sizes(ranges: Any) -> list[int]:
    """[[a, b], ...] inclusive ranges (or plain ints) -> sorted unique hidden sizes."""
    out: list[int] = []
    for r in ranges:
        out.extend([r] if isinstance(r, int) else range(r[0], r[1] + 1))
    return sorted(set(out))


def grid_specs(g: DictConfig, kind: str, n_features: int, seed: int) -> list[NetSpec]:
    """Every network of the grid: MLPs depth x width x lr, or autoencoders hidden x lr (family M1
    below the input size, M2 above)."""
    il = g.input_layer
    if kind == "mlp":
        return [
            NetSpec(tuple(mlp_sizes(n_features, dp, w, 2, il)), lr, seed, {"depth": dp, "width": w, "lr": lr})
            for dp in g.depths
            for w in g.widths
            for lr in g.mlp_lrs
        ]
    return [
        NetSpec(
            tuple(ae_sizes(n_features, h, il)),
            lr,
            seed,
            {"hidden": h, "lr": lr, "family": "M1" if h < n_features else ("M2" if h > n_features else "=")},
        )
        for h in hidden_sizes(g.ae_hidden)
        for lr in g.ae_lrs
    ]


def grid_options(g: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """The keyword arguments of `train_sigmoid_grid` from the grid's config."""
    epochs = g.epochs
    if cfg.trainer.get("fast_dev_run"):  # one full-batch step per network, as Lightning's fits take one batch
        epochs = 1
    workers = g.workers
    if workers == "auto":  # one chunk of networks per core this process may run on
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {
        "epochs": epochs,
        "grad_reduction": g.grad_reduction,
        "bias": g.bias,
        "stop_energy": g.stop_energy,
        "init_range": g.init_range,
        "workers": workers,
        "chunk_units": g.chunk_units,
    }
