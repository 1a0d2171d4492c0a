"""Geographic error metrics of the GOM regressors and their baselines (training mean, k-NN, random
forest as Zhou et al. 2014)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.ensemble import RandomForestRegressor

from hybridlearn.gom.data import GomData

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius


def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance in km between points given in degrees (torch tensors or numpy arrays)."""
    xp = torch if isinstance(lat1, torch.Tensor) else np
    lat1, lon1, lat2, lon2 = (xp.deg2rad(v) for v in (lat1, lon1, lat2, lon2))
    a = xp.sin((lat2 - lat1) / 2) ** 2 + xp.cos(lat1) * xp.cos(lat2) * xp.sin((lon2 - lon1) / 2) ** 2
    a = xp.clip(a, 0.0, 1.0)
    return 2 * EARTH_RADIUS_KM * xp.arcsin(xp.sqrt(a))


def r2_score(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column."""
    ss_res = ((true - pred) ** 2).sum(0)
    ss_tot = ((true - true.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0)


def geo_metrics(pred_deg, true_deg, prefix: str = "") -> dict[str, float]:
    """km (mean/median great-circle error) and R^2 of latitude, longitude (and their mean)."""
    p = np.asarray(pred_deg, dtype=np.float64)
    t = np.asarray(true_deg, dtype=np.float64)
    km = haversine_km(p[:, 0], p[:, 1], t[:, 0], t[:, 1])
    r2 = r2_score(p, t)
    return {
        f"{prefix}km": float(km.mean()),
        f"{prefix}km_median": float(np.median(km)),
        f"{prefix}r2_lat": float(r2[0]),
        f"{prefix}r2_lon": float(r2[1]),
        f"{prefix}r2": float(r2.mean()),
    }


def to_unit(deg: np.ndarray) -> np.ndarray:
    """[n, 2] (latitude, longitude) in degrees -> [n, 3] points on the unit sphere."""
    lat, lon = np.deg2rad(deg[:, 0]), np.deg2rad(deg[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], 1)


def from_unit(v: np.ndarray) -> np.ndarray:
    """[n, 3] vectors (any length > 0) -> [n, 2] (latitude, longitude) in degrees of their direction."""
    lat = np.rad2deg(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    return np.stack([lat, np.rad2deg(np.arctan2(v[:, 1], v[:, 0]))], 1)


def forest_predict(
    x_train: np.ndarray,
    y_train_deg: np.ndarray,
    x_query: np.ndarray,
    target: str = "unit",
    trees: int = 500,
    seed: int = 0,
    threads: int = 1,
) -> np.ndarray:
    """Random-forest regression (scikit-learn, Zhou et al. 2014's method) of the origin in degrees.

    target: latlon = latitude and longitude as two outputs (as Zhou et al.); unit = the 3-D unit
    vector of the origin, whose mean direction is mapped back to degrees (no seam at 180 degrees).
    """
    y = to_unit(y_train_deg) if target == "unit" else y_train_deg
    rf = RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=threads)
    pred = rf.fit(x_train, y).predict(x_query)
    return from_unit(pred) if target == "unit" else pred


def knn_predict(x_train: np.ndarray, y_train_deg: np.ndarray, x_query: np.ndarray, k: int) -> np.ndarray:
    """k-nearest-neighbour regression (Euclidean in scaled feature space); neighbours' positions are
    averaged as unit vectors on the sphere (so 179E and 179W average to 180, not 0)."""
    d = torch.cdist(torch.as_tensor(x_query, dtype=torch.float64), torch.as_tensor(x_train, dtype=torch.float64))
    idx = d.topk(k, largest=False).indices.numpy()
    return from_unit(to_unit(y_train_deg)[idx].mean(1))


def baseline_predictions(d: GomData, ks: Sequence[int] = (1, 3, 5, 10, 20, 40)) -> tuple[dict[str, np.ndarray], int]:
    """Test-split predictions (degrees) of the training-mean predictor ("mean") and of k-NN ("knn", k
    chosen on the validation split among the `ks` that the training split can serve; a short file has
    fewer neighbours to offer), and that k."""
    x_tr, x_va, x_te = (x.double().numpy() for x in (d.x_train, d.x_val, d.x_test))
    y_tr, y_va = d.yd_train.numpy(), d.yd_val.numpy()
    ks = [k for k in ks if k <= len(x_tr)] or [len(x_tr)]
    val_km = {k: float(haversine_km(*knn_predict(x_tr, y_tr, x_va, k).T, *y_va.T).mean()) for k in ks}
    best_k = min(val_km, key=val_km.get)
    mean = np.broadcast_to(y_tr.mean(0), (len(x_te), 2))
    return {"mean": mean, "knn": knn_predict(x_tr, y_tr, x_te, best_k)}, best_k


def baselines(d: GomData) -> dict[str, float]:
    """Test-split km and R^2 of the training-mean predictor and of k-NN (baseline_predictions)."""
    preds, k = baseline_predictions(d)
    y_te = d.yd_test.numpy()
    out = {key: v for name, p in preds.items() for key, v in geo_metrics(p, y_te, f"baseline_{name}_").items()}
    return {**out, "baseline_knn_k": k}
