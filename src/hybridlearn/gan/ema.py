"""An exponential moving average (EMA) of the generator's weights (Karras et al. 2018, Yazici et al.
2019): a smoother generator than the last step's, used for samples, FID, generate.py and predict.

After each generator step, for every parameter w of the generator and its average w_ema:

    w_ema <- d_t * w_ema + (1 - d_t) * w,   d_t = min(decay, (1 + t) / (10 + t)),

t the number of updates before this one (a buffer, so checkpoints carry it). The warm-up factor is
the one of TensorFlow's `ExponentialMovingAverage(num_updates=...)`: early on the average follows
the generator closely instead of staying at its random initial weights for ~1 / (1 - decay)
steps. Buffers (BatchNorm statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_factor(decay: float, t: int) -> float:
    """d_t: the weight of the old average at update t (0-based)."""
    return min(decay, (1 + t) / (10 + t))


class EMA(nn.Module):
    """`module`: a frozen copy of the network given, updated by `update(network)`."""

    def __init__(self, network: nn.Module, decay: float):
        super().__init__()
        self.decay = float(decay)
        self.module = copy.deepcopy(network).requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        d = ema_factor(self.decay, int(self.num_updates))
        for avg, w in zip(self.module.parameters(), network.parameters(), strict=True):
            avg.lerp_(w.detach(), 1.0 - d)  # avg + (1 - d) (w - avg) = d avg + (1 - d) w
        for avg, b in zip(self.module.buffers(), network.buffers(), strict=True):
            avg.copy_(b)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
