"""A whole grid in one process (`entry: hybridlearn.gom.grid_study:run_grid`, experiment=gom_mlp_grid /
gom_autoencoder_grid; also the first half of gom_study): every network trained at once by the
vectorized trainer (`gom.grid`), the table sorted by validation energy, the per-epoch histories and
the best / median / worst curves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from hybridlearn.core.results import write_table
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.gom.data import GomData
from hybridlearn.gom.figures import CURVES, plot_net_curves, rank_indices
from hybridlearn.gom.grid import GridResult, forward_params, train_sigmoid_grid
from hybridlearn.gom.metrics import geo_metrics
from hybridlearn.gom.results import ROWS, GridSummary
from hybridlearn.gom.settings import grid_options, grid_specs, prepare_data, set_threads

log = logging.getLogger(__name__)
FIG_NUMBERS = {"best": "fig07", "median": "fig08", "worst": "fig09"}  # the MLP grid's curves in the paper


def grid_rows(res: GridResult, d: GomData, kind: str) -> list[dict[str, Any]]:
    """One row per network: its tag, energies, epochs, and (MLPs) the test km and R²."""
    rows = []
    for i, s in enumerate(res.specs):
        row = dict(s.tag)
        row.update(
            best_val_energy=float(res.best_val[i]),
            best_epoch=int(res.best_epoch[i]),
            epochs_run=int(res.epochs_run[i]),
            final_train_energy=float(res.train_energy[i, res.epochs_run[i] - 1]),
        )
        with torch.no_grad():
            out = forward_params(res.best_params[i], d.x_test)
        t = d.y_test if kind == "mlp" else d.x_test
        row["test_energy"] = float((0.5 * ((out - t) ** 2).sum(-1)).mean())
        if kind == "mlp":
            deg = d.y_scaler.inverse(out.double().numpy())
            m = geo_metrics(deg, d.yd_test.numpy())
            row["test_km"], row["test_r2"] = m["km"], m["r2"]
        rows.append(row)
    return rows


def write_grid_files(res: GridResult, rows: list[dict[str, Any]], kind: str, out: Path) -> None:
    """grid_<kind>.csv/.md (sorted by best validation energy) and grid_<kind>_history.npz."""
    sort = sorted(range(len(rows)), key=lambda i: rows[i]["best_val_energy"])
    write_table(
        [rows[i] for i in sort],
        out / f"grid_{kind}",
        f"GOM {kind} grid ({len(rows)} networks, sorted by best validation energy)",
    )
    np.savez_compressed(out / f"grid_{kind}_history.npz", **{c: getattr(res, c) for c in CURVES})


def train_grid_kind(cfg: DictConfig, kind: str, d: GomData, out: Path) -> tuple[GridSummary, dict[str, str]]:
    """Train one grid (mlp or autoencoder): its summary (the picked networks) and figure files."""
    specs = grid_specs(cfg.grid, kind, d.n_features, int(cfg.seed or 0))
    opts = grid_options(cfg.grid, cfg)
    yt, yv = (d.y_train, d.y_val) if kind == "mlp" else (d.x_train, d.x_val)
    log.info("training %d %s networks (vectorized, %d epochs)", len(specs), kind, opts["epochs"])
    res = train_sigmoid_grid(specs, d.x_train, yt, d.x_val, yv, **opts)
    log.info("%s grid: %.2f s", kind, res.seconds)
    rows = grid_rows(res, d, kind)
    write_grid_files(res, rows, kind, out)
    groups = (
        {"": None}
        if kind == "mlp"
        else {fam: [i for i, s in enumerate(specs) if s.tag["family"] == fam] for fam in ("M1", "M2")}
    )
    picks, figs = {}, {}
    for fam, subset in groups.items():
        if subset is not None and not subset:
            continue
        for rank, i in rank_indices(res.best_val, subset).items():
            pick = f"{fam + '_' if fam else ''}{rank}"
            picks[pick] = ROWS[kind](**rows[i])
            figs[f"{kind}_{pick}"] = _plot_pick(res, i, kind, f"{kind}_{pick}", f"{kind} {fam} {rank}", out)
    return GridSummary(kind, len(specs), round(res.seconds, 3), picks), figs


def _plot_pick(res: GridResult, i: int, kind: str, name: str, what: str, out: Path) -> str:
    """The curves of network i (a picked one); its file name."""
    tag = ", ".join(f"{k}={v}" for k, v in res.specs[i].tag.items())
    rank = name.rsplit("_", 1)[1]
    fname = f"{FIG_NUMBERS[rank] + '_' if kind == 'mlp' else ''}{name}_curves.png"
    history = {c: getattr(res, c)[i] for c in CURVES}
    title = f"{what}: {tag}; best val energy {float(res.best_val[i]):.4g}"
    return plot_net_curves(history, int(res.epochs_run[i]), title, out / fname).name


def run_grid(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry: train the grid(s) in `grid.kinds` vectorized (grid=gom, gom.conf.GomGridConfig); tables,
    histories and curves."""
    set_threads(cfg.grid)
    d = prepare_data(cfg)
    figs: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    for kind in cfg.grid.kinds:
        summary, kind_figs = train_grid_kind(cfg, kind, d, Path(output_dir))
        metrics.update(summary.metrics())
        figs.update(kind_figs)
    metrics["figures"] = figs
    metrics["threads"] = torch.get_num_threads()
    return metrics
