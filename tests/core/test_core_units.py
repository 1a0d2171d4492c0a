"""Unit tests of the small core pieces: config checkers, atomic writers, the table writer,
statistics, md5-checked downloads and the checkpoint loader's one-line errors."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf

from hybridlearn.core.checkpoint import CLASS_KEY, check_class, read_checkpoint
from hybridlearn.core.config import (
    check_bool,
    check_choice,
    check_float,
    check_fraction,
    check_int,
    check_int_list,
)
from hybridlearn.core.download import ensure_files, fetch, md5sum
from hybridlearn.core.errors import ConfigError, DataError, one_line_errors, report_error
from hybridlearn.core.io import atomic_output, write_json_atomic, write_text_atomic
from hybridlearn.core.results import to_number, write_results, write_table
from hybridlearn.core.stats import expected_calibration_error, wilson_interval
from hybridlearn.core.trainer import build_trainer


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


def test_check_choice_names_null():
    assert check_choice("model.scheduler", None, (None, "cosine")) is None
    with pytest.raises(ConfigError, match=r"model.scheduler must be one of null, cosine \(got 'step'\)"):
        check_choice("model.scheduler", "step", (None, "cosine"))


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


def test_check_fraction_half_open_or_closed():
    assert check_fraction("data.border", 0) == 0.0 and isinstance(check_fraction("data.border", 0), float)
    assert check_fraction("data.border", 0.49, 0.5) == 0.49 and check_fraction("data.val_fraction", 0.999) == 0.999
    assert check_fraction("model.strength", 1, hi_included=True) == 1.0
    assert check_fraction("model.label_smoothing", 0.5, 0.5, hi_included=True) == 0.5
    with pytest.raises(ConfigError, match=r"model.label_smoothing must be a number in \[0, 0.5\] \(got 0.7\)"):
        check_fraction("model.label_smoothing", 0.7, 0.5, hi_included=True)
    with pytest.raises(ConfigError, match=r"model.temporal_blend must be a number in \[0, 1\) \(got 1.0\)"):
        check_fraction("model.temporal_blend", 1.0)
    with pytest.raises(ConfigError, match=r"data.border must be a number in \[0, 0.5\)"):
        check_fraction("data.border", 0.5, 0.5)
    for bad in (-0.01, 1.01, math.nan, math.inf, True, "0.5", None):
        with pytest.raises(ConfigError, match=r"model.strength must be a number in \[0, 1\]"):
            check_fraction("model.strength", bad, hi_included=True)


# ----------------------------------------------------------------------------- the CLI wrapper
def test_one_line_errors_returns_2_with_one_line_and_keeps_bugs_loud(capsys):
    @one_line_errors
    def main(x: int) -> int:
        if x == 1:
            raise DataError("data/x.csv is truncated; download it again")
        if x == 2:
            raise KeyError("a bug")
        return 0

    assert main(0) == 0 and main.__name__ == "main"
    assert main(1) == 2
    assert capsys.readouterr().err == "error: data/x.csv is truncated; download it again\n"
    with pytest.raises(KeyError):
        main(2)
    assert report_error(ConfigError("model.lr must be > 0")) == 2
    assert capsys.readouterr().err == "error: model.lr must be > 0\n"


# ----------------------------------------------------------------------------- atomic writers
def test_atomic_output_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]
    with pytest.raises(ConfigError, match="out.txt already exists; .*overwrite=true"):
        with atomic_output(target, overwrite=False):
            pass


def test_write_text_and_json_atomic(tmp_path):
    assert write_text_atomic(tmp_path / "a.txt", "x\n").read_text() == "x\n"
    p = write_json_atomic(tmp_path / "r.json", {"b": 1, "a": Path("p")})
    assert p.read_text() == '{\n  "b": 1,\n  "a": "p"\n}\n'  # key order kept, paths as strings


# ----------------------------------------------------------------------------- results
def test_write_table_csv_and_markdown(tmp_path):
    rows = [{"run": "a|b", "acc": 0.123456789}, {"run": "c", "loss": math.nan, "acc": 1.0}]
    csv_path, md_path = write_table(rows, tmp_path / "t", title="Scores", digits=3)
    assert csv_path.read_text().splitlines() == ["run,acc,loss", "a|b,0.123456789,", "c,1.0,nan"]
    assert md_path.read_text() == (
        "# Scores\n\n| run | acc | loss |\n|---|---|---|\n| a\\|b | 0.123 |  |\n| c | 1 |  |\n"
    )
    _, md_path = write_table(rows, tmp_path / "u", columns=["acc"])
    assert md_path.read_text() == "| acc |\n|---|\n| 0.123457 |\n| 1 |\n"


def test_write_results_makes_metrics_plain_and_sorted(tmp_path):
    p = write_results(tmp_path, status="completed", metrics={"b": np.float32(0.5), "a": math.inf})
    assert json.loads(p.read_text()) == {"status": "completed", "metrics": {"a": "inf", "b": 0.5}}
    assert to_number(np.int64(3)) == 3 and type(to_number(np.int64(3))) is int
    assert to_number(math.nan) == "nan" and to_number("x") == "x"


# ----------------------------------------------------------------------------- stats
def test_wilson_interval_matches_the_formula_and_ece_of_perfect_calibration():
    lo, hi = wilson_interval(8, 10)
    z, n, p = 1.96, 10, 0.8
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half)) and lo == pytest.approx(0.4902, abs=1e-4)
    assert expected_calibration_error([0.5, 0.5, 1.0], [True, False, True]) == pytest.approx(0.0)
    assert expected_calibration_error([0.9, 0.9], [False, False]) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="equally long"):
        expected_calibration_error([0.5], [True, False])


# ----------------------------------------------------------------------------- md5-checked files
def test_ensure_files_downloads_checks_md5_and_never_keeps_a_bad_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"hello")
    good = hashlib.md5(b"hello").hexdigest()
    url = (src / "a.bin").as_uri()
    dest = tmp_path / "data"
    paths = ensure_files(dest, {"a.bin": good}, {"a.bin": [url]}, timeout=5)
    assert paths == {"a.bin": dest / "a.bin"} and md5sum(dest / "a.bin") == good
    with pytest.raises(DataError, match="a.bin: md5 .* does not match the expected 0+ .*delete it"):
        ensure_files(dest, {"a.bin": "0" * 32})
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match=r"data not found in .*fresh: missing a.bin \(downloads failed: .*md5"):
        ensure_files(fresh, {"a.bin": "0" * 32}, {"a.bin": [url]}, timeout=5)
    assert not fresh.exists()  # the folder it made for the download is gone again
    with pytest.raises(DataError, match=r"could not download .*a.bin to .*b.bin .*; nothing was saved"):
        fetch(url, tmp_path / "b.bin", md5="0" * 32, timeout=5)
    assert not (tmp_path / "b.bin").exists()
    assert fetch(url, tmp_path / "c.bin", md5=good, timeout=5).read_bytes() == b"hello"


# ----------------------------------------------------------------------------- checkpoints
class NotWeights:
    pass


def test_read_checkpoint_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint .*none.ckpt is not a file; give a .ckpt"):
        read_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"junk.ckpt is not a PyTorch checkpoint \(.+\); give a .ckpt"):
        read_checkpoint(tmp_path / "junk.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.ckpt")
    with pytest.raises(DataError, match="plain.ckpt holds no Lightning state_dict"):
        read_checkpoint(tmp_path / "plain.ckpt")
    torch.save({"state_dict": {}, "obj": NotWeights()}, tmp_path / "code.ckpt")
    with pytest.raises(DataError, match="code.ckpt holds Python objects besides weights .*could run code"):
        read_checkpoint(tmp_path / "code.ckpt", what="ckpt_path")
    ck = {"state_dict": {"net.0.weight": torch.ones(1)}, CLASS_KEY: "hybridlearn.gan.model.MLPGAN"}
    torch.save(ck, tmp_path / "gan.ckpt")
    assert torch.equal(read_checkpoint(tmp_path / "gan.ckpt")["state_dict"]["net.0.weight"], torch.ones(1))
    with pytest.raises(ConfigError, match=r"gan.ckpt holds MLPGAN, not NotWeights; give a checkpoint of this"):
        check_class(ck, NotWeights, tmp_path / "gan.ckpt")
    check_class({"state_dict": {}}, NotWeights, "x.ckpt")  # untagged (older) checkpoints pass


@pytest.mark.parametrize("deterministic", [False, True])
def test_trainer_deterministic_setting_reaches_torch(tmp_path, deterministic):
    """trainer.deterministic=true/false reaches torch through Lightning; null (the default) leaves
    torch's flag as it is (so nothing imports torch._inductor for nothing)."""
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(not deterministic)
        cfg = compose_cfg(["experiment=lenet_mnist", f"trainer.deterministic={str(deterministic).lower()}"], tmp_path)
        build_trainer(cfg, tmp_path)
        assert torch.are_deterministic_algorithms_enabled() is deterministic
        torch.use_deterministic_algorithms(not deterministic)
        build_trainer(compose_cfg(["experiment=lenet_mnist"], tmp_path), tmp_path)
        assert torch.are_deterministic_algorithms_enabled() is (not deterministic)
    finally:
        torch.use_deterministic_algorithms(before)
