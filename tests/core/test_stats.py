"""Wilson intervals, expected calibration error and the spread text against hand-computed values."""

from __future__ import annotations

import math

import pytest

from hybridlearn.core.stats import expected_calibration_error, spread_text, wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(120, 122)  # 0.984 on a 122-digit test split
    assert lo == pytest.approx(0.9422, abs=1e-3) and hi == pytest.approx(0.9955, abs=1e-3)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(122, 122)
    assert hi == pytest.approx(1.0) and 0.96 < lo < 0.97
    lo, hi = wilson_interval(50, 100)  # symmetric about 1/2
    assert math.isclose(lo + hi, 1.0) and hi - lo == pytest.approx(0.1923, abs=1e-3)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_expected_calibration_error():
    # bin 0.8-0.9: confidence 0.85, 3 of 4 right (0.75) -> |0.75 - 0.85| * 4/6
    # bin 0.9-1.0: confidence 1.0, 2 of 2 right -> 0
    conf = [0.85, 0.85, 0.85, 0.85, 1.0, 1.0]
    ok = [True, True, True, False, True, True]
    assert expected_calibration_error(conf, ok) == pytest.approx(0.1 * 4 / 6)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([0.95, 0.95], [False, False]) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        expected_calibration_error([0.5], [True, False])


def test_spread_text_rounds_to_the_spread():
    assert spread_text(0.99200, 0.0008276, 0.99097, 0.99303) == "0.99200 ± 0.00083 [0.99097, 0.99303]"
    assert spread_text(3085.4, 64.2, 3005.6, 3165.1) == "3085 ± 64 [3006, 3165]"
    assert spread_text(0.5, 0.0) == "0.5 ± 0"  # one run: no spread, no interval
    assert spread_text(1234.5678, math.nan) == "1235 ± nan"
