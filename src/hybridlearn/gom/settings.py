"""The run config as GOM objects: the data module and its tensors, constructor keyword arguments,
the grid's networks and training options, each key checked before anything trains."""

from __future__ import annotations

import os
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.config import check_choice, check_float, check_int, check_int_list
from hybridlearn.core.errors import ConfigError
from hybridlearn.gom.data import GomData, GomDataModule
from hybridlearn.gom.grid import NetSpec
from hybridlearn.gom.models import MAX_DEPTH, MAX_LR, MAX_WIDTH
from hybridlearn.gom.nets import ae_sizes, mlp_sizes


def config_kwargs(node: DictConfig, **over) -> dict[str, Any]:
    """A config group (cfg.data, cfg.model) as constructor keyword arguments, with overrides."""
    d = OmegaConf.to_container(node, resolve=True)
    d.pop("_target_", None)
    d.update(over)
    return d


def datamodule(cfg: DictConfig, **over) -> GomDataModule:
    return GomDataModule(**config_kwargs(cfg.data, **over))


def prepare_data(cfg: DictConfig, **over) -> GomData:
    """The GOM tensors exactly as the experiment's GomDataModule builds them."""
    dm = datamodule(cfg, **over)
    dm.setup()
    return dm.data


def set_threads(group: str, node: Any) -> None:
    """torch's intra-op threads from `<group>.threads` (unset: torch's default)."""
    t = node.get("threads")
    if t is not None:
        torch.set_num_threads(check_int(f"{group}.threads", t, 1, 1024))


def _lr_list(key: str, v: Any) -> list[float]:
    if not isinstance(v, (list, tuple)) and not OmegaConf.is_list(v):
        raise ConfigError(f"{key} must be a list (got {v!r})")
    return [check_float(f"{key}[{i}]", x, 0.0, MAX_LR) for i, x in enumerate(v)]


def _hidden_list(key: str, ranges: Any) -> list[int]:
    """[[a, b], ...] inclusive ranges (or plain ints) -> sorted unique hidden sizes."""
    out: list[int] = []
    for i, r in enumerate(ranges):
        if isinstance(r, int):
            out.append(check_int(f"{key}[{i}]", r, 1, MAX_WIDTH))
            continue
        if len(r) != 2:
            raise ConfigError(f"{key}[{i}] must be an int or an inclusive range [first, last] (got {r!r})")
        a = check_int(f"{key}[{i}][0]", r[0], 1, MAX_WIDTH)
        b = check_int(f"{key}[{i}][1]", r[1], a, MAX_WIDTH)
        out.extend(range(a, b + 1))
    return sorted(set(out))


def grid_specs(g: DictConfig, kind: str, n_features: int, seed: int) -> list[NetSpec]:
    """Every network of the grid: MLPs depth x width x lr, or autoencoders hidden x lr (family M1
    below the input size, M2 above)."""
    il = bool(g.get("input_layer", False))
    if kind == "mlp":
        depths = check_int_list("grid.depths", g.depths, 1, MAX_DEPTH)
        widths = check_int_list("grid.widths", g.widths, 1, MAX_WIDTH)
        lrs = _lr_list("grid.mlp_lrs", g.mlp_lrs)
        return [
            NetSpec(tuple(mlp_sizes(n_features, dp, w, 2, il)), lr, seed, {"depth": dp, "width": w, "lr": lr})
            for dp in depths
            for w in widths
            for lr in lrs
        ]
    hidden = _hidden_list("grid.ae_hidden", g.ae_hidden)
    lrs = _lr_list("grid.ae_lrs", g.ae_lrs)
    return [
        NetSpec(
            tuple(ae_sizes(n_features, h, il)),
            lr,
            seed,
            {"hidden": h, "lr": lr, "family": "M1" if h < n_features else ("M2" if h > n_features else "=")},
        )
        for h in hidden
        for lr in lrs
    ]


def grid_options(g: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """The keyword arguments of `train_sigmoid_grid` from the grid's config."""
    epochs = g.get("epochs") or cfg.trainer.get("max_epochs", 100)
    check_int("grid.epochs", epochs, 1, 1_000_000)
    if cfg.trainer.get("fast_dev_run"):  # one full-batch step per network, as Lightning's fits take one batch
        epochs = 1
    red = check_choice("grid.grad_reduction", g.get("grad_reduction", "mean"), ("mean", "sum"))
    stop = g.get("stop_energy", 0.01)
    if stop is not None:
        check_float("grid.stop_energy", stop, 0.0, 1e9)
    workers = g.get("workers", "auto")
    if workers == "auto":  # one chunk of networks per core this process may run on
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {
        "epochs": int(epochs),
        "grad_reduction": red,
        "bias": bool(g.get("bias", True)),
        "stop_energy": stop,
        "init_range": check_float("grid.init_range", g.get("init_range", 1.0), 0.0, 100.0),
        "workers": check_int("grid.workers", workers, 1, 4096),
        "chunk_units": check_int("grid.chunk_units", g.get("chunk_units", 1024), 1, 1 << 30),
    }
