"""The shared config checkers: each names the key and the range it wants."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hybridlearn.core.config import check_fraction, check_int_list
from hybridlearn.core.errors import ConfigError


def test_check_int_list():
    assert check_int_list("grid.depths", [1, 5], 1, 5) == [1, 5]
    assert check_int_list("grid.depths", OmegaConf.create([2, 3]), 1, 5) == [2, 3]  # a list from Hydra
    assert check_int_list("grid.depths", [], 1, 5) == []
    with pytest.raises(ConfigError, match=r"grid.depths must be a list \(got 3\)"):
        check_int_list("grid.depths", 3, 1, 5)
    with pytest.raises(ConfigError, match="grid.depths must be a list"):
        check_int_list("grid.depths", "12", 1, 5)
    with pytest.raises(ConfigError, match=r"grid.depths\[1\] must be an integer in \[1, 5\] \(got 6\)"):
        check_int_list("grid.depths", [1, 6], 1, 5)
    with pytest.raises(ConfigError, match=r"grid.depths\[0\] must be an integer"):
        check_int_list("grid.depths", [1.0], 1, 5)


def test_check_fraction():
    assert check_fraction("model.dropout", 0) == 0.0 and check_fraction("model.dropout", 0.5) == 0.5
    assert check_fraction("model.knn_blend", 1, upper_ok=True) == 1.0
    with pytest.raises(ConfigError, match=r"model.dropout must be in \[0, 1\) \(got 1\)"):
        check_fraction("model.dropout", 1)
    with pytest.raises(ConfigError, match=r"model.knn_blend must be in \[0, 1\] \(got 1.5\)"):
        check_fraction("model.knn_blend", 1.5, upper_ok=True)
    for bad in (-0.1, True, "0.1", None):
        with pytest.raises(ConfigError, match="model.dropout must be in"):
            check_fraction("model.dropout", bad)
