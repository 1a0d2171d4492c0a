"""The handwriting augmentation (hybridlearn.mnist.augment), built from its declared settings
(moved here from tests/digits/test_digits_data.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import build
from omegaconf import OmegaConf

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.settings import check_settings
from hybridlearn.mnist.conf import HandwritingAugmentConfig
from hybridlearn.mnist.data import to_range


def test_augment_keeps_background_and_range():
    torch.manual_seed(0)
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0
    for vr in ("unit", "standard", "tanh"):
        xr = to_range(x, vr)
        aug = build(HandwritingAugmentConfig(value_range=vr))
        y = aug(xr)
        assert y.shape == xr.shape
        assert torch.allclose(y[:, :, 0, 0], xr[:, :, 0, 0])  # corners stay background
        assert y.min() >= xr.min() - 1e-5 and y.max() <= xr.max() + 1e-5
        assert not torch.allclose(y, xr)
        assert torch.allclose(build(HandwritingAugmentConfig(p=0.0, value_range=vr))(xr), xr, atol=1e-5)
    assert list(build(HandwritingAugmentConfig()).state_dict()) == []


def test_elastic_distortion_is_smooth_and_optional():
    torch.manual_seed(0)
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 6:22, 12:16] = 1.0
    plain = dict(rotate=0, shear=0, scale=[1, 1], translate=0, thickness=0, p=1.0, value_range="unit")
    assert torch.allclose(build(HandwritingAugmentConfig(**plain))(x), x, atol=1e-5)  # identity warp without elastic
    y = build(HandwritingAugmentConfig(**plain, elastic=1.0, elastic_sigma=4.0))(x)
    moved = (y - x).abs().sum((1, 2, 3))
    assert (moved > 1).all() and y.min() >= 0 and y.max() <= 1
    assert (y.sum((1, 2, 3)) - x.sum((1, 2, 3))).abs().max() < 0.25 * x[0].sum()  # a bend, not a smear
    assert torch.allclose(build(HandwritingAugmentConfig(**{**plain, "p": 0.0}, elastic=1.0))(x), x, atol=1e-5)
    with pytest.raises(ConfigError, match="augment.elastic must be >= 0"):
        check_settings(OmegaConf.structured(HandwritingAugmentConfig(elastic=-1, value_range="unit")), "augment")
