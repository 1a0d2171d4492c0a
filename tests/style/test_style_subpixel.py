"""Fast path 2 (style/subpixel.py) against the reference network (style/nets.py), and its derived
weights, which must follow every change of the parameters."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hybridlearn.style.fused import reflect_pad
from hybridlearn.style.model import prepare_transformer
from hybridlearn.style.nets import StyleTransformer, TemporalStats
from hybridlearn.style.stylize import style_model
from hybridlearn.style.subpixel import (
    depth_to_space2,
    pad_replicate1,
    pad_top_left,
    reflect_pad4_s2d,
    s2d_conv_weight,
    stride2_from_s2d_weight,
    subpixel_forward,
    subpixel_up2_weight,
)

sys.path.insert(0, str(Path(__file__).parent))
from style_nets_setup import clip_frames, psnr, reference, reference_nets, run_path, style_params  # noqa: E402


@pytest.fixture(scope="module")
def nets(data_dir, tmp_path_factory):
    return reference_nets(data_dir, tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def frames(data_dir):
    return clip_frames(data_dir)


def test_pieces_match_full_resolution_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 16, generator=g)
    w, b = torch.randn(8, 3, 9, 9, generator=g), torch.randn(8, generator=g)
    full = F.conv2d(reflect_pad(x, 4), w, b)
    s2d = F.conv2d(F.pixel_unshuffle(reflect_pad(x, 4), 2), s2d_conv_weight(w), b.repeat_interleave(4))
    assert torch.allclose(F.pixel_shuffle(s2d, 2), full, atol=1e-4)
    w2 = torch.randn(16, 8, 3, 3, generator=g)
    ref = F.conv2d(reflect_pad(full, 1), w2, stride=2)
    assert torch.allclose(F.conv2d(pad_top_left(s2d), stride2_from_s2d_weight(w2)), ref, atol=1e-3)
    x16, w3 = torch.rand(1, 16, 6, 8, generator=g), torch.randn(8, 16, 3, 3, generator=g)
    ref = F.conv2d(reflect_pad(F.interpolate(x16, scale_factor=2.0, mode="nearest"), 1), w3)
    up = F.conv2d(pad_replicate1(x16), subpixel_up2_weight(w3))
    assert torch.allclose(F.pixel_shuffle(up, 2), ref, atol=1e-4)
    for fmt in (torch.contiguous_format, torch.channels_last):
        padded = reflect_pad4_s2d(up.contiguous(memory_format=fmt))
        assert torch.equal(F.pixel_shuffle(padded.contiguous(), 2), reflect_pad(F.pixel_shuffle(up, 2), 4))
    for t in (up, up.bfloat16(), up.contiguous(memory_format=torch.channels_last)):  # (the strided copy)
        assert torch.equal(depth_to_space2(t), F.pixel_shuffle(t, 2))


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_paddings_apply_relu_in_the_copy(fmt):
    x = torch.randn(2, 8, 6, 10).contiguous(memory_format=fmt)
    for pad in (pad_top_left, pad_replicate1, reflect_pad4_s2d):
        y = pad(x, True)
        assert torch.equal(y, pad(x.relu(), False)) and float(y.min()) == 0.0
        if pad is not reflect_pad4_s2d:
            assert y.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_matches_reference_fp32(nets, frames, channels_last):
    _, t = nets
    ref = reference(t, frames)
    y = run_path(subpixel_forward, t, frames, channels_last=channels_last)
    assert y.shape == ref.shape
    assert float((y - ref).abs().max()) < 1e-4  # same arithmetic, other summation order (measured 3e-5)


def test_subpixel_bf16_psnr_against_fp32_reference(nets, frames):
    _, t = nets
    y = run_path(subpixel_forward, t, frames, torch.bfloat16, channels_last=True)
    assert 38 < psnr(y, reference(t, frames)) < 80


def test_subpixel_refuses_what_it_cannot_compute(nets, frames):
    _, t = nets
    with pytest.raises(ValueError, match="no temporal smoothing"):
        run_path(subpixel_forward, t, frames, temporal=TemporalStats(0.5))


def test_derived_weights_follow_an_in_place_edit(nets, frames):
    """No stale cache: an in-place edit of a conv weight changes the next output, which still
    equals the reference computed with the edited weights."""
    net = copy.deepcopy(nets[1])
    params = style_params(net)
    with torch.inference_mode():
        before = subpixel_forward(net, frames, params)
    with torch.no_grad():
        for conv in (net.contract_conv1, net.contract_conv2, net.expand_conv2, net.expand_conv3):
            conv.weight.mul_(2)
    with torch.inference_mode():
        after, ref = subpixel_forward(net, frames, params), net(frames, params)
    assert float((after - before).abs().max()) > 0.05
    assert float((after - ref).abs().max()) < 1e-4


def test_model_output_follows_weight_edits_and_casts(data_dir, frames, tmp_path):
    """The same through StyleTransfer: after an in-place edit, a load_state_dict and a dtype round
    trip (bf16 -> fp32), its output is the reference's with the current weights."""
    m = style_model("starry_night.jpg", cache_dir=str(tmp_path), precision="fp32")
    assert m.transformer_path() is subpixel_forward

    def check(label):
        with torch.inference_mode():
            y = m.stylize_tensor(frames)
            ref = StyleTransformer.__call__(m.transformer, frames, m.params)
        assert float((y - ref).abs().max()) < 1e-4, label
        return y

    y0 = check("as loaded")
    with torch.no_grad():  # (not a scaling: the instance norm after the conv would undo it)
        w = m.transformer.expand_conv3.weight
        w.add_(0.2 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
    y1 = check("in-place edit")
    assert float((y1 - y0).abs().max()) > 0.05
    m.transformer.load_state_dict(
        {k: v.clone() for k, v in m.transformer.state_dict().items()}
        | {"contract_conv1.weight": m.transformer.contract_conv1.weight.detach() * 1.5}
    )
    check("load_state_dict")
    prepare_transformer(m.transformer, torch.bfloat16, True)
    prepare_transformer(m.transformer, torch.float32, False)
    check("dtype round trip")
