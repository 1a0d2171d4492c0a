"""The shared config checker for fractions: [0, hi), the key named in the error."""

from __future__ import annotations

import pytest

from hybridlearn.core.config import check_fraction
from hybridlearn.core.errors import ConfigError


def test_check_fraction_accepts_zero_up_to_hi_exclusive():
    assert check_fraction("data.border", 0) == 0.0 and isinstance(check_fraction("data.border", 0), float)
    assert check_fraction("data.border", 0.49, 0.5) == 0.49
    assert check_fraction("data.val_fraction", 0.999) == 0.999


@pytest.mark.parametrize("v", [-0.1, 1.0, 2, float("nan"), float("inf"), True, "0.1", None])
def test_check_fraction_names_the_key(v):
    with pytest.raises(ConfigError, match=r"data.val_fraction must be a number in \[0, 1.0\)"):
        check_fraction("data.val_fraction", v)
    with pytest.raises(ConfigError, match=r"in \[0, 0.5\)"):
        check_fraction("data.border", 0.5, 0.5)
