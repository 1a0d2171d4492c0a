"""Fast path 1 of the style transformer (`model.fused_norm=true, subpixel=false`): the reference
network (`style/nets.py`) with fewer passes over each activation.

- Each conditional instance norm is one native `group_norm` (groups = channels, the style's
  gamma / beta as its affine) instead of mean, variance and affine ops: 7 passes -> 2. When the
  statistics are smoothed over time (`TemporalStats`), or the style parameters differ per frame,
  the reference norm is used: group_norm does not expose its statistics.
- Reflect padding of a channels-last CPU tensor is a copy into a channels-last buffer (torch's
  reflection_pad2d kernel is 5-10x slower on that layout, measured at 384x384), and each ReLU that
  comes right before a padded conv is applied by that copy.
- ReLU, the residual add and the sigmoid run in place.

Same arithmetic as the reference; parity: tests/style/test_style_fused.py. Everything is read
from the network's parameters at each call (nothing derived is kept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridlearn.style.nets import CIN_EPS, StyleParams, StyleTransformer, TemporalStats, conditional_instance_norm


def fill(dst: torch.Tensor, x: torch.Tensor, relu: bool) -> None:
    """dst[...] = x, or relu(x) in the same pass (the ReLU before a padded conv costs no pass of its own)."""
    if relu:
        torch.clamp_min(x, 0, out=dst)
    else:
        dst.copy_(x)


def is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def empty_like_layout(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """An uninitialized [B, C, h, w] tensor in x's dtype, device and memory format."""
    fmt = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return torch.empty((x.shape[0], x.shape[1], h, w), dtype=x.dtype, device=x.device, memory_format=fmt)


def reflect_pad(x: torch.Tensor, p: int, relu: bool = False) -> torch.Tensor:
    """Reflect padding on all four sides (TF MirrorPad REFLECT), of relu(x) with `relu`; a
    channels-last CPU tensor by copies into a channels-last buffer (see the module doc)."""
    if not p:
        return x.relu() if relu else x
    if x.device.type != "cpu" or not is_channels_last(x):
        return F.pad(x.relu() if relu else x, (p, p, p, p), mode="reflect")
    b, c, h, w = x.shape
    out = empty_like_layout(x, h + 2 * p, w + 2 * p)
    src = out[:, :, p:-p, p:-p]  # (relu(x) with `relu`: the borders copy from it)
    fill(src, x, relu)
    out[:, :, :p, p:-p] = src[:, :, 1 : p + 1].flip(2)
    out[:, :, -p:, p:-p] = src[:, :, -p - 1 : -1].flip(2)
    out[:, :, :, :p] = out[:, :, :, p + 1 : 2 * p + 1].flip(3)  # the corners come with the columns
    out[:, :, :, -p:] = out[:, :, :, -2 * p - 1 : -p - 1].flip(3)
    return out


def conv_in_weight_layout(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """F.conv2d with x in the weight's memory format (after a small-channel norm x may be NCHW)."""
    if is_channels_last(weight) and not is_channels_last(x):
        x = x.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, stride)


def reflect_conv(conv: nn.Conv2d, x: torch.Tensor, relu_input: bool = False) -> torch.Tensor:
    """A `ReflectConv` of the reference net on relu(x) (relu_input) or x, padding by copies."""
    return conv_in_weight_layout(
        reflect_pad(x, conv.kernel_size[0] // 2, relu_input), conv.weight, conv.bias, conv.stride
    )


def group_norm_cin(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, phases: int = 1) -> torch.Tensor:
    """Conditional instance norm with style parameters [1, C] shared by the batch, as one group_norm
    (float accumulation for bf16 / fp16). phases = 4: x is the space-to-depth form of a C-channel
    image (4 C channels, each channel's 4 phases next to each other)."""
    if x.device.type == "cpu":
        if x.shape[1] < 16:  # torch's channels-last group_norm is ~20x slower with 3 to 12 channels
            x = x.contiguous()
    else:  # CUDA group_norm wants the weights in the input's dtype
        beta, gamma = beta.to(x.dtype), gamma.to(x.dtype)
    if phases > 1:
        beta, gamma = beta.repeat_interleave(phases, dim=1), gamma.repeat_interleave(phases, dim=1)
    return F.group_norm(x, x.shape[1] // phases, gamma[0], beta[0], CIN_EPS)


def make_cin(params: StyleParams, temporal: TemporalStats | None = None, cuts: torch.Tensor | None = None):
    """cin(y, layer name, relu, phases=1): group_norm when it computes the same thing, else the reference norm."""
    shared = all(b.shape[0] == 1 for b, _ in params.values())
    smoothing = temporal is not None and temporal.active

    def cin(y: torch.Tensor, name: str, relu: bool, phases: int = 1) -> torch.Tensor:
        beta, gamma = params[name]
        if shared and not smoothing:
            y = group_norm_cin(y, beta, gamma, phases)
        else:
            y = conditional_instance_norm(y, beta, gamma, name, temporal, cuts)
        return y.relu_() if relu else y

    return cin


def residual_blocks(net: StyleTransformer, x: torch.Tensor, cin) -> torch.Tensor:
    """The five residual blocks; the ReLU after each block's first norm is done by the second
    conv's padding copy."""
    for i in range(1, 6):
        y = cin(reflect_conv(net.get_submodule(f"residual{i}_conv1"), x), f"residual{i}_conv1", False)
        y = reflect_conv(net.get_submodule(f"residual{i}_conv2"), y, relu_input=True)
        x = cin(y, f"residual{i}_conv2", False).add_(x)
    return x


def fused_forward(
    net: StyleTransformer,
    x: torch.Tensor,
    params: StyleParams,
    temporal: TemporalStats | None = None,
    cuts: torch.Tensor | None = None,
) -> torch.Tensor:
    """`net(x, params, temporal, cuts)` computed with fused norms and padding copies (module doc)."""
    cin = make_cin(params, temporal, cuts)
    x = reflect_conv(net.contract_conv1, x)
    x = reflect_conv(net.contract_conv2, x, relu_input=True)
    x = reflect_conv(net.contract_conv3, x, relu_input=True).relu_()
    x = residual_blocks(net, x, cin)
    x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    x = cin(reflect_conv(net.expand_conv1, x), "expand_conv1", False)
    x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    x = cin(reflect_conv(net.expand_conv2, x, relu_input=True), "expand_conv2", False)
    return cin(reflect_conv(net.expand_conv3, x, relu_input=True), "expand_conv3", False).sigmoid_()
