"""PyTorch ports of Magenta's arbitrary image stylization networks (Ghiasi et al. 2017).

Two modules, layer for layer as in the TF Lite exports of
google/magenta/arbitrary-image-stylization-v1-256 (see docs/style_video.md):

- `StylePredictor`: MobileNetV2 1.0 (TensorFlow "SAME" padding, ReLU6, BN folded) on a 256x256 RGB
  image in [0, 1] -> style vector z [B, 100].
- `StyleTransformer`: Magenta transformer (alpha 0.25): reflect-padded VALID convs, 5 residual
  blocks and nearest upsampling with 13 conditional instance norms whose beta / gamma are linear
  maps of z. Any H, W divisible by 4; input and output RGB in [0, 1].

Weights come from `hybridlearn.style.convert` (TF Lite flatbuffers -> state dicts). Layer
names below are the TF scope names, so the converter maps tensors by name.

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


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
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
            x = _same_pad(x, k, s)
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


def _fill(dst: torch.Tensor, x: torch.Tensor, relu: bool) -> None:
    """dst[...] = x, or relu(x) in the same pass (the ReLU before a padded conv costs no pass of its own)."""
    if relu:
        torch.clamp_min(x, 0, out=dst)
    else:
        dst.copy_(x)


def reflect_pad(x: torch.Tensor, p: int, relu: bool = False) -> torch.Tensor:
    """Reflect padding on all four sides (TF MirrorPad REFLECT), of relu(x) with `relu`.

    A channels-last CPU tensor is padded by copying into a channels-last buffer: torch's
    reflection_pad2d kernel is 5-10x slower on that layout (measured at 384x384)."""
    if not p:
        return x.relu() if relu else x
    if x.device.type != "cpu" or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return F.pad(x.relu() if relu else x, (p, p, p, p), mode="reflect")
    b, c, h, w = x.shape
    out = torch.empty((b, c, h + 2 * p, w + 2 * p), dtype=x.dtype, memory_format=torch.channels_last)
    src = out[:, :, p:-p, p:-p]  # (relu(x) with `relu`: the borders copy from it)
    _fill(src, x, relu)
    out[:, :, :p, p:-p] = src[:, :, 1 : p + 1].flip(2)
    out[:, :, -p:, p:-p] = src[:, :, -p - 1 : -1].flip(2)
    out[:, :, :, :p] = out[:, :, :, p + 1 : 2 * p + 1].flip(3)  # the corners come with the columns
    out[:, :, :, -p:] = out[:, :, :, -2 * p - 1 : -p - 1].flip(3)
    return out


class ReflectConv(nn.Conv2d):
    """Reflect pad k // 2 (of relu(x) with relu_input), then a VALID conv (in the weights' memory format)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(cin, cout, k, stride=stride, bias=True)

    def forward(self, x: torch.Tensor, relu_input: bool = False) -> torch.Tensor:
        x = reflect_pad(x, self.kernel_size[0] // 2, relu_input)
        if self.weight.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(
            memory_format=torch.channels_last
        ):
            x = x.contiguous(memory_format=torch.channels_last)  # (after a small-channel norm, see _cin_fused)
        return F.conv2d(x, self.weight, self.bias, self.stride)


def _empty_like_layout(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    fmt = (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        else torch.contiguous_format
    )
    return torch.empty((x.shape[0], x.shape[1], h, w), dtype=x.dtype, device=x.device, memory_format=fmt)


def pad_top_left(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Replicate-pad one row on top and one column on the left (keeps channels-last)."""
    h, w = x.shape[-2:]
    out = _empty_like_layout(x, h + 1, w + 1)
    _fill(out[:, :, 1:, 1:], x, relu)
    out[:, :, :1, 1:] = out[:, :, 1:2, 1:]
    out[:, :, :, :1] = out[:, :, :, 1:2]
    return out


def pad_replicate1(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Replicate-pad one pixel on all four sides (keeps channels-last)."""
    h, w = x.shape[-2:]
    out = _empty_like_layout(x, h + 2, w + 2)
    _fill(out[:, :, 1:-1, 1:-1], x, relu)
    out[:, :, :1, 1:-1] = out[:, :, 1:2, 1:-1]
    out[:, :, -1:, 1:-1] = out[:, :, -2:-1, 1:-1]
    out[:, :, :, :1] = out[:, :, :, 1:2]
    out[:, :, :, -1:] = out[:, :, :, -2:-1]
    return out


def depth_to_space2(x: torch.Tensor) -> torch.Tensor:
    """F.pixel_shuffle(x, 2) as one strided copy of a contiguous x: torch's CPU kernel took 0.75 ms
    per 640x360 frame, this 0.17 ms (same values, contiguous output)."""
    if not x.is_contiguous():
        return F.pixel_shuffle(x, 2)
    b, c4, h, w = x.shape
    return x.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


def reflect_pad4_s2d(y: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Reflect padding by 4 pixels of a full-resolution image given as its space-to-depth form
    (pixel_unshuffle(2): channel c * 4 + 2 * row phase + column phase), returned in that form.
    Reflection keeps the phase: padded s2d row -j takes phase 0 from row j and phase 1 from row
    j - 1; at the bottom, row n - 1 + j takes phase 0 from n - j and phase 1 from n - j - 1."""
    b, c4, n, m = y.shape
    out = _empty_like_layout(y, n + 4, m + 4)
    _fill(out[:, :, 2:-2, 2:-2], y, relu)
    v = out.unflatten(1, (c4 // 4, 2, 2))  # [B, C, row phase, column phase, H', W']
    for j in (1, 2):
        for a in (0, 1):  # rows (interior columns), then columns (all rows: the corners follow)
            v[:, :, a, :, 2 - j, 2:-2] = v[:, :, a, :, 2 + j - a, 2:-2]
            v[:, :, a, :, n + 1 + j, 2:-2] = v[:, :, a, :, n + 2 - j - a, 2:-2]
    for j in (1, 2):
        for a in (0, 1):
            v[:, :, :, a, :, 2 - j] = v[:, :, :, a, :, 2 + j - a]
            v[:, :, :, a, :, m + 1 + j] = v[:, :, :, a, :, m + 2 - j - a]
    return out


def s2d_conv_weight(w: torch.Tensor) -> torch.Tensor:
    """Weight [O, C, k, k] of a stride-1 VALID conv -> the same conv on space-to-depth input and
    output: [4 O, 4 C, (k + 1) // 2 + ..., ...] with channel order o * 4 + 2 * a + b (pixel_shuffle's)."""
    o, c, k, _ = w.shape
    kk = (k + 2) // 2
    out = w.new_zeros(o, 2, 2, c, 2, 2, kk, kk)
    for a in range(2):
        for b in range(2):
            for a2 in range(2):
                for b2 in range(2):
                    for di in range(kk):
                        for dj in range(kk):
                            ky, kx = 2 * di + a2 - a, 2 * dj + b2 - b
                            if 0 <= ky < k and 0 <= kx < k:
                                out[:, a, b, :, a2, b2, di, dj] = w[:, :, ky, kx]
    return out.reshape(4 * o, 4 * c, kk, kk)


def stride2_from_s2d_weight(w: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 conv on a reflect-padded (1) full-res image [O, C, 3, 3] -> 2x2 conv on its
    space-to-depth form padded by `pad_top_left`: [O, 4 C, 2, 2]. Tap row 0 (s2d row i - 1) is full
    row 2i - 1 (phase 1), tap row 1 is rows 2i (phase 0) and 2i + 1 (phase 1); the reflected row
    -1 is row 1, i.e. the replicated s2d row 0's phase 1."""
    o, c = w.shape[:2]
    out = w.new_zeros(o, c, 2, 2, 2, 2)  # [O, C, a, b, tap row, tap column]
    taps = {(0, 1): 0, (1, 0): 1, (1, 1): 2}  # (tap, phase) -> kernel index
    for (ti, a), ky in taps.items():
        for (tj, b), kx in taps.items():
            out[:, :, a, b, ti, tj] = w[:, :, ky, kx]
    return out.reshape(o, 4 * c, 2, 2)


def subpixel_up2_weight(w: torch.Tensor) -> torch.Tensor:
    """3x3 conv on reflect_pad(nearest_up2(x), 1) [O, C, 3, 3] -> 3x3 conv on replicate-padded x
    giving the space-to-depth output [4 O, C, 3, 3]: output row 2i + a reads up-sampled rows
    2i + a - 1 .. 2i + a + 1, i.e. source rows i + floor((a + ky - 1) / 2) (clamped = replicate)."""
    o, c = w.shape[:2]
    out = w.new_zeros(o, 2, 2, c, 3, 3)
    for a in range(2):
        for b in range(2):
            for ky in range(3):
                for kx in range(3):
                    out[:, a, b, :, (a + ky - 1) // 2 + 1, (b + kx - 1) // 2 + 1] += w[:, :, ky, kx]
    return out.reshape(4 * o, c, 3, 3)


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


class StyleTransformer(nn.Module):
    """Magenta transformer network (alpha 0.25), conditioned on a style vector.

    fused_norm: run each conditional instance norm as one native group_norm (groups = channels,
    per-channel gamma / beta) with in-place ReLU, instead of the reference sequence of mean,
    variance and affine ops (7 passes over the tensor -> 2). Used when the style parameters have
    batch 1 and no temporal smoothing is asked for (that needs the raw statistics); the
    reference path `_cin` is kept for those cases and as the specification.
    subpixel (with fused_norm): never build the full-resolution 8-channel maps. Their three
    convolutions run on the space-to-depth form (pixel_unshuffle(2)) at half resolution with
    rearranged weights: the 9x9 convs as 5x5 convs with 4x the channels, the stride-2 conv as a
    2x2 conv, the nearest-upsample + conv as a sub-pixel conv; instance norm over the 4 phases is
    group_norm with one group per channel. Same arithmetic, 3-4x faster convs on CPU (oneDNN is
    slow with 3 or 8 channels), and fewer full-resolution passes.
    """

    def __init__(self, fused_norm: bool = True, subpixel: bool = True) -> None:
        super().__init__()
        self.fused_norm, self.subpixel = fused_norm, subpixel
        self._s2d: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
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

    def prepare(self, dtype: torch.dtype, channels_last: bool) -> StyleTransformer:
        """Cast and lay out the convolutions for inference; the style maps (beta / gamma) stay as
        they are, so `style_params` keeps its precision whatever the compute dtype."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self._s2d = self._s2d_kernels(dtype, fmt) if self.subpixel else None  # from the weights before the cast
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.to(dtype=dtype, memory_format=fmt)
        return self

    def load_state_dict(self, *args, **kwargs):
        self._s2d = None
        return super().load_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _s2d_kernels(
        self, dtype: torch.dtype, fmt: torch.memory_format
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The rearranged weights of the subpixel path (see the class doc)."""

        def k(w, b):
            return w.to(dtype).contiguous(memory_format=fmt), b.to(dtype)

        c1, c2, e2, e3 = self.contract_conv1, self.contract_conv2, self.expand_conv2, self.expand_conv3
        return {
            "contract_conv1": k(s2d_conv_weight(c1.weight.float()), c1.bias.float().repeat_interleave(4)),
            "contract_conv2": k(stride2_from_s2d_weight(c2.weight.float()), c2.bias.float()),
            "expand_conv2": k(subpixel_up2_weight(e2.weight.float()), e2.bias.float().repeat_interleave(4)),
            "expand_conv3": k(s2d_conv_weight(e3.weight.float()), e3.bias.float().repeat_interleave(4)),
        }

    def style_params(self, z: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (beta, gamma), each [B, C], from z [B, 100]. Compute once per style."""
        return {n: (self.beta[n](z), self.gamma[n](z)) for n, _ in CIN_LAYERS}

    @staticmethod
    def _cin(x, name, params, temporal, cuts):
        beta, gamma = params[name]
        # two passes like TF's moments (mean, then mean squared difference); var_mean is slow on CPU
        xf = x.float()
        mean = xf.mean(dim=(2, 3), keepdim=True)
        var = (xf - mean).square_().mean(dim=(2, 3))
        mean = mean[:, :, 0, 0]
        if temporal is not None:
            mean, var = temporal.smooth(name, mean, var, cuts)
        scale = gamma.float() * torch.rsqrt(var + CIN_EPS)
        shift = beta.float() - mean * scale
        return torch.addcmul(shift[:, :, None, None].to(x.dtype), x, scale[:, :, None, None].to(x.dtype))

    def forward(
        self,
        x: torch.Tensor,
        params: dict[str, tuple[torch.Tensor, torch.Tensor]],
        temporal: TemporalStats | None = None,
        cuts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, 3, H, W] in [0, 1] (H, W divisible by 4); params from `style_params` with batch
        1 or B. Returns [B, 3, H, W] in [0, 1]."""
        b = x.shape[0]
        smoothing = temporal is not None and temporal.momentum > 0
        if self.fused_norm and not smoothing and all(be.shape[0] == 1 for be, _ in params.values()):
            return self._forward_subpixel(x, params) if self.subpixel else self._forward_fused(x, params)
        params = {k: (be.expand(b, -1), ga.expand(b, -1)) for k, (be, ga) in params.items()}
        x = F.relu(self.contract_conv1(x))
        x = F.relu(self.contract_conv2(x))
        x = F.relu(self.contract_conv3(x))
        for i in range(1, 6):
            y = self.get_submodule(f"residual{i}_conv1")(x)
            y = F.relu(self._cin(y, f"residual{i}_conv1", params, temporal, cuts))
            y = self.get_submodule(f"residual{i}_conv2")(y)
            x = x + self._cin(y, f"residual{i}_conv2", params, temporal, cuts)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.relu(self._cin(self.expand_conv1(x), "expand_conv1", params, temporal, cuts))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.relu(self._cin(self.expand_conv2(x), "expand_conv2", params, temporal, cuts))
        x = self._cin(self.expand_conv3(x), "expand_conv3", params, temporal, cuts)
        return torch.sigmoid(x)

    @staticmethod
    def _cin_fused(
        x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, relu: bool, phases: int = 1
    ) -> torch.Tensor:
        """CIN with style parameters shared by the batch: group_norm (one statistics pass, one
        affine pass; float accumulation for bf16 / fp16) + in-place ReLU. phases = 4: x is the
        space-to-depth form of a C-channel image (4 C channels, each channel's 4 phases together)."""
        if x.device.type == "cpu":
            if x.shape[1] < 16:  # torch's channels-last group_norm is ~20x slower with 3 to 12 channels
                x = x.contiguous()
        else:  # CUDA group_norm wants the weights in the input's dtype
            beta, gamma = beta.to(x.dtype), gamma.to(x.dtype)
        if phases > 1:
            beta, gamma = beta.repeat_interleave(phases, dim=1), gamma.repeat_interleave(phases, dim=1)
        y = F.group_norm(x, x.shape[1] // phases, gamma[0], beta[0], CIN_EPS)
        return y.relu_() if relu else y

    def _forward_fused(self, x: torch.Tensor, params: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The same network as `forward` with `_cin_fused` and in-place ops (no temporal state)."""

        def cin(y, name, relu):
            beta, gamma = params[name]
            return self._cin_fused(y, beta, gamma, relu)

        x = self.contract_conv1(x).relu_()
        x = self.contract_conv2(x).relu_()
        x = self.contract_conv3(x).relu_()
        x = self._residuals(x, cin)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = cin(self.expand_conv1(x), "expand_conv1", True)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = cin(self.expand_conv2(x), "expand_conv2", True)
        return cin(self.expand_conv3(x), "expand_conv3", False).sigmoid_()

    def _residuals(self, x: torch.Tensor, cin) -> torch.Tensor:
        """The five residual blocks, each conv followed by `cin(y, layer name, relu)` (both fast
        paths); the ReLU after the first norm is done by the second conv's padding."""
        for i in range(1, 6):
            y = cin(self.get_submodule(f"residual{i}_conv1")(x), f"residual{i}_conv1", False)
            x = cin(self.get_submodule(f"residual{i}_conv2")(y, relu_input=True), f"residual{i}_conv2", False).add_(x)
        return x

    def _forward_subpixel(self, x: torch.Tensor, params: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """`_forward_fused` with the full-resolution 8-channel layers on the space-to-depth form."""
        w = self.contract_conv1.weight
        if self._s2d is None or self._s2d["contract_conv1"][0].dtype != w.dtype:
            fmt = torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
            self._s2d = self._s2d_kernels(w.dtype, fmt)
        k = self._s2d
        fmt = torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format

        def conv(y, name):
            return F.conv2d(y.contiguous(memory_format=fmt), *k[name])

        def cin(y, name, relu, phases=1):
            beta, gamma = params[name]
            return self._cin_fused(y, beta, gamma, relu, phases)

        # each ReLU before a padded conv is done by the padding copy (relu=True)
        x = conv(F.pixel_unshuffle(reflect_pad(x, 4), 2), "contract_conv1")  # 8 ch as 32 at H/2
        x = conv(pad_top_left(x, relu=True), "contract_conv2")
        x = self.contract_conv3(x, relu_input=True).relu_()
        x = self._residuals(x, cin)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = cin(self.expand_conv1(x), "expand_conv1", False)
        # 8 ch as 32 at H/2
        x = cin(conv(pad_replicate1(x, relu=True), "expand_conv2"), "expand_conv2", False, phases=4)
        x = cin(conv(reflect_pad4_s2d(x, relu=True), "expand_conv3"), "expand_conv3", False, phases=4)
        return depth_to_space2(x.sigmoid_())
