"""The shared value checkers of hybridlearn.core.config: a bad value is one line naming the key."""

from __future__ import annotations

import pytest

from hybridlearn.core.config import check_choice, check_fraction
from hybridlearn.core.errors import ConfigError


def test_check_fraction_half_open_and_closed():
    assert check_fraction("model.dropout", 0) == 0.0 and check_fraction("model.dropout", 0.3) == 0.3
    for bad in (1.0, -0.1, True, "0.3", None):
        with pytest.raises(ConfigError, match=r"model.dropout must be in \[0, 1.0\)"):
            check_fraction("model.dropout", bad)
    assert check_fraction("model.label_smoothing", 0.5, 0.5, hi_included=True) == 0.5
    with pytest.raises(ConfigError, match=r"model.label_smoothing must be in \[0, 0.5\] \(got 0.7\)"):
        check_fraction("model.label_smoothing", 0.7, 0.5, hi_included=True)


def test_check_choice_names_null():
    assert check_choice("model.scheduler", None, (None, "cosine")) is None
    with pytest.raises(ConfigError, match=r"model.scheduler must be one of null, cosine \(got 'step'\)"):
        check_choice("model.scheduler", "step", (None, "cosine"))
