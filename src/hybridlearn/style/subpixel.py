"""Fast path 2 of the style transformer (`model.subpixel=true`, the default on CPU): never build
the full-resolution 8-channel maps of the reference network (`style/nets.py`).

Their three convolutions run on the space-to-depth form (pixel_unshuffle(2)) at half resolution
with rearranged weights: the 9x9 convs as 5x5 convs with 4x the channels, the stride-2 conv as a
2x2 conv, the nearest-upsample + conv as a sub-pixel conv; instance norm over the 4 phases is
group_norm with one group per channel. Same arithmetic, 3-4x faster convs on CPU (oneDNN is slow
with 3 or 8 channels), and fewer full-resolution passes. The rest is `style/fused.py`.

The rearranged weights are derived from the network's parameters at every call (a few small
einsums with constant 0/1 tap matrices, ~0.1 ms), so they follow any change of the weights:
`load_state_dict`, a dtype cast, an in-place edit. Parity: tests/style/test_style_subpixel.py.
No temporal smoothing here (it needs the raw statistics): `style/fused.py` does that.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from hybridlearn.style.fused import (
    conv_in_weight_layout,
    empty_like_layout,
    fill,
    group_norm_cin,
    is_channels_last,
    reflect_conv,
    reflect_pad,
    residual_blocks,
)
from hybridlearn.style.nets import StyleParams, StyleTransformer

# ----------------------------------------------------------------------------- paddings


def pad_top_left(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Replicate-pad one row on top and one column on the left (keeps channels-last)."""
    h, w = x.shape[-2:]
    out = empty_like_layout(x, h + 1, w + 1)
    fill(out[:, :, 1:, 1:], x, relu)
    out[:, :, :1, 1:] = out[:, :, 1:2, 1:]
    out[:, :, :, :1] = out[:, :, :, 1:2]
    return out


def pad_replicate1(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Replicate-pad one pixel on all four sides (keeps channels-last)."""
    h, w = x.shape[-2:]
    out = empty_like_layout(x, h + 2, w + 2)
    fill(out[:, :, 1:-1, 1:-1], x, relu)
    out[:, :, :1, 1:-1] = out[:, :, 1:2, 1:-1]
    out[:, :, -1:, 1:-1] = out[:, :, -2:-1, 1:-1]
    out[:, :, :, :1] = out[:, :, :, 1:2]
    out[:, :, :, -1:] = out[:, :, :, -2:-1]
    return out


def reflect_pad4_s2d(y: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Reflect padding by 4 pixels of a full-resolution image given as its space-to-depth form
    (pixel_unshuffle(2): channel c * 4 + 2 * row phase + column phase), returned in that form.
    Reflection keeps the phase: padded s2d row -j takes phase 0 from row j and phase 1 from row
    j - 1; at the bottom, row n - 1 + j takes phase 0 from n - j and phase 1 from n - j - 1."""
    b, c4, n, m = y.shape
    out = empty_like_layout(y, n + 4, m + 4)
    fill(out[:, :, 2:-2, 2:-2], y, relu)
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


def depth_to_space2(x: torch.Tensor) -> torch.Tensor:
    """F.pixel_shuffle(x, 2) as one strided copy of a contiguous x: torch's CPU kernel took 0.75 ms
    per 640x360 frame, this 0.17 ms (same values, contiguous output)."""
    if not x.is_contiguous():
        return F.pixel_shuffle(x, 2)
    b, c4, h, w = x.shape
    return x.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


# ----------------------------------------------------------------------------- weights
# Each rearrangement sums kernel taps of the full-resolution conv into the new kernel: a constant
# 0/1 tap matrix T[..., kernel index] per spatial axis (built once per device: it does not depend
# on the weights) applied to rows and columns, in fp32, then cast back to the weight's dtype.


@functools.cache
def _taps(kind: str, k: int, device: torch.device) -> torch.Tensor:
    """s2d: T[out phase a, in phase a2, tap d, kernel row] = 1 where row = 2 d + a2 - a.
    stride2: T[phase a, tap, kernel row] = 1 where row = 2 tap + a - 1.
    up2: T[out phase a, source row r, kernel row] = 1 where r = floor((a + row - 1) / 2) + 1."""
    if kind == "s2d":
        sizes, where = (2, 2, (k + 2) // 2, k), lambda a, a2, d, ky: ky == 2 * d + a2 - a
    elif kind == "stride2":
        sizes, where = (2, 2, k), lambda a, tap, ky: ky == 2 * tap + a - 1
    else:
        sizes, where = (2, 3, k), lambda a, r, ky: r == torch.div(a + ky - 1, 2, rounding_mode="floor") + 1
    grids = torch.meshgrid(*[torch.arange(n, device=device) for n in sizes], indexing="ij")
    return where(*grids).float()


def _apply_taps(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """[O, C, k, k] -> [O, C, *T's other axes (rows), *T's other axes (columns)], in fp32."""
    rows = torch.tensordot(w.float(), t, dims=([2], [t.dim() - 1]))  # [O, C, kx, *rows]
    return torch.tensordot(rows, t, dims=([2], [t.dim() - 1]))


def s2d_conv_weight(w: torch.Tensor) -> torch.Tensor:
    """Weight [O, C, k, k] of a stride-1 VALID conv -> the same conv on space-to-depth input and
    output: [4 O, 4 C, (k + 2) // 2, ...] with channel order o * 4 + 2 * a + b (pixel_shuffle's)."""
    o, c, k, _ = w.shape
    out = _apply_taps(w, _taps("s2d", k, w.device))  # [O, C, a, a2, d, b, b2, e]
    out = out.permute(0, 2, 5, 1, 3, 6, 4, 7)  # [O, a, b, C, a2, b2, d, e]
    return out.reshape(4 * o, 4 * c, (k + 2) // 2, (k + 2) // 2).to(w.dtype)


def stride2_from_s2d_weight(w: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 conv on a reflect-padded (1) full-res image [O, C, 3, 3] -> 2x2 conv on its
    space-to-depth form padded by `pad_top_left`: [O, 4 C, 2, 2]. Tap row 0 (s2d row i - 1) is full
    row 2i - 1 (phase 1, kernel row 0), tap row 1 is rows 2i (phase 0, kernel row 1) and 2i + 1
    (phase 1, kernel row 2); the reflected row -1 is row 1, i.e. the replicated s2d row 0's phase 1."""
    o, c = w.shape[:2]
    out = _apply_taps(w, _taps("stride2", 3, w.device))  # [O, C, a, tap row, b, tap column]
    return out.permute(0, 1, 2, 4, 3, 5).reshape(o, 4 * c, 2, 2).to(w.dtype)


def subpixel_up2_weight(w: torch.Tensor) -> torch.Tensor:
    """3x3 conv on reflect_pad(nearest_up2(x), 1) [O, C, 3, 3] -> 3x3 conv on replicate-padded x
    giving the space-to-depth output [4 O, C, 3, 3]: output row 2i + a reads up-sampled rows
    2i + a - 1 .. 2i + a + 1, i.e. source rows i + floor((a + ky - 1) / 2) (clamped = replicate)."""
    o, c = w.shape[:2]
    out = _apply_taps(w, _taps("up2", 3, w.device))  # [O, C, a, r, b, s]
    return out.permute(0, 2, 4, 1, 3, 5).reshape(4 * o, c, 3, 3).to(w.dtype)


def subpixel_weights(net: StyleTransformer) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of the four rearranged convs, from the network's current parameters, in
    their dtype and memory format."""

    def layout(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return w.contiguous(memory_format=torch.channels_last if is_channels_last(like) else torch.contiguous_format)

    c1, c2, e2, e3 = net.contract_conv1, net.contract_conv2, net.expand_conv2, net.expand_conv3
    return {
        "contract_conv1": (layout(s2d_conv_weight(c1.weight), c1.weight), c1.bias.repeat_interleave(4)),
        "contract_conv2": (layout(stride2_from_s2d_weight(c2.weight), c2.weight), c2.bias),
        "expand_conv2": (layout(subpixel_up2_weight(e2.weight), e2.weight), e2.bias.repeat_interleave(4)),
        "expand_conv3": (layout(s2d_conv_weight(e3.weight), e3.weight), e3.bias.repeat_interleave(4)),
    }


# ----------------------------------------------------------------------------- forward


def subpixel_forward(net: StyleTransformer, x: torch.Tensor, params: StyleParams, temporal=None, cuts=None):
    """`net(x, params)` for style parameters [1, C] shared by the batch and no temporal smoothing."""
    if (temporal is not None and temporal.active) or any(b.shape[0] != 1 for b, _ in params.values()):
        raise ValueError("subpixel_forward: one style for the batch and no temporal smoothing (use fused_forward)")
    k = subpixel_weights(net)

    def conv(y, name):
        return conv_in_weight_layout(y, *k[name])

    def cin(y, name, relu, phases=1):
        beta, gamma = params[name]
        y = group_norm_cin(y, beta, gamma, phases)
        return y.relu_() if relu else y

    # each ReLU before a padded conv is done by the padding copy (relu=True)
    x = conv(F.pixel_unshuffle(reflect_pad(x, 4), 2), "contract_conv1")  # 8 ch as 32 at H/2
    x = conv(pad_top_left(x, relu=True), "contract_conv2")
    x = reflect_conv(net.contract_conv3, x, relu_input=True).relu_()
    x = residual_blocks(net, x, cin)
    x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    x = cin(reflect_conv(net.expand_conv1, x), "expand_conv1", False)
    # 8 ch as 32 at H/2
    x = cin(conv(pad_replicate1(x, relu=True), "expand_conv2"), "expand_conv2", False, phases=4)
    x = cin(conv(reflect_pad4_s2d(x, relu=True), "expand_conv3"), "expand_conv3", False, phases=4)
    return depth_to_space2(x.sigmoid_())
