"""Unit tests of the small core pieces: config checkers, atomic writers, the table writer,
statistics, md5-checked downloads and the checkpoint loader's one-line errors."""

from __future__ import annotations

import math

import pytest

from hybridlearn.core.config import check_bool, check_choice, check_float, check_fraction, check_int
from hybridlearn.core.errors import ConfigError


# ----------------------------------------------------------------------------- checkers
def test_check_int_bounds_and_types():
    assert check_int("data.batch_size", 1, 1, 8) == 1 and check_int("data.batch_size", 8, 1, 8) == 8
    for bad in (0, 9, 2.0, True, "2", None):
        with pytest.raises(ConfigError, match=r"data.batch_size must be an integer in \[1, 8\]"):
            check_int("data.batch_size", bad, 1, 8)


def test_check_float_is_open_below_and_closed_above():
    assert check_float("model.lr", 1, 0.0, 1.0) == 1.0 and isinstance(check_float("model.lr", 1, 0.0, 1.0), float)
    for bad in (0.0, 1.5, math.nan, math.inf, True, "0.1"):
        with pytest.raises(ConfigError, match=r"model.lr must be a number in \(0.0, 1.0\]"):
            check_float("model.lr", bad, 0.0, 1.0)


def test_check_choice_names_the_choices():
    assert check_choice("model.backend", "torch", ("torch", "tflite")) == "torch"
    with pytest.raises(ConfigError, match="model.backend must be one of torch, tflite \\(got 'onnx'\\)"):
        check_choice("model.backend", "onnx", ("torch", "tflite"))


def test_check_bool_accepts_only_bools():
    assert check_bool("overwrite", True) is True and check_bool("overwrite", False) is False
    for bad in (1, 0, "true", None):
        with pytest.raises(ConfigError, match="overwrite must be true or false"):
            check_bool("overwrite", bad)


def test_check_fraction_closed_and_half_open():
    assert check_fraction("model.strength", 0) == 0.0 and check_fraction("model.strength", 1) == 1.0
    assert check_fraction("model.temporal_blend", 0.5, one=False) == 0.5
    with pytest.raises(ConfigError, match=r"model.temporal_blend must be a number in \[0, 1\) \(got 1.0\)"):
        check_fraction("model.temporal_blend", 1.0, one=False)
    for bad in (-0.01, 1.01, math.nan, True, "0.5"):
        with pytest.raises(ConfigError, match=r"model.strength must be a number in \[0, 1\]"):
            check_fraction("model.strength", bad)
