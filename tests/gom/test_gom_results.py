"""The GOM results as types: what an entry returns reads back to the same type and writes the same
metrics (results.json keeps its content), and a missing or renamed key is named when read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridlearn.gom.results import ZHOU_2014_KM, CvResult, ResultsError, StudyResult

SCORE = ("km", "km_median", "r2_lat", "r2_lon", "r2")


def study_metrics() -> dict:
    """The metrics of a gom_study run, as run_study returns them (3 MLPs, 2 autoencoders per family)."""
    mlp = {"depth": 1, "width": 3, "lr": 0.01, "best_val_energy": 0.04, "best_epoch": 99, "epochs_run": 100}
    mlp.update(final_train_energy=0.05, test_energy=0.06, test_km=4100.0, test_r2=0.01)
    ae = {"hidden": 19, "lr": 0.1, "family": "M1", "best_val_energy": 0.3, "best_epoch": 100, "epochs_run": 100}
    ae.update(final_train_energy=0.31, test_energy=0.32)
    hybrid = {"ae_hidden": 19, "ae_lr": 0.1, "best_epoch": 40, **{f"test/{k}": 1.0 for k in SCORE}, "best_ckpt": ""}
    m = {"mlp_n": 3, "mlp_seconds": 0.5, "autoencoder_n": 4, "autoencoder_seconds": 0.7, "grids_seconds": 1.3}
    m.update({f"mlp_{r}": mlp for r in ("best", "median", "worst")})
    m.update({f"autoencoder_{f}_{r}": {**ae, "family": f} for f in ("M1", "M2") for r in ("best", "median", "worst")})
    m["hybrid"] = {"M1": hybrid, "M2": {**hybrid, "ae_hidden": 87}}
    m["baselines"] = {
        **{f"baseline_mean_{k}": 2.0 for k in SCORE},
        **{f"baseline_knn_{k}": 3.0 for k in SCORE},
        "baseline_knn_k": 5,
    }
    m.update(figures={"mlp_best": "fig07_mlp_best_curves.png"}, seconds=9.0)
    return m


def test_study_result_reads_back_what_it_writes():
    m = study_metrics()
    r = StudyResult.read(m, "gom/study_seed0")
    assert r.metrics() == m  # (results.json sorts the top-level keys)
    assert list(r.metrics()["hybrid"]["M1"]) == list(m["hybrid"]["M1"])  # key order kept too
    assert (r.mlp.n, r.autoencoder.n) == (3, 4)
    assert r.mlp.picks["best"].width == 3 and r.autoencoder.picks["M2_best"].family == "M2"
    assert r.hybrid["M2"].ae_hidden == 87 and r.hybrid["M1"].test.km_median == 1.0
    assert r.baselines.knn.km == 3.0 and r.baselines.knn_k == 5
    assert StudyResult.read(json.loads(json.dumps(m)), "x") == r  # through JSON, as the report reads it


@pytest.mark.parametrize(
    "rename, missing",
    [
        (("mlp_n",), "mlp_n"),
        (("mlp_best", "test_km"), "test_km"),
        (("hybrid", "M1", "test/km"), "test/km"),
        (("baselines", "baseline_knn_k"), "baseline_knn_k"),
    ],
)
def test_a_renamed_key_is_named(rename, missing):
    m = study_metrics()
    m["mlp_best"] = dict(m["mlp_best"])
    node = m
    for k in rename[:-1]:
        node = node[k]
    node[rename[-1] + "_renamed"] = node.pop(rename[-1])
    with pytest.raises(ResultsError, match=rf"gom/study_seed0.*no `{missing}`"):
        StudyResult.read(m, "gom/study_seed0")


def test_cv_result_reads_back_what_it_writes(tmp_path: Path):
    folds = [{"fold": 0, "n_test": 530, "test/km": 3000.0}, {"fold": 1, "n_test": 529, "test/km": 3100.0}]
    r = CvResult({"model": (3050.0, 1800.0), "knn": (3600.0, 2500.0)}, folds, 500, val_km=3010.0)
    m = r.metrics()
    assert m["cv/km"] == 3050.0 and m["cv/km_median"] == 1800.0 and m["cv/baseline_knn_km_median"] == 2500.0
    assert m["cv/val_km"] == 3010.0 and m["zhou2014_rf_km"] == ZHOU_2014_KM == 3113.0
    back = CvResult.read(json.loads(json.dumps(m)), "gom/cv_default")
    assert back.pooled == {"model": (3050.0, 1800.0), "knn": (3600.0, 2500.0)} and back.metrics() == m
    assert back.fold_km == [3000.0, 3100.0] and back.folds_n == 2
    del m["cv/forest_trees"]
    with pytest.raises(ResultsError, match="gom/cv_default: .* no `cv/forest_trees`"):
        CvResult.read(m, "gom/cv_default")
    m = r.metrics()
    del m["cv/baseline_knn_km_median"]
    with pytest.raises(ResultsError, match="gom/cv_default: .* no `cv/baseline_knn_km_median`"):
        CvResult.read(m, "gom/cv_default")
