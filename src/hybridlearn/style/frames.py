"""Stylized frames (float RGB in [0, 1]) to the bytes the writer needs, in torch on the model's threads.

The encoder takes yuv420p. Converting here, with the model's torch threads, replaces PyAV's
swscale conversion in the encode thread: on two cores every cycle of that thread stalls the model's
two OpenMP threads (the one it preempts holds up the other at the next barrier), while these few
tensor passes run in parallel between two forward passes. Same formulas as swscale's default:
BT.601, limited (MPEG) range, chroma of each 2x2 block averaged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Y, Cb, Cr of BT.601 on RGB in [0, 1], limited range (Y 16..235, Cb/Cr 16..240): offset, R, G, B
_BT601 = (
    (16.0, 65.481, 128.553, 24.966),
    (128.0, -37.797, -74.203, 112.0),
    (128.0, 112.0, -93.786, -18.214),
)


def to_uint8_rgb(y: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] float in [0, 1] -> uint8 [B, H, W, 3] (round to nearest)."""
    return y.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _plane(x: torch.Tensor, row: tuple[float, ...], out: torch.Tensor) -> None:
    """One BT.601 channel of x [B, 3, h, w] into the uint8 view out [B, h, w] (+0.5: rounded)."""
    off, r, g, b = row
    t = x[:, 0].mul(r).add_(x[:, 1], alpha=g).add_(x[:, 2], alpha=b).add_(off + 0.5).clamp_(0, 255)
    out.copy_(t)  # float -> uint8 truncates; the values are >= 0


def to_yuv420p(y: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] float RGB in [0, 1] (H, W even) -> uint8 [B, H * 3 // 2, W]: each frame's Y,
    U and V planes back to back, the layout of `av.VideoFrame.from_ndarray(..., format="yuv420p")`."""
    b, _, h, w = y.shape
    y = y.float().cpu()
    out = torch.empty(b, h * w * 3 // 2, dtype=torch.uint8)
    q = h * w // 4
    _plane(y, _BT601[0], out[:, : 4 * q].view(b, h, w))
    half = F.avg_pool2d(y, 2)  # chroma of each 2x2 block: the mean (the conversion is linear)
    _plane(half, _BT601[1], out[:, 4 * q : 5 * q].view(b, h // 2, w // 2))
    _plane(half, _BT601[2], out[:, 5 * q :].view(b, h // 2, w // 2))
    return out.view(b, h * 3 // 2, w).numpy()
