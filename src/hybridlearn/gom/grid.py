"""Vectorized training of many small sigmoid networks at once (the GOM grids in one process).

Every network of a grid is trained with exactly the algorithm of `SigmoidMLP` / `Autoencoder`
(full-batch gradient descent on the instant energy, same U[-1,1] init from the same seed, stop
when the average training energy < stop_energy), but all of them in one set of batched tensor ops:

- networks are grouped into chunks of equal layer count; inside a chunk hidden widths are
  zero-padded to a common size (padded units are masked to 0, so they never receive gradient and
  never influence the real units: the numbers are those of the unpadded network);
- the first layer of a chunk is one dense GEMM (all networks share the input), the others bmm;
  train and validation samples share the forward GEMMs (the validation loss of epoch e is read in
  the forward pass of epoch e + 1, with the same weights);
- gradients are written out by hand (backprop of the sigmoid/energy), learning rates are a
  per-network vector, and stopped networks get a zero step;
- a chunk runs all its epochs before the next starts, and is small enough (`chunk_units`) that
  its activations stay in the CPU cache; `workers` chunks train at once on separate cores.

Speed: benchmarks/bench_gom_grid.py (results in benchmarks/results_gom.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hybridlearn.gom.nets import init_sigmoid_params


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


PAD = 4  # hidden widths padded to a multiple of 4: ~2% waste on the AE grid, full GEMM speed
BIAS_Z = 64.0  # sigmoid(64) == 1.0 exactly in float32/64: the "bias unit" of a hidden layer


def padded_width(w: int, bias: bool = True) -> int:
    return PAD * math.ceil((w + bias) / PAD)


class _Chunk:
    """Networks with the same layer count and in/out sizes, trained together.

    Layout: weights W[l]: [G, out, in] (as nn.Linear), activations transposed, [G, width, samples],
    so that (a) the first layer of every network is ONE GEMM against the shared input, and (b) the
    train and validation samples go through the same GEMMs (columns [:n] and [n:]).

    Biases live inside the GEMMs (no separate pass over the activations): the input gets a row of
    ones, and the last padded unit of every hidden layer is a "bias unit" (incoming weights 0, bias
    BIAS_Z, so its activation is exactly 1 and its sigmoid derivative exactly 0: it never moves);
    the next layer's weight from it is that layer's bias. The other padded units compute
    sigmoid(0) = 0.5, but their outgoing weights are 0 and stay 0 (masked gradient), so they add
    exact zeros to the real units and receive zero gradient themselves.
    """

    def __init__(self, idx: list[int], specs: list[NetSpec], bias: bool, init_range: float, dtype: torch.dtype):
        self.idx = idx
        sizes = [specs[i].sizes for i in idx]
        nl = len(sizes[0]) - 1
        hidden = [max(padded_width(s[li], bias) for s in sizes) for li in range(1, nl)]
        self.pad = [sizes[0][0] + bias] + hidden + [sizes[0][-1]]  # inputs of layer li: pad[li]
        G = len(idx)
        self.G, self.nl, self.bias, self.sizes = G, nl, bias, sizes
        self.W = [torch.zeros(G, self.pad[li + 1], self.pad[li], dtype=dtype) for li in range(nl)]
        self.mask_in: list[torch.Tensor | None] = [None]
        for li in range(1, nl):
            m = torch.zeros(G, 1, self.pad[li], dtype=dtype)
            for g, s in enumerate(sizes):
                m[g, :, : s[li]] = 1
            if bias:
                m[:, :, -1] = 1
                self.W[li - 1][:, -1, -1] = BIAS_Z
            self.mask_in.append(None if bool((m == 1).all()) else m)
        for g, i in enumerate(idx):
            s = sizes[g]
            for li, (w, b) in enumerate(init_sigmoid_params(s, specs[i].seed, bias, init_range, dtype)):
                self.W[li][g, : s[li + 1], : s[li]] = w
                if b is not None:
                    self.W[li][g, : s[li + 1], -1] = b
        self.lr = torch.tensor([specs[i].lr for i in idx], dtype=dtype)
        self.bestW = [w.clone() for w in self.W]

    def units(self) -> int:
        return self.G * sum(self.pad[1:])

    def alloc(self, n: int, N: int) -> None:
        """Work buffers, reused by every epoch of the chunk (fresh multi-MB tensors each op would
        cost page faults, ~10% of the run); freed by release()."""
        G, dt = self.G, self.W[0].dtype
        self.A = [torch.empty(G, p, N, dtype=dt) for p in self.pad[1:]]  # activations; A[-1] becomes delta
        self.e = torch.empty(G, self.pad[-1], N, dtype=dt)
        self.dA = [torch.empty(G, p, n, dtype=dt) for p in self.pad[1:-1]]
        self.gW = [torch.empty_like(w) for w in self.W]

    def release(self) -> None:
        self.A = self.e = self.dA = self.gW = None

    def forward(self, xT: torch.Tensor) -> list[torch.Tensor]:
        """Activations [a_1 .. a_L], each [G, width, samples]; xT: [in (+1 row of ones), samples]."""
        G, p1 = self.G, self.pad[1]
        torch.mm(self.W[0].view(G * p1, -1), xT, out=self.A[0].view(G * p1, -1)).sigmoid_()
        for li in range(1, self.nl):
            torch.bmm(self.W[li], self.A[li - 1], out=self.A[li]).sigmoid_()
        return self.A

    def output_delta(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e = t - y and delta_k = e_k y_k (1 - y_k) of every sample; delta overwrites y."""
        y = self.A[-1]
        e = torch.sub(t, y, out=self.e)
        return e, y.addcmul_(y, y, value=-1).mul_(e)

    def step(self, delta: torch.Tensor, x: torch.Tensor, scale: torch.Tensor) -> None:
        """One full-batch gradient-descent step. delta: [G, K, n] of the n training columns; x: [n, in (+1)].
        L = coef * sum_n E_n, dL/dz_out = -coef * delta: descend with W += lr * coef * (delta a_prev^T).
        Overwrites the training columns of the hidden activations with a (1 - a)."""
        n = delta.shape[-1]
        dz = delta
        for li in range(self.nl - 1, -1, -1):
            gW = self.gW[li]
            if li > 0:
                a_prev = self.A[li - 1][..., :n]
                torch.bmm(dz, a_prev.transpose(1, 2), out=gW)
                if self.mask_in[li] is not None:
                    gW.mul_(self.mask_in[li])
                dz_prev = torch.bmm(self.W[li].transpose(1, 2), dz, out=self.dA[li - 1])
                dz_prev.mul_(a_prev.addcmul_(a_prev, a_prev, value=-1))  # sigmoid derivative a (1 - a)
            else:
                torch.mm(dz.view(self.G * self.pad[1], n), x, out=gW.view(self.G * self.pad[1], -1))
            self.W[li].add_(gW.mul_(scale))
            if li > 0:
                dz = dz_prev

    def save_best(self, improved: torch.Tensor) -> None:
        if bool(improved.all()):  # the common case while validation energy still falls
            for li in range(self.nl):
                self.bestW[li].copy_(self.W[li])
        elif bool(improved.any()):
            m = improved[:, None, None]
            for li in range(self.nl):
                torch.where(m, self.W[li], self.bestW[li], out=self.bestW[li])

    def unpack(self, g: int, best: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        s = self.sizes[g]
        W = self.bestW if best else self.W
        return [
            (W[li][g, : s[li + 1], : s[li]].clone(), W[li][g, : s[li + 1], -1].clone() if self.bias else None)
            for li in range(self.nl)
        ]


def make_chunks(
    specs: Sequence[NetSpec], bias: bool, init_range: float, dtype: torch.dtype, chunk_units: int = 1024
) -> list[_Chunk]:
    """Group networks by (layer count, in/out size, padded hidden widths), split each group into
    chunks of at most `chunk_units` activation rows (networks x padded widths); largest first."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        key = (len(s.sizes), s.sizes[0], s.sizes[-1]) + tuple(padded_width(w, bias) for w in s.sizes[1:-1])
        groups.setdefault(key, []).append(i)
    specs, chunks = list(specs), []
    for key, idx in sorted(groups.items()):
        per_net = sum(key[3:]) + key[2]
        n = max(1, chunk_units // per_net)
        k = math.ceil(len(idx) / n)  # equal-sized chunks rather than full ones and a small tail
        size = math.ceil(len(idx) / k)
        chunks += [_Chunk(idx[j : j + size], specs, bias, init_range, dtype) for j in range(0, len(idx), size)]
    return sorted(chunks, key=lambda c: -c.units())


def _train_chunk(
    ck: _Chunk,
    x: torch.Tensor,
    xT: torch.Tensor,
    tT: torch.Tensor,
    K: int,
    epochs: int,
    coef: float,
    stop_energy: float | None,
) -> dict[str, torch.Tensor]:
    """All epochs of one chunk. Per epoch: one forward of train + validation columns, then the
    step. S[ep] holds column sums of e^2, delta_k and |delta_k| (rows) over the train columns of
    epoch ep and the validation columns of the weights after step ep - 1 (cols); the histories are
    cut from it at the end, so the loop stays a few large ops."""
    n, N = x.shape[0], xT.shape[1]
    G, E = ck.G, epochs
    S = torch.zeros(E + 1, 3, 2, G, dtype=xT.dtype)
    active = torch.ones(G, dtype=torch.bool)
    stepped = active
    bval = torch.full((G,), math.inf, dtype=xT.dtype)
    bep = torch.zeros(G, dtype=torch.int64)
    nrun = torch.zeros(G, dtype=torch.int64)
    scale = (ck.lr * coef)[:, None, None]
    last = E
    ck.alloc(n, N)
    for ep in range(E + 1):
        ck.forward(xT)
        e, delta = ck.output_delta(tT)  # [G, K, samples]
        per_col = torch.stack([e.square_().sum(1), delta.sum(1)])  # per-sample sums over the K outputs
        S[ep, :2, 0] = per_col[..., :n].sum(-1)
        S[ep, :2, 1] = per_col[..., n:].sum(-1)
        if ep > 0:  # validation of the weights after step ep - 1
            v = S[ep, 0, 1] * (0.5 / (N - n))
            improved = stepped & (v < bval)
            bval = torch.where(improved, v, bval)
            bep = torch.where(improved, ep, bep)
            ck.save_best(improved)
            if ep == E or not bool(active.any()):
                S[ep, 2, 1] = delta[..., n:].abs_().sum((1, 2))
                last = ep
                break
        ck.step(delta[..., :n], x, scale)
        a = delta.abs_().sum(1)
        S[ep, 2, 0], S[ep, 2, 1] = a[:, :n].sum(-1), a[:, n:].sum(-1)
        nrun += active
        stepped = active
        if stop_energy:
            active = active & ~(S[ep, 0, 0] * (0.5 / n) < stop_energy)
            scale = (torch.where(active, ck.lr, 0) * coef)[:, None, None]
    ck.release()
    # histories [6, G, E]: train (energy, mean delta, mean |delta|) of epoch ep = row ep, validation = row ep + 1
    S = S.double()
    norm = torch.tensor([0.5, 1 / K, 1 / K], dtype=torch.float64)[:, None]
    H = torch.full((6, G, E), math.nan, dtype=torch.float64)
    H[:3, :, :last] = (S[:last, :, 0] * norm / n).permute(1, 2, 0)
    H[3:, :, :last] = (S[1 : last + 1, :, 1] * norm / (N - n)).permute(1, 2, 0)
    H = torch.where(torch.arange(E) < nrun[:, None], H, math.nan)
    return {"H": H, "nrun": nrun, "bval": bval.double(), "bep": bep}


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
    workers: int = 1,
    chunk_units: int = 1024,
) -> GridResult:
    """Train every network in `specs` (full-batch gradient descent) and return per-epoch histories,
    epochs run, best validation energy (and its params) per network.

    workers: chunks trained at once, each on one thread (torch's intra-op threads are set to 1
    meanwhile; the GIL is released inside the kernels). chunk_units: activation rows per chunk."""
    # One function of set-up around _train_chunk (the loop itself): what every chunk shares is built
    # once here, and the parity test against single Lightning runs reads it top to bottom.
    t0 = time.perf_counter()
    specs = list(specs)
    dtype = x_train.dtype
    M, E = len(specs), epochs
    coef = 1.0 if grad_reduction == "sum" else 1.0 / len(x_train)
    chunks = make_chunks(specs, bias, init_range, dtype, chunk_units)
    n, K = x_train.shape[0], y_train.shape[1]
    xs = torch.cat([x_train, x_val])
    if bias:  # a column of ones: the biases ride in the GEMMs
        xs = torch.cat([xs, torch.ones(len(xs), 1, dtype=dtype)], 1)
    xT = xs.T.contiguous()  # [in, train + val samples]
    x = xs[:n].contiguous()
    tT = torch.cat([y_train, y_val]).T.contiguous()

    def work(ck: _Chunk) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return _train_chunk(ck, x, xT, tT, K, E, coef, stop_energy)

    workers = max(1, min(int(workers), len(chunks)))
    if workers == 1:
        outs = [work(ck) for ck in chunks]
    else:
        from concurrent.futures import ThreadPoolExecutor

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as ex:
                outs = list(ex.map(work, chunks))
        finally:
            torch.set_num_threads(threads)

    hist = {k: np.full((M, E), np.nan) for k in ("te", "td", "tda", "ve", "vd", "vda")}
    epochs_run = np.zeros(M, dtype=np.int64)
    best_val = np.full(M, np.inf)
    best_epoch = np.zeros(M, dtype=np.int64)
    best_params: list = [None] * M
    final_params: list = [None] * M
    for ck, r in zip(chunks, outs):
        i = np.asarray(ck.idx)
        for key, row in zip(("te", "td", "tda", "ve", "vd", "vda"), r["H"].numpy()):
            hist[key][i] = row
        epochs_run[i], best_val[i], best_epoch[i] = r["nrun"].numpy(), r["bval"].numpy(), r["bep"].numpy()
        for g, j in enumerate(ck.idx):
            best_params[j] = ck.unpack(g, best=True)
            final_params[j] = ck.unpack(g, best=False)
    return GridResult(
        specs,
        hist["te"],
        hist["td"],
        hist["tda"],
        hist["ve"],
        hist["vd"],
        hist["vda"],
        epochs_run,
        best_val,
        best_epoch,
        best_params,
        final_params,
        time.perf_counter() - t0,
    )


def forward_params(params: list[tuple[torch.Tensor, torch.Tensor | None]], x: torch.Tensor) -> torch.Tensor:
    for w, b in params:
        x = x @ w.T
        if b is not None:
            x = x + b
        x = torch.sigmoid(x)
    return x
