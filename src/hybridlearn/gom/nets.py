"""The sigmoid networks of the GOM study: layer sizes, the shared U[-r, r] initialisation (the same
for a network trained alone or inside the vectorized grid), the energy and local output gradient."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def init_sigmoid_params(
    sizes: Sequence[int], seed: int, bias: bool, init_range: float = 1.0, dtype: torch.dtype = torch.float32
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Weights (and biases) ~ U[-r, r], drawn layer by layer from a private generator seeded with
    `seed`: the same network gets the same start whether trained alone or inside a vectorized grid."""
    g = torch.Generator().manual_seed(int(seed))
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = (torch.rand(fan_out, fan_in, generator=g, dtype=torch.float64) * 2 - 1) * init_range
        b = (torch.rand(fan_out, generator=g, dtype=torch.float64) * 2 - 1) * init_range if bias else None
        params.append((w.to(dtype), None if b is None else b.to(dtype)))
    return params


class SigmoidNet(nn.Module):
    """Fully connected, sigmoid after every layer (output included)."""

    def __init__(self, sizes: Sequence[int], seed: int, bias: bool = True, init_range: float | None = 1.0):
        super().__init__()
        self.sizes = list(sizes)
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=bias) for i, o in zip(sizes[:-1], sizes[1:]))
        if init_range is not None:
            with torch.no_grad():
                for lin, (w, b) in zip(self.layers, init_sigmoid_params(sizes, seed, bias, init_range)):
                    lin.weight.copy_(w)
                    if b is not None:
                        lin.bias.copy_(b)

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        for lin in self.layers[:upto]:
            x = torch.sigmoid(lin(x))
        return x


def energy_and_delta(y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample instant energy E_n = 1/2 sum_k e_k^2, mean delta_k = e_k y_k (1 - y_k), mean |delta_k|."""
    e = t - y
    delta = e * y * (1 - y)
    return (e * e).sum(-1).mul(0.5), delta.mean(), delta.abs().mean()


def mlp_sizes(n_inputs: int, depth: int, width: int, n_outputs: int = 2, input_layer: bool = False) -> list[int]:
    return [n_inputs] + ([n_inputs] if input_layer else []) + [width] * depth + [n_outputs]


def ae_sizes(n_inputs: int, hidden: int, input_layer: bool = False) -> list[int]:
    return [n_inputs] + ([n_inputs] if input_layer else []) + [hidden, n_inputs]
