"""Fast path 1 (style/fused.py) against the reference network (style/nets.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hybridlearn.style.fused import fused_forward, reflect_pad
from hybridlearn.style.nets import TemporalStats

sys.path.insert(0, str(Path(__file__).parent))
from style_nets_setup import clip_frames, psnr, reference, reference_nets, run_path  # noqa: E402


@pytest.fixture(scope="module")
def nets(data_dir, tmp_path_factory):
    return reference_nets(data_dir, tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def frames(data_dir):
    return clip_frames(data_dir)


def test_reflect_pad_matches_torch():
    x = torch.randn(2, 3, 9, 11)
    for p in (1, 4):
        assert torch.equal(reflect_pad(x, p), F.pad(x, (p, p, p, p), mode="reflect"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [1, 4])
def test_reflect_pad_channels_last_matches_torch(p, dtype):
    x = torch.randn(2, 8, 9, 11).to(dtype).contiguous(memory_format=torch.channels_last)
    y = reflect_pad(x, p)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, F.pad(x.contiguous(), (p, p, p, p), mode="reflect"))


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_reflect_pad_applies_relu_in_the_copy(fmt):
    """relu=True pads relu(x): the ReLU before a padded conv costs no pass of its own."""
    x = torch.randn(2, 8, 6, 10).contiguous(memory_format=fmt)
    for p in (1, 4):
        y = reflect_pad(x, p, True)
        assert torch.equal(y, reflect_pad(x.relu(), p)) and y.is_contiguous(memory_format=fmt)
    assert torch.equal(reflect_pad(x, 0, True), x.relu())


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_matches_reference_fp32(nets, frames, channels_last):
    _, t = nets
    ref = reference(t, frames)
    y = run_path(fused_forward, t, frames, channels_last=channels_last)
    assert y.shape == ref.shape
    assert float((y - ref).abs().max()) < 1e-4  # same math in fp32 (measured 1e-6)


def test_fused_with_temporal_smoothing_matches_reference(nets, frames):
    """With smoothed statistics the fused path uses the reference norm (group_norm hides them)."""
    _, t = nets
    ref = reference(t, frames, TemporalStats(0.5))
    for cl in (False, True):
        y = run_path(fused_forward, t, frames, channels_last=cl, temporal=TemporalStats(0.5))
        assert float((y - ref).abs().max()) < 1e-4
    assert float((ref - reference(t, frames)).abs().max()) > 1e-3  # (the smoothing did something)


def test_fused_bf16_psnr_against_fp32_reference(nets, frames):
    _, t = nets
    ref = reference(t, frames)
    y = run_path(fused_forward, t, frames, torch.bfloat16, channels_last=True)
    assert 38 < psnr(y, ref) < 80, psnr(y, ref)  # >= 35 dB: no visible loss; < 80: it did run in bf16
