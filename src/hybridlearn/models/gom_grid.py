"""Vectorized training of many small sigmoid networks at once (the GOM grids in one process).

Every network of a grid is trained with exactly the algorithm of `SigmoidMLP` / `Autoencoder`
(full-batch gradient descent on the instant energy, same U[-1,1] init from the same seed, stop
when the average training energy < stop_energy), but all of them in one set of batched tensor ops:

- networks are grouped into buckets of equal layer count; inside a bucket hidden widths are
  zero-padded to a common size (padded units are masked to 0, so they never receive gradient and
  never influence the real units: the numbers are those of the unpadded network);
- the first layer of a bucket is one dense GEMM (all networks share the input), the others bmm;
- gradients are written out by hand (backprop of the sigmoid/energy), learning rates are a
  per-network vector, and stopped networks get a zero step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from hybridlearn.models.gom import init_sigmoid_params


@dataclass
class NetSpec:
    sizes: tuple[int, ...]
    lr: float
    seed: int
    tag: dict[str, Any] = field(default_factory=dict)


@dataclass
class GridResult:
    specs: list[NetSpec]
    train_energy: np.ndarray  # [M, E], NaN after a network stopped
    train_delta: np.ndarray
    train_delta_abs: np.ndarray
    val_energy: np.ndarray
    val_delta: np.ndarray
    val_delta_abs: np.ndarray
    epochs_run: np.ndarray  # [M]
    best_val: np.ndarray  # [M]
    best_epoch: np.ndarray  # [M], 1-based
    best_params: list[list[tuple[torch.Tensor, torch.Tensor | None]]]
    final_params: list[list[tuple[torch.Tensor, torch.Tensor | None]]]
    seconds: float = 0.0


def padded_width(w: int) -> int:
    return 8 if w <= 8 else 16 * math.ceil(w / 16)


class _Bucket:
    """Networks with the same number of layers, hidden widths zero-padded to common sizes.

    Weights are stored transposed, WT[l]: [G, in, out], activations as [G, N, width]. A padded
    unit computes sigmoid(0) = 0.5 but its outgoing weights are 0 and stay 0 (their gradient is
    masked), so it adds exact zeros to the real units and receives zero gradient itself.
    """

    def __init__(self, idx: list[int], specs: list[NetSpec], bias: bool, init_range: float, dtype: torch.dtype):
        self.idx = idx
        sizes = [specs[i].sizes for i in idx]
        nl = len(sizes[0]) - 1
        n_in, n_out = sizes[0][0], sizes[0][-1]
        self.pad = [n_in] + [max(padded_width(s[l]) for s in sizes) for l in range(1, nl)] + [n_out]
        G = len(idx)
        self.G, self.nl, self.bias = G, nl, bias
        self.WT = [torch.zeros(G, self.pad[l], self.pad[l + 1], dtype=dtype) for l in range(nl)]
        self.b = [torch.zeros(G, self.pad[l + 1], dtype=dtype) for l in range(nl)]
        masks: list[torch.Tensor | None] = [None]
        for l in range(1, nl):
            m = torch.zeros(G, self.pad[l], 1, dtype=dtype)
            for g, s in enumerate(sizes):
                m[g, : s[l]] = 1
            masks.append(None if bool((m == 1).all()) else m)
        self.mask_in = masks
        for g, i in enumerate(idx):
            s = specs[i].sizes
            for l, (w, b) in enumerate(init_sigmoid_params(s, specs[i].seed, bias, init_range, dtype)):
                self.WT[l][g, : s[l], : s[l + 1]] = w.T
                if b is not None:
                    self.b[l][g, : s[l + 1]] = b
        self.lr = torch.tensor([specs[i].lr for i in idx], dtype=dtype)
        self.sizes = sizes
        self.bestWT = [w.clone() for w in self.WT]
        self.bestb = [b.clone() for b in self.b]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations [a_1 .. a_L], each [G, N, width] (a_0 = x is shared by all networks)."""
        a = x.expand(self.G, *x.shape)
        acts = []
        for l in range(self.nl):
            z = torch.baddbmm(self.b[l][:, None, :], a, self.WT[l]) if self.bias else torch.bmm(a, self.WT[l])
            a = torch.sigmoid_(z)
            acts.append(a)
        return acts

    @staticmethod
    def stats(y: torch.Tensor, t: torch.Tensor):
        """Average instant energy, mean delta_k, mean |delta_k| per network; and delta_k itself."""
        G, N, K = y.shape
        e = t - y
        energy = (e * e).sum(-1).mul_(0.5).mean(-1)  # same reduction order as energy_and_delta
        delta = torch.addcmul(y, y, y, value=-1).mul_(e)  # e_k * y_k (1 - y_k)
        dmean = delta.sum((1, 2)).div_(N * K)
        dabs = torch.linalg.vector_norm(delta, 1, dim=(1, 2)).div_(N * K)
        return energy, dmean, dabs, delta

    def step(self, x: torch.Tensor, t: torch.Tensor, coef: float, lr_eff: torch.Tensor):
        """One full-batch gradient-descent step of every network; returns pre-step statistics."""
        acts = self.forward(x)
        energy, dmean, dabs, delta = self.stats(acts[-1], t)
        # L = coef * sum_n E_n, dL/dz_out = -coef * delta: descend with W += lr * coef * (a_prev^T delta)
        scale = (lr_eff * coef)[:, None, None]
        dz = delta
        for l in range(self.nl - 1, -1, -1):
            if l > 0:
                a_prev = acts[l - 1]
                gWT = torch.bmm(a_prev.transpose(1, 2), dz)
                if self.mask_in[l] is not None:
                    gWT.mul_(self.mask_in[l])
                dz_prev = torch.bmm(dz, self.WT[l].transpose(1, 2)).mul_(torch.addcmul(a_prev, a_prev, a_prev, value=-1))
            else:
                gWT = torch.matmul(x.T, dz)
            if self.bias:
                self.b[l].add_(dz.sum(1).mul_(scale[:, :, 0]))
            self.WT[l].add_(gWT.mul_(scale))
            if l > 0:
                dz = dz_prev
        return energy, dmean, dabs

    def evaluate(self, x: torch.Tensor, t: torch.Tensor):
        energy, dmean, dabs, _ = self.stats(self.forward(x)[-1], t)
        return energy, dmean, dabs

    def save_best(self, improved: torch.Tensor) -> None:
        m = improved[:, None, None]
        for l in range(self.nl):
            self.bestWT[l] = torch.where(m, self.WT[l], self.bestWT[l])
            self.bestb[l] = torch.where(improved[:, None], self.b[l], self.bestb[l])

    def unpack(self, g: int, best: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        s = self.sizes[g]
        WT, b = (self.bestWT, self.bestb) if best else (self.WT, self.b)
        return [(WT[l][g, : s[l], : s[l + 1]].T.clone(), b[l][g, : s[l + 1]].clone() if self.bias else None)
                for l in range(self.nl)]


def make_buckets(specs: Sequence[NetSpec], bias: bool, init_range: float, dtype: torch.dtype,
                 max_bucket_elems: int = 1 << 30) -> list[_Bucket]:
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        key = (len(s.sizes), s.sizes[0], s.sizes[-1]) + tuple(padded_width(w) for w in s.sizes[1:-1])
        groups.setdefault(key, []).append(i)
    return [_Bucket(idx, list(specs), bias, init_range, dtype) for _, idx in sorted(groups.items())]


def train_sigmoid_grid(
    specs: Sequence[NetSpec],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    epochs: int = 100,
    grad_reduction: str = "mean",
    bias: bool = True,
    stop_energy: float | None = 0.01,
    init_range: float = 1.0,
    progress: Any = None,
) -> GridResult:
    """Train every network in `specs` (full-batch gradient descent) and return per-epoch histories,
    epochs run, best validation energy (and its params) per network."""
    t0 = time.perf_counter()
    specs = list(specs)
    dtype = x_train.dtype
    M, E = len(specs), epochs
    hist = {k: np.full((M, E), np.nan) for k in ("te", "td", "tda", "ve", "vd", "vda")}
    epochs_run = np.zeros(M, dtype=np.int64)
    best_val = np.full(M, np.inf)
    best_epoch = np.zeros(M, dtype=np.int64)
    coef = 1.0 if grad_reduction == "sum" else 1.0 / len(x_train)
    buckets = make_buckets(specs, bias, init_range, dtype)
    with torch.no_grad():
        for bk in buckets:
            idx = torch.as_tensor(bk.idx)
            G = bk.G
            active = torch.ones(G, dtype=torch.bool)
            bval = torch.full((G,), math.inf, dtype=torch.float64)
            bep = torch.zeros(G, dtype=torch.int64)
            nrun = torch.zeros(G, dtype=torch.int64)
            H = torch.full((6, G, E), math.nan, dtype=torch.float64)
            zero = torch.zeros_like(bk.lr)
            for ep in range(E):
                lr_eff = torch.where(active, bk.lr, zero)
                te, td, tda = bk.step(x_train, y_train, coef, lr_eff)
                ve, vd, vda = bk.evaluate(x_val, y_val)
                stats = torch.stack([te, td, tda, ve, vd, vda]).double()
                H[:, :, ep] = torch.where(active, stats, math.nan)
                nrun += active
                ved = stats[3]
                improved = active & (ved < bval)
                bval = torch.where(improved, ved, bval)
                bep = torch.where(improved, ep + 1, bep)
                bk.save_best(improved)
                if stop_energy:
                    active = active & ~(stats[0] < stop_energy)
                    if (ep % 5 == 4 or ep == E - 1) and not bool(active.any()):
                        break
            i = idx.numpy()
            for key, row in zip(("te", "td", "tda", "ve", "vd", "vda"), H.numpy()):
                hist[key][i] = row
            epochs_run[i], best_val[i], best_epoch[i] = nrun.numpy(), bval.numpy(), bep.numpy()
            if progress:
                progress(bk)
    best_params: list = [None] * M
    final_params: list = [None] * M
    for bk in buckets:
        for g, i in enumerate(bk.idx):
            best_params[i] = bk.unpack(g, best=True)
            final_params[i] = bk.unpack(g, best=False)
    return GridResult(specs, hist["te"], hist["td"], hist["tda"], hist["ve"], hist["vd"], hist["vda"],
                      epochs_run, best_val, best_epoch, best_params, final_params, time.perf_counter() - t0)


def forward_params(params: list[tuple[torch.Tensor, torch.Tensor | None]], x: torch.Tensor) -> torch.Tensor:
    for w, b in params:
        x = x @ w.T
        if b is not None:
            x = x + b
        x = torch.sigmoid(x)
    return x
