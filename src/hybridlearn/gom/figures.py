"""The GOM figures of the paper: one network's energy and local gradient per epoch (figs. 7-9) and
a hybrid's true vs predicted degrees on the test set (figs. 10, 11, 17, 18)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from hybridlearn.core.plotting import plot_curves, save_figure

# the per-epoch curves of one network, train and validation: energy, mean delta_k, mean |delta_k|
CURVES = ("train_energy", "val_energy", "train_delta", "val_delta", "train_delta_abs", "val_delta_abs")


def plot_net_curves(history: Mapping[str, np.ndarray], epochs: int, title: str, path: Path) -> Path:
    """Average instant energy and mean local output gradient per epoch, train and val (figs 7-9);
    `history` holds the CURVES of one network, its first `epochs` values are shown."""

    def pair(name: str) -> dict[str, list[np.ndarray]]:
        return {"train": [history[f"train_{name}"][:epochs]], "validation": [history[f"val_{name}"][:epochs]]}

    panels = {
        "average instant energy E_av": pair("energy"),
        "mean local output gradient delta_k": pair("delta"),
        "mean |delta_k|": pair("delta_abs"),
    }
    return plot_curves(panels, path, title)


def plot_true_vs_pred(true: np.ndarray, pred: np.ndarray, what: str, title: str, path: Path) -> Path:
    """Test samples sorted by the true value: true and predicted degrees (figs 10, 11, 17, 18)."""
    order = np.argsort(true, kind="stable")
    fig, ax = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [2, 1]})
    ax[0].plot(true[order], ".-", ms=3, lw=0.8, label=f"true {what}")
    ax[0].plot(pred[order], ".", ms=4, label=f"predicted {what}")
    ax[0].set(xlabel="test sample (sorted by true value)", ylabel=f"{what} (degrees)", title=title)
    ax[0].legend()
    ax[0].grid(alpha=0.3)
    lo, hi = min(true.min(), pred.min()), max(true.max(), pred.max())
    ax[1].scatter(true, pred, s=8, alpha=0.6)
    ax[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax[1].set(xlabel=f"true {what}", ylabel=f"predicted {what}", title="predicted vs true")
    ax[1].grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def rank_indices(best_val: np.ndarray, subset: list[int] | None = None) -> dict[str, int]:
    """best / median / worst network by lowest validation energy (among `subset`, default all)."""
    idx = np.asarray(subset if subset is not None else range(len(best_val)))
    order = idx[np.argsort(best_val[idx], kind="stable")]
    return {"best": int(order[0]), "median": int(order[len(order) // 2]), "worst": int(order[-1])}
