"""GOM cross-validation (experiment=gom_cv): the model's folds run through core.cv (Lightning fits),
each tested on exactly the tracks of cv_folds.json, on which every baseline runs too (training mean,
k-NN, random forests), each pooled km equal to an independent computation from the raw file; a
deleted fold is trained again, alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from gom_build import build
from sklearn.ensemble import RandomForestRegressor

from hybridlearn.core.errors import DataError
from hybridlearn.gom.conf import OriginClassifierConfig, OriginClassifierNetConfig
from hybridlearn.gom.cv import model_predictions
from hybridlearn.gom.data import GOM_FILE, load_gom, split_indices
from hybridlearn.gom.hybrid import OriginClassifier
from hybridlearn.gom.metrics import haversine_km

SPLIT = (0.8, 0.1, 0.1)  # experiment=gom_cv's data.split
CV = [
    "experiment=gom_cv",
    "cv.folds=2",
    "trainer.max_epochs=4",
    "trainer.check_val_every_n_epoch=2",
    "model.net.ensemble=2",
    "model.net.knn_blend=0.3",
    "study.forest_trees=8",
    "logger=none",
]


def _km(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return haversine_km(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1])


def _unit(deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(deg[:, 0]), np.radians(deg[:, 1])
    return np.c_[np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]


def _deg(v: np.ndarray) -> np.ndarray:
    return np.degrees(np.c_[np.arcsin(v[:, 2] / np.linalg.norm(v, axis=1)), np.arctan2(v[:, 1], v[:, 0])])


def test_cv_model_and_baselines_on_the_same_folds(run_train):
    """2 folds of the gom_cv model (an ensemble of 2 with the k-NN blend on): every track is held out
    once; each fold's model is tested on its fold's tracks of cv_folds.json, trains the configured
    epochs and keeps its inner validation km; the pooled km (mean, median) of the model, the training
    mean, k-NN and random forests equal a computation from the raw file on the same folds; deleting a
    fold's results.json and checkpoints trains that fold again, alone, to the same numbers."""
    r = run_train(CV)
    assert r["status"] == "completed", r.get("error")
    run, m = Path(r["_dir"]), r["metrics"]
    folds = [np.asarray(t) for t in json.loads((run / "cv_folds.json").read_text())["test"]]
    assert sorted(np.concatenate(folds).tolist()) == list(range(1059))
    rows = m["cv/folds"]
    assert [f["fold"] for f in rows] == [0, 1] and [f["n_test"] for f in rows] == [len(t) for t in folds]
    assert all(f["epochs_trained"] == 4 and np.isfinite(f["val/km"]) for f in rows)
    assert m["cv/val_km"] == pytest.approx(np.mean([f["val/km"] for f in rows]))
    assert m["cv/forest_trees"] == 8 and 0 < m["cv/km"] < 20016

    x, y = load_gom(Path(os.environ["DATA_DIR"]) / "gom" / GOM_FILE)
    km: dict[str, list[np.ndarray]] = {"model": [], "mean": [], "knn": [], "rf_latlon": [], "rf_unit": []}
    for f, te in enumerate(folds):
        tracks = np.loadtxt(run / f"fold_{f}" / "test_predictions.csv", delimiter=",", skiprows=1)
        np.testing.assert_array_equal(tracks[:, 0], te)  # the model was tested on the baselines' tracks
        np.testing.assert_allclose(tracks[:, 1:3], y[te])
        km["model"].append(_km(tracks[:, 3:5], y[te]))
        assert rows[f]["test/km"] == pytest.approx(km["model"][-1].mean(), rel=1e-6)
        tr, va, _ = split_indices(1059, r["seed"], SPLIT, fold=(np.setdiff1d(np.arange(1059), te), te))
        lo, span = x[tr].min(0), np.where(np.ptp(x[tr], 0) > 0, np.ptp(x[tr], 0), 1)
        xs = ((x - lo) / span).astype(np.float32).astype(np.float64)  # the model's float32 features
        km["mean"].append(_km(np.tile(y[tr].mean(0), (len(te), 1)), y[te]))
        k = int(rows[f]["test/baseline_knn_k"])
        d = ((xs[te][:, None, :] - xs[tr][None]) ** 2).sum(-1)
        nn = np.argsort(d, 1, kind="stable")[:, :k]
        km["knn"].append(_km(_deg(_unit(y[tr])[nn].mean(1)), y[te]))
        # the model's own test logged the cheap baselines of its test tracks: the same numbers
        for name in ("mean", "knn"):
            assert rows[f][f"test/baseline_{name}_km"] == pytest.approx(km[name][-1].mean(), rel=1e-5)
        fit = np.r_[tr, va]  # the forests learn from every row outside the test fold
        for target, yt in (("latlon", y[fit]), ("unit", _unit(y[fit]))):
            rf = RandomForestRegressor(n_estimators=8, random_state=r["seed"]).fit(xs[fit], yt)
            p = rf.predict(xs[te])
            km[f"rf_{target}"].append(_km(_deg(p) if target == "unit" else p, y[te]))
            assert rows[f][f"test/baseline_rf_{target}_km"] == pytest.approx(km[f"rf_{target}"][-1].mean())
    for name, v in km.items():
        key = "cv/km" if name == "model" else f"cv/baseline_{name}_km"
        assert m[key] == pytest.approx(float(np.concatenate(v).mean()), rel=1e-6), name
        assert m[f"{key}_median"] == pytest.approx(float(np.median(np.concatenate(v))), rel=1e-6), name
    assert m["cv/baseline_rf_latlon_km"] != pytest.approx(m["cv/baseline_rf_unit_km"], rel=1e-3)
    assert m["cv/km_std"] == pytest.approx(np.std([f["test/km"] for f in rows], ddof=1), rel=1e-6)
    with pytest.raises(DataError, match="holds other tracks than the fold's test tracks"):
        model_predictions(run / "fold_0", folds[1])

    # a CV killed in fold 1: fold 0 is read back, fold 1 trains again from the start
    kept = (run / "fold_0" / "results.json").stat().st_mtime_ns
    (run / "fold_1" / "results.json").unlink()
    for ckpt in (run / "fold_1" / "checkpoints").glob("*.ckpt"):
        ckpt.unlink()
    again = run_train(CV)
    assert again["status"] == "completed", again.get("error")
    assert (run / "fold_0" / "results.json").stat().st_mtime_ns == kept
    assert json.loads((run / "fold_1" / "results.json").read_text())["metrics"]["epochs_trained"] == 4  # trained anew
    for key in ("cv/km", "cv/km_median", "cv/val_km", "cv/baseline_rf_unit_km"):
        assert again["metrics"][key] == pytest.approx(m[key], rel=1e-6), key


def test_cv_refuses_unknown_forest_target(run_train, tmp_path):
    """A bad baseline setting fails before the first fold trains, with one line naming the key."""
    with pytest.raises(SystemExit) as e:
        run_train(["experiment=gom_cv", "cv.folds=2", "study.forest_targets=[xyz]", "logger=none"])
    assert e.value.code == 2
    r = json.loads((tmp_path / "run" / "results.json").read_text())
    assert r["error"] == "study.forest_targets must hold values of latlon, unit (got ['xyz'])"
    assert not (tmp_path / "run" / "fold_0").exists()


def _origins_model(n_loc: int, label_smoothing: float = 0.0, **net) -> OriginClassifier:
    """An origin classifier of 4 features (no autoencoder) whose `n_loc` slots are all origins."""
    net_cfg = OriginClassifierNetConfig(
        use_code=False, include_features=True, hidden=[8], max_locations=n_loc, init_range=None, dropout=0.0, **net
    )
    m = build(OriginClassifierConfig(label_smoothing=label_smoothing, net=net_cfg), n_features=4)
    with torch.no_grad():
        m.net.locs.copy_(torch.tensor([[10.0 * i, 20.0 * i] for i in range(n_loc)], dtype=torch.float64))
        m.net.loc_valid.fill_(True)
    return m


def test_label_smoothing_is_torchs_over_the_valid_locations():
    """With every slot a location, the loss is torch's label-smoothed cross-entropy, summed over the
    ensemble's members; a padded slot gets no smoothing mass (finite loss)."""
    torch.manual_seed(0)
    m = _origins_model(5, label_smoothing=0.1, ensemble=2, activation="relu")
    m.eval()
    x = torch.rand(7, 4)
    yd = m.net.locs[torch.tensor([0, 1, 2, 3, 4, 0, 2])].clone()
    loss, _ = m.loss_and_output(x, torch.zeros(7, 2), yd)
    target = m.net.origin_index(yd)
    ref = sum(torch.nn.functional.cross_entropy(z, target, label_smoothing=0.1) for z in m.net.member_logits(x))
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)
    m.net.loc_valid[4] = False
    loss, _ = m.loss_and_output(x, torch.zeros(7, 2), m.net.locs[[0] * 7].clone())
    assert torch.isfinite(loss)


def test_knn_blend_one_is_the_neighbours_histogram():
    """knn_blend=1: the posterior is the share of each location among the k nearest training tracks."""
    m = _origins_model(3, knn_blend=1.0, knn_k=2)
    m.net.knn_x = torch.tensor([[0.0, 0, 0, 0], [0.1, 0, 0, 0], [1, 1, 1, 1], [0.9, 1, 1, 1]])
    m.net.knn_loc = torch.tensor([0, 2, 1, 1])
    p = m.net(torch.tensor([[0.0, 0, 0, 0], [1.0, 1, 1, 1]]))
    np.testing.assert_allclose(p.detach().numpy(), [[0.5, 0, 0.5], [0, 1, 0]])
