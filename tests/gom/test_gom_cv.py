"""GOM cross-validation (experiment=gom_cv): the model trains end to end on 2 folds through
Lightning, and every baseline on the same folds (training mean, k-NN, random forests) equals an
independent computation from the raw file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from gom_build import build
from sklearn.ensemble import RandomForestRegressor

from hybridlearn.gom.conf import OriginClassifierConfig, OriginClassifierNetConfig
from hybridlearn.gom.data import GOM_FILE, load_gom, split_indices
from hybridlearn.gom.hybrid import OriginClassifier
from hybridlearn.gom.metrics import haversine_km

SPLIT = (0.8, 0.1, 0.1)  # experiment=gom_cv's data.split


def _km(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return haversine_km(pred[:, 0], pred[:, 1], true[:, 0], true[:, 1])


def _unit(deg: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(deg[:, 0]), np.radians(deg[:, 1])
    return np.c_[np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]


def _deg(v: np.ndarray) -> np.ndarray:
    return np.degrees(np.c_[np.arcsin(v[:, 2] / np.linalg.norm(v, axis=1)), np.arctan2(v[:, 1], v[:, 0])])


def test_cv_model_and_baselines_on_two_folds(run_train):
    """2 folds of the gom_cv model (an ensemble of 2 with the k-NN blend on): every track is tested
    once with a training origin, each fold trains the configured epochs, and the pooled mean, k-NN
    and random-forest km equal a computation from the raw file on the same folds."""
    r = run_train(
        [
            "experiment=gom_cv",
            "data.cv_folds=2",
            "trainer.max_epochs=4",
            "trainer.check_val_every_n_epoch=2",
            "model.net.ensemble=2",
            "model.net.knn_blend=0.3",
            "study.forest_trees=8",
            "logger=none",
        ]
    )
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    assert m["cv_folds"] == 2 and m["cv_tracks"] == 1059 and [f["fold"] for f in m["folds"]] == [0, 1]
    assert all(f["epochs"] == 4 and np.isfinite(f["val_km"]) for f in m["folds"])
    assert 0 < m["cv_model_km"] < 20016

    x, y = load_gom(Path(os.environ["DATA_DIR"]) / "gom" / GOM_FILE)
    pooled: dict[str, list[np.ndarray]] = {"mean": [], "knn": [], "rf_latlon": [], "rf_unit": []}
    for f in range(2):
        tr, va, te = split_indices(len(x), r["seed"], SPLIT, cv_folds=2, fold=f)
        lo, span = x[tr].min(0), np.where(np.ptp(x[tr], 0) > 0, np.ptp(x[tr], 0), 1)
        xs = ((x - lo) / span).astype(np.float32).astype(np.float64)  # the model's float32 features
        pooled["mean"].append(_km(np.tile(y[tr].mean(0), (len(te), 1)), y[te]))
        k = m["folds"][f]["knn_k"]
        d = ((xs[te][:, None, :] - xs[tr][None]) ** 2).sum(-1)
        nn = np.argsort(d, 1, kind="stable")[:, :k]
        pooled["knn"].append(_km(_deg(_unit(y[tr])[nn].mean(1)), y[te]))
        fit = np.r_[tr, va]  # the forests learn from every row outside the test fold
        for target, yt in (("latlon", y[fit]), ("unit", _unit(y[fit]))):
            rf = RandomForestRegressor(n_estimators=8, random_state=r["seed"]).fit(xs[fit], yt)
            p = rf.predict(xs[te])
            pooled[f"rf_{target}"].append(_km(_deg(p) if target == "unit" else p, y[te]))
    for name, v in pooled.items():
        assert m[f"cv_{name}_km"] == pytest.approx(float(np.concatenate(v).mean()), rel=1e-6), name
        assert m[f"cv_{name}_km_median"] == pytest.approx(float(np.median(np.concatenate(v))), rel=1e-6), name
    assert m["cv_rf_latlon_km"] != pytest.approx(m["cv_rf_unit_km"], rel=1e-3)


def test_cv_refuses_unknown_forest_target(run_train, tmp_path):
    """A bad baseline setting fails before the first fold trains, with one line naming the key."""
    with pytest.raises(SystemExit) as e:
        run_train(["experiment=gom_cv", "data.cv_folds=2", "study.forest_targets=[xyz]", "logger=none"])
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
