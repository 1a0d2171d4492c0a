"""PyTorch ports of Magenta's arbitrary image stylization networks (Ghiasi et al. 2017): the reference.

Two modules, layer for layer as in the TF Lite exports of
google/magenta/arbitrary-image-stylization-v1-256 (see docs/style_video.md):

- `StylePredictor`: MobileNetV2 1.0 (TensorFlow "SAME" padding, ReLU6, BN folded) on a 256x256 RGB
  image in [0, 1] -> style vector z [B, 100].
- `StyleTransformer`: Magenta transformer (alpha 0.25): reflect-padded VALID convs, 5 residual
  blocks and nearest upsampling with 13 conditional instance norms whose beta / gamma are linear
  maps of z. Any H, W divisible by 4; input and output RGB in [0, 1].

Weights come from `hybridlearn.style.convert` (TF Lite flatbuffers -> state dicts). Layer
names below are the TF scope names, so the converter maps tensors by name.

This file is the specification: plain ops in the order of the TF graph. The fast CPU paths run
the same parameters through other ops, each in its own module with a parity test against
`StyleTransformer.forward`: `style/fused.py` (one group_norm per instance norm, padding copies
that keep channels-last) and `style/subpixel.py` (the full-resolution 8-channel layers on the
space-to-depth form). Neither keeps anything derived from the weights between calls.

`StyleTransformer.forward` optionally smooths the instance-norm statistics over time (frames of a
batch are consecutive frames of a video): `TemporalStats` carries an exponential moving average
of each layer's per-channel mean and variance from frame to frame, which removes most global
colour / contrast flicker of per-frame stylization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

STYLE_DIM = 100
CIN_EPS = 1e-5

# (expansion t, out channels c, stride s) for expanded_conv_1..16
MOBILENET_V2_BLOCKS = [
    (6, 24, 2),
    (6, 24, 1),
    (6, 32, 2),
    (6, 32, 1),
    (6, 32, 1),
    (6, 64, 2),
    (6, 64, 1),
    (6, 64, 1),
    (6, 64, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 96, 1),
    (6, 160, 2),
    (6, 160, 1),
    (6, 160, 1),
    (6, 320, 1),
]


def same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TensorFlow SAME padding: the extra pixel of an odd total goes bottom / right."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class SameConv(nn.Conv2d):
    """Conv2d with TF SAME padding and an optional fused ReLU6."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu6: bool = True):
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=True)
        self.relu6 = relu6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if k > 1:
            x = same_pad(x, k, s)
        x = F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)
        return F.relu6(x) if self.relu6 else x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, t: int, cout: int, stride: int):
        super().__init__()
        hidden = cin * t
        self.expand = SameConv(cin, hidden, 1) if t != 1 else None
        self.depthwise = SameConv(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = SameConv(hidden, cout, 1, relu6=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class StylePredictor(nn.Module):
    """MobileNetV2 style prediction network: [B, 3, 256, 256] in [0, 1] -> z [B, 100]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = SameConv(3, 32, 3, stride=2)
        blocks = [InvertedResidual(32, 1, 16, 1)]
        cin = 16
        for t, c, s in MOBILENET_V2_BLOCKS:
            blocks.append(InvertedResidual(cin, t, c, s))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.conv_1 = SameConv(320, 1280, 1)
        self.bottleneck = nn.Linear(1280, STYLE_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        for b in self.blocks:
            x = b(x)
        x = self.conv_1(x).mean(dim=(2, 3))
        return self.bottleneck(x)


class ReflectConv(nn.Conv2d):
    """TF MirrorPad REFLECT by k // 2 on all four sides, then a VALID conv."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(cin, cout, k, stride=stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size[0] // 2
        return F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), self.weight, self.bias, self.stride)


# conditional instance norm layers of the transformer, in forward order: (name, channels)
CIN_LAYERS = [(f"residual{i}_conv{j}", 32) for i in range(1, 6) for j in (1, 2)] + [
    ("expand_conv1", 16),
    ("expand_conv2", 8),
    ("expand_conv3", 3),
]


@dataclass
class TemporalStats:
    """Exponential moving average of the instance-norm statistics across consecutive frames.

    momentum m: stats_t = m * stats_{t-1} + (1 - m) * raw_t (0 = off). `reset()` at scene cuts.
    """

    momentum: float = 0.0
    state: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.momentum > 0

    def reset(self) -> None:
        self.state.clear()

    def smooth(self, name: str, mean: torch.Tensor, var: torch.Tensor, cuts: torch.Tensor | None):
        m = self.momentum
        if m <= 0:
            return mean, var
        means, varis = [], []
        prev = self.state.get(name)
        for b in range(mean.shape[0]):
            cur_m, cur_v = mean[b], var[b]
            if prev is not None and not (cuts is not None and bool(cuts[b])):
                cur_m = m * prev[0] + (1 - m) * cur_m
                cur_v = m * prev[1] + (1 - m) * cur_v
            prev = (cur_m, cur_v)
            means.append(cur_m)
            varis.append(cur_v)
        self.state[name] = prev
        return torch.stack(means), torch.stack(varis)


def conditional_instance_norm(
    x: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    name: str = "",
    temporal: TemporalStats | None = None,
    cuts: torch.Tensor | None = None,
) -> torch.Tensor:
    """gamma * (x - mean) / sqrt(var + eps) + beta per sample and channel; beta / gamma [B or 1, C]
    (the style's). Statistics in fp32, two passes like TF's moments (mean, then the mean squared
    difference); `temporal` smooths them over frames (layer `name`)."""
    xf = x.float()
    mean = xf.mean(dim=(2, 3), keepdim=True)
    var = (xf - mean).square_().mean(dim=(2, 3))
    mean = mean[:, :, 0, 0]
    if temporal is not None:
        mean, var = temporal.smooth(name, mean, var, cuts)
    scale = gamma.float() * torch.rsqrt(var + CIN_EPS)
    shift = beta.float() - mean * scale
    return torch.addcmul(shift[:, :, None, None].to(x.dtype), x, scale[:, :, None, None].to(x.dtype))


StyleParams = dict[str, tuple[torch.Tensor, torch.Tensor]]


class StyleTransformer(nn.Module):
    """Magenta transformer network (alpha 0.25), conditioned on a style vector."""

    def __init__(self) -> None:
        super().__init__()
        self.contract_conv1 = ReflectConv(3, 8, 9)
        self.contract_conv2 = ReflectConv(8, 16, 3, stride=2)
        self.contract_conv3 = ReflectConv(16, 32, 3, stride=2)
        for i in range(1, 6):
            for j in (1, 2):
                setattr(self, f"residual{i}_conv{j}", ReflectConv(32, 32, 3))
        self.expand_conv1 = ReflectConv(32, 16, 3)
        self.expand_conv2 = ReflectConv(16, 8, 3)
        self.expand_conv3 = ReflectConv(8, 3, 9)
        # StyleNorm/Conv (beta) and StyleNorm/Conv_1 (gamma): Linear 100 -> C per CIN layer
        self.beta = nn.ModuleDict({n: nn.Linear(STYLE_DIM, c) for n, c in CIN_LAYERS})
        self.gamma = nn.ModuleDict({n: nn.Linear(STYLE_DIM, c) for n, c in CIN_LAYERS})

    def style_params(self, z: torch.Tensor) -> StyleParams:
        """Per-layer (beta, gamma), each [B, C], from z [B, 100]. Compute once per style."""
        return {n: (self.beta[n](z), self.gamma[n](z)) for n, _ in CIN_LAYERS}

    def forward(
        self,
        x: torch.Tensor,
        params: StyleParams,
        temporal: TemporalStats | None = None,
        cuts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, 3, H, W] in [0, 1] (H, W divisible by 4); params from `style_params` with batch
        1 or B. Returns [B, 3, H, W] in [0, 1]."""

        def cin(y, name):
            beta, gamma = params[name]
            return conditional_instance_norm(y, beta, gamma, name, temporal, cuts)

        x = F.relu(self.contract_conv1(x))
        x = F.relu(self.contract_conv2(x))
        x = F.relu(self.contract_conv3(x))
        for i in range(1, 6):
            y = F.relu(cin(self.get_submodule(f"residual{i}_conv1")(x), f"residual{i}_conv1"))
            x = x + cin(self.get_submodule(f"residual{i}_conv2")(y), f"residual{i}_conv2")
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.relu(cin(self.expand_conv1(x), "expand_conv1"))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.relu(cin(self.expand_conv2(x), "expand_conv2"))
        return torch.sigmoid(cin(self.expand_conv3(x), "expand_conv3"))
