"""GOM study entries (`entry:` hook of the core CLI):

- `run_grid`  (experiment=gom_mlp_grid / gom_autoencoder_grid): a whole grid in one process with
  the vectorized trainer (`hybridlearn.gom.grid`), tables + best/median/worst curves.
- `run_study` (experiment=gom_study): both grids, then the hybrid with the chosen reduction (M1*)
  and extraction (M2*) autoencoders, baselines, all tables and figures in one report.
- `run_cv`    (experiment=gom_cv): k-fold cross-validation of a hybrid configuration (great-circle
  km pooled over all folds, as Zhou et al. 2014 report), with the baselines on the same folds.

Every hybrid and CV fold is trained by a Trainer built from the run's own trainer/logger/callbacks
config (the run's `core.trainer.TrainerFactory`) in its own subfolder (`hybrid_M1/`, `fold_3/`, ...), so
`trainer=gpu` and `logger=wandb` reach each (one W&B run per model, named `<run>/<model>`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.config import check_choice, check_float, check_int
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import write_text_atomic
from hybridlearn.core.plotting import plot_curves, save_figure
from hybridlearn.core.progress import fit_progress
from hybridlearn.core.results import write_table
from hybridlearn.core.trainer import TrainerFactory, finish_loggers
from hybridlearn.gom.data import GomData, GomDataModule
from hybridlearn.gom.grid import GridResult, NetSpec, forward_params, train_sigmoid_grid
from hybridlearn.gom.metrics import FOREST_TARGETS, baselines, forest_predict, geo_metrics, haversine_km, knn_predict
from hybridlearn.gom.models import MAX_DEPTH, MAX_LR, MAX_WIDTH, GomHybrid
from hybridlearn.gom.nets import ae_sizes, mlp_sizes

log = logging.getLogger(__name__)

PAPER_MLP_LRS = (0.0001, 0.001, 0.01, 0.1, 0.2, 0.5, 0.9)
PAPER_AE_LRS = (0.001, 0.01, 0.1)


# ------------------------------------------------------------------------------------------ config
def _kwargs(node: DictConfig, **over) -> dict[str, Any]:
    """A config group (cfg.data, cfg.model) as constructor keyword arguments, with overrides."""
    d = OmegaConf.to_container(node, resolve=True)
    d.pop("_target_", None)
    d.update(over)
    return d


def _datamodule(cfg: DictConfig, **over) -> GomDataModule:
    return GomDataModule(**_kwargs(cfg.data, **over))


def _prepare(cfg: DictConfig, **over) -> GomData:
    """The GOM tensors exactly as the experiment's GomDataModule builds them."""
    dm = _datamodule(cfg, **over)
    dm.setup()
    return dm.data


def _int_list(key: str, v: Any, lo: int, hi: int) -> list[int]:
    if not isinstance(v, (list, tuple)) and not OmegaConf.is_list(v):
        raise ConfigError(f"{key} must be a list (got {v!r})")
    return [check_int(f"{key}[{i}]", x, lo, hi) for i, x in enumerate(v)]


def _lr_list(key: str, v: Any) -> list[float]:
    if not isinstance(v, (list, tuple)) and not OmegaConf.is_list(v):
        raise ConfigError(f"{key} must be a list (got {v!r})")
    return [check_float(f"{key}[{i}]", x, 0.0, MAX_LR) for i, x in enumerate(v)]


def _hidden_list(key: str, ranges: Any) -> list[int]:
    """[[a, b], ...] inclusive ranges (or plain ints) -> sorted unique hidden sizes."""
    out: list[int] = []
    for i, r in enumerate(ranges):
        if isinstance(r, int):
            out.append(check_int(f"{key}[{i}]", r, 1, MAX_WIDTH))
            continue
        if len(r) != 2:
            raise ConfigError(f"{key}[{i}] must be an int or an inclusive range [first, last] (got {r!r})")
        a = check_int(f"{key}[{i}][0]", r[0], 1, MAX_WIDTH)
        b = check_int(f"{key}[{i}][1]", r[1], a, MAX_WIDTH)
        out.extend(range(a, b + 1))
    return sorted(set(out))


def grid_specs(g: DictConfig, kind: str, n_features: int, seed: int) -> list[NetSpec]:
    il = bool(g.get("input_layer", False))
    if kind == "mlp":
        depths = _int_list("grid.depths", g.depths, 1, MAX_DEPTH)
        widths = _int_list("grid.widths", g.widths, 1, MAX_WIDTH)
        lrs = _lr_list("grid.mlp_lrs", g.mlp_lrs)
        return [
            NetSpec(tuple(mlp_sizes(n_features, dp, w, 2, il)), lr, seed, {"depth": dp, "width": w, "lr": lr})
            for dp in depths
            for w in widths
            for lr in lrs
        ]
    hidden = _hidden_list("grid.ae_hidden", g.ae_hidden)
    lrs = _lr_list("grid.ae_lrs", g.ae_lrs)
    return [
        NetSpec(
            tuple(ae_sizes(n_features, h, il)),
            lr,
            seed,
            {"hidden": h, "lr": lr, "family": "M1" if h < n_features else ("M2" if h > n_features else "=")},
        )
        for h in hidden
        for lr in lrs
    ]


def _grid_options(g: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    epochs = g.get("epochs") or cfg.trainer.get("max_epochs", 100)
    check_int("grid.epochs", epochs, 1, 1_000_000)
    if cfg.trainer.get("fast_dev_run"):  # one full-batch step per network, as Lightning's fits take one batch
        epochs = 1
    red = check_choice("grid.grad_reduction", g.get("grad_reduction", "mean"), ("mean", "sum"))
    stop = g.get("stop_energy", 0.01)
    if stop is not None:
        check_float("grid.stop_energy", stop, 0.0, 1e9)
    workers = g.get("workers", "auto")
    if workers == "auto":  # one chunk of networks per core this process may run on
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {
        "epochs": int(epochs),
        "grad_reduction": red,
        "bias": bool(g.get("bias", True)),
        "stop_energy": stop,
        "init_range": check_float("grid.init_range", g.get("init_range", 1.0), 0.0, 100.0),
        "workers": check_int("grid.workers", workers, 1, 4096),
        "chunk_units": check_int("grid.chunk_units", g.get("chunk_units", 1024), 1, 1 << 30),
    }


def _set_threads(g: DictConfig) -> None:
    t = g.get("threads")
    if t is not None:
        torch.set_num_threads(check_int("grid.threads", t, 1, 1024))


# ------------------------------------------------------------------------------------------ tables
def grid_rows(res: GridResult, d: GomData, kind: str) -> list[dict[str, Any]]:
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


def rank_indices(res: GridResult, subset: Sequence[int] | None = None) -> dict[str, int]:
    """best / median / worst network by lowest validation energy."""
    idx = np.asarray(subset if subset is not None else range(len(res.specs)))
    order = idx[np.argsort(res.best_val[idx], kind="stable")]
    return {"best": int(order[0]), "median": int(order[len(order) // 2]), "worst": int(order[-1])}


# ----------------------------------------------------------------------------------------- figures
def plot_grid_curves(res: GridResult, i: int, title: str, path: Path) -> Path:
    """Average instant energy and mean local output gradient per epoch, train and val (figs 7-9)."""
    n = int(res.epochs_run[i])

    def pair(train, val):
        return {"train": [train[i, :n]], "validation": [val[i, :n]]}

    panels = {
        "average instant energy E_av": pair(res.train_energy, res.val_energy),
        "mean local output gradient delta_k": pair(res.train_delta, res.val_delta),
        "mean |delta_k|": pair(res.train_delta_abs, res.val_delta_abs),
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


# -------------------------------------------------------------------------------------------- grid
def train_grid_kind(cfg: DictConfig, kind: str, d: GomData, out: Path, figs: dict[str, str]) -> dict[str, Any]:
    g = cfg.grid
    specs = grid_specs(g, kind, d.n_features, int(cfg.seed or 0))
    opts = _grid_options(g, cfg)
    yt, yv = (d.y_train, d.y_val) if kind == "mlp" else (d.x_train, d.x_val)
    log.info("training %d %s networks (vectorized, %d epochs)", len(specs), kind, opts["epochs"])
    res = train_sigmoid_grid(specs, d.x_train, yt, d.x_val, yv, **opts)
    log.info("%s grid: %.2f s", kind, res.seconds)
    rows = grid_rows(res, d, kind)
    sort = sorted(range(len(rows)), key=lambda i: rows[i]["best_val_energy"])
    write_table(
        [rows[i] for i in sort],
        out / f"grid_{kind}",
        f"GOM {kind} grid ({len(rows)} networks, sorted by best validation energy)",
    )
    np.savez_compressed(
        out / f"grid_{kind}_history.npz",
        train_energy=res.train_energy,
        val_energy=res.val_energy,
        train_delta=res.train_delta,
        val_delta=res.val_delta,
        train_delta_abs=res.train_delta_abs,
        val_delta_abs=res.val_delta_abs,
    )
    summary: dict[str, Any] = {f"{kind}_n": len(specs), f"{kind}_seconds": round(res.seconds, 3)}
    groups = (
        {"": None}
        if kind == "mlp"
        else {fam: [i for i, s in enumerate(specs) if s.tag["family"] == fam] for fam in ("M1", "M2")}
    )
    for fam, subset in groups.items():
        if subset is not None and not subset:
            continue
        ranks = rank_indices(res, subset)
        for rank, i in ranks.items():
            name = f"{kind}{'_' + fam if fam else ''}_{rank}"
            summary[name] = rows[i]
            tag = ", ".join(f"{k}={v}" for k, v in specs[i].tag.items())
            fig_no = {"best": "fig07", "median": "fig08", "worst": "fig09"}[rank] if kind == "mlp" else ""
            fname = f"{fig_no + '_' if fig_no else ''}{name}_curves.png"
            figs[name] = str(
                plot_grid_curves(
                    res, i, f"{kind} {fam} {rank}: {tag}; best val energy {rows[i]['best_val_energy']:.4g}", out / fname
                ).name
            )
    summary[f"_{kind}_result"] = res
    return summary


def run_grid(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry: train the grid(s) in `grid.kinds` vectorized; tables, histories and curves."""
    _set_threads(cfg.grid)
    kinds = list(cfg.grid.get("kinds", ["mlp"]))
    for i, k in enumerate(kinds):
        check_choice(f"grid.kinds[{i}]", k, ("mlp", "autoencoder"))
    d = _prepare(cfg)
    out = Path(output_dir)
    figs: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    for kind in kinds:
        s = train_grid_kind(cfg, kind, d, out, figs)
        s.pop(f"_{kind}_result")
        metrics.update(s)
    metrics["figures"] = figs
    metrics["threads"] = torch.get_num_threads()
    return metrics


# ------------------------------------------------------------------------------------------ hybrid
def fit_hybrid(
    trainers: TrainerFactory, dm: GomDataModule, model_kw: dict[str, Any], max_epochs: int, out: Path, name: str
) -> dict[str, Any]:
    """Train one GomHybrid on `dm` with a Trainer built from the run's trainer/logger/callbacks config
    into its own folder `out` (checkpoints, logs, W&B run `<run>/<name>`), test its best checkpoint
    (the weights in memory when no checkpoint callback is configured) and return its results
    (`dm.data` then holds the data it used)."""
    model = GomHybrid(**model_kw)
    trainer = trainers.build(out, name=name, max_epochs=max_epochs)
    trainer.fit(model, datamodule=dm)
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    if best:
        trainer.test(model, datamodule=dm, ckpt_path=best, weights_only=True, verbose=False)
    else:  # callbacks=none: no checkpoint, test the weights in memory
        trainer.test(model, datamodule=dm, verbose=False)
    finish_loggers(trainer)  # this model's W&B run is complete (a failure is closed by the core)
    r = dict(model.extra_results)
    r["epochs_trained"] = trainer.current_epoch
    r["best_ckpt"] = best
    return r


def run_study(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry: the whole GOM study (MLP grid, autoencoder grid, hybrids with M1*/M2*) and a report."""
    t0 = time.perf_counter()
    _set_threads(cfg.grid)
    out = Path(output_dir)
    d = _prepare(cfg)
    figs: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    mlp = train_grid_kind(cfg, "mlp", d, out, figs)
    ae = train_grid_kind(cfg, "autoencoder", d, out, figs)
    mlp.pop("_mlp_result")
    ae.pop("_autoencoder_result")
    metrics.update(mlp)
    metrics.update(ae)
    metrics["grids_seconds"] = round(time.perf_counter() - t0, 3)

    st = cfg.get("study") or {}
    hybrids: dict[str, Any] = {}
    for fam in ("M1", "M2"):
        choice = st.get(fam.lower(), "auto")
        best = ae.get(f"autoencoder_{fam}_best")
        if choice == "auto":
            if best is None:
                continue
            h, lr = best["hidden"], best["lr"]
        else:
            h, lr = check_int(f"study.{fam.lower()}", choice, 1, MAX_WIDTH), st.get(f"{fam.lower()}_lr", 0.1)
        log.info("hybrid with %s* = %d hidden (lr %g)", fam, h, lr)
        kw = _kwargs(cfg.model, ae_hidden=h, ae_lr=lr)
        epochs = check_int("study.hybrid_epochs", st.get("hybrid_epochs", cfg.trainer.max_epochs), 1, 1_000_000)
        r = fit_hybrid(trainers, _datamodule(cfg), kw, epochs, out / f"hybrid_{fam}", name=f"hybrid_{fam}")
        pred, true = np.asarray(r.pop("test_predictions_deg")), np.asarray(r.pop("test_true_deg"))
        no = {"M1": ("fig10", "fig11"), "M2": ("fig17", "fig18")}[fam]
        for j, (what, fig) in enumerate(zip(("latitude", "longitude"), no)):
            figs[f"hybrid_{fam}_{what}"] = plot_true_vs_pred(
                true[:, j],
                pred[:, j],
                what,
                f"hybrid {fam}* (hidden {h}, lr {lr}): test {what}; mean error {r['test/km']:.0f} km",
                out / f"{fig}_hybrid_{fam}_{what}.png",
            ).name
        hybrids[fam] = {"ae_hidden": h, "ae_lr": lr, **{k: v for k, v in r.items() if not isinstance(v, (dict, list))}}
    metrics["hybrid"] = hybrids
    metrics["baselines"] = baselines(d)
    metrics["figures"] = figs
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    write_report(out, metrics)
    return metrics


def write_report(out: Path, m: dict[str, Any]) -> Path:
    L = ["# GOM study report", ""]
    L += [
        "## MLP grid (best / median / worst by validation energy)",
        "",
        "| rank | depth | width | lr | best val energy | epochs run | test energy | test km |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rank in ("best", "median", "worst"):
        r = m.get(f"mlp_{rank}")
        if r:
            L.append(
                f"| {rank} | {r['depth']} | {r['width']} | {r['lr']} | {r['best_val_energy']:.5f} | "
                f"{r['epochs_run']} | {r['test_energy']:.5f} | {r['test_km']:.0f} |"
            )
    L += [
        "",
        "## Autoencoder grid",
        "",
        "| family | rank | hidden | lr | best val energy | epochs run | test energy |",
        "|---|---|---|---|---|---|---|",
    ]
    for fam in ("M1", "M2"):
        for rank in ("best", "median", "worst"):
            r = m.get(f"autoencoder_{fam}_{rank}")
            if r:
                L.append(
                    f"| {fam} | {rank} | {r['hidden']} | {r['lr']} | {r['best_val_energy']:.5f} | "
                    f"{r['epochs_run']} | {r['test_energy']:.5f} |"
                )
    L += [
        "",
        "## Hybrid (autoencoder code -> regressor), test set",
        "",
        "| model | AE hidden | AE lr | mean km | median km | R^2 lat | R^2 lon |",
        "|---|---|---|---|---|---|---|",
    ]
    for fam, r in (m.get("hybrid") or {}).items():
        L.append(
            f"| hybrid {fam}* | {r['ae_hidden']} | {r['ae_lr']} | {r['test/km']:.0f} | {r['test/km_median']:.0f} | "
            f"{r['test/r2_lat']:.3f} | {r['test/r2_lon']:.3f} |"
        )
    b = m.get("baselines") or {}
    if b:
        L.append(
            f"| training mean | | | {b['baseline_mean_km']:.0f} | {b['baseline_mean_km_median']:.0f} | "
            f"{b['baseline_mean_r2_lat']:.3f} | {b['baseline_mean_r2_lon']:.3f} |"
        )
        L.append(
            f"| k-NN (k={b['baseline_knn_k']}) | | | {b['baseline_knn_km']:.0f} | {b['baseline_knn_km_median']:.0f} | "
            f"{b['baseline_knn_r2_lat']:.3f} | {b['baseline_knn_r2_lon']:.3f} |"
        )
    L += ["", "## Figures", ""] + [f"- {k}: ![{k}]({v})" for k, v in (m.get("figures") or {}).items()]
    L += [
        "",
        f"Grids: {m.get('mlp_n', 0)} MLPs in {m.get('mlp_seconds', 0):.1f} s, {m.get('autoencoder_n', 0)} "
        f"autoencoders in {m.get('autoencoder_seconds', 0):.1f} s (vectorized); whole study {m.get('seconds', 0):.0f} s.",
    ]
    return write_text_atomic(out / "report.md", "\n".join(L) + "\n")


# -------------------------------------------------------------------------------------------- CV
def cv_baseline_settings(cfg: DictConfig) -> tuple[int, list[str]]:
    """(trees, targets) of the CV's random-forest baselines (`cv.forest_trees`, `cv.forest_targets`;
    no targets: no forest), checked before the first fold trains."""
    cv = cfg.get("cv") or {}
    trees = check_int("cv.forest_trees", cv.get("forest_trees", 500), 1, 100_000)
    targets = list(cv.get("forest_targets") or [])
    for i, t in enumerate(targets):
        check_choice(f"cv.forest_targets[{i}]", t, FOREST_TARGETS)
    return trees, targets


def fold_baselines(d: GomData, k: int, trees: int, targets: Sequence[str], seed: int, threads: int) -> dict[str, Any]:
    """Test-fold predictions (degrees) of the baselines on one CV fold: the training mean and k-NN
    (k given, chosen on the fold's validation split) from the training split, as the model sees it;
    the random forests from every row outside the test fold (a forest needs no validation split,
    as in Zhou et al.'s 10-fold CV)."""
    x_tr, x_va, x_te = (x.double().numpy() for x in (d.x_train, d.x_val, d.x_test))
    y_tr, y_va = d.yd_train.numpy(), d.yd_val.numpy()
    n = len(x_te)
    out = {
        "mean": np.broadcast_to(y_tr.mean(0), (n, 2)),
        "knn": knn_predict(x_tr, y_tr, x_te, k),
    }
    x_fit, y_fit = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    for t in targets:
        out[f"rf_{t}"] = forest_predict(x_fit, y_fit, x_te, t, trees, seed, threads)
    return out


def run_cv(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry: k-fold CV of the hybrid in cfg.model (each fold a Lightning fit with its own val split
    for checkpoint selection / early stopping), plus the training-mean, k-NN and random-forest
    baselines on the same folds (the fold assignment is drawn from `seed`)."""
    out = Path(output_dir)
    cv = cfg.get("cv") or {}
    _set_threads(cv)
    k = int(cfg.data.get("cv_folds") or 10)
    check_int("data.cv_folds", k, 2, 1000)
    trees, targets = cv_baseline_settings(cfg)
    if cfg.trainer.get("fast_dev_run"):  # debug=fdr asks "does it run?": two folds and small forests answer it
        fdr = cv.get("fast_dev_run") or {}
        k = min(k, check_int("cv.fast_dev_run.folds", fdr.get("folds", 2), 2, 1000))
        trees = min(trees, check_int("cv.fast_dev_run.forest_trees", fdr.get("forest_trees", 5), 1, 100_000))
    threads = int(cv.get("threads") or 1)
    folds: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = {}

    with fit_progress(k, f"{k}-fold CV") as progress:
        for f in range(k):
            dm = _datamodule(cfg, cv_folds=k, fold=f)
            r = fit_hybrid(
                trainers, dm, _kwargs(cfg.model), int(cfg.trainer.max_epochs), out / f"fold_{f}", name=f"fold_{f}"
            )
            pred, true = np.asarray(r.pop("test_predictions_deg")), np.asarray(r.pop("test_true_deg"))
            preds = {
                "model": pred,
                **fold_baselines(dm.data, int(r["test/baseline_knn_k"]), trees, targets, cfg.seed, threads),
            }
            row: dict[str, Any] = {"fold": f}
            for name, p in preds.items():
                km = haversine_km(p[:, 0], p[:, 1], true[:, 0], true[:, 1])
                pooled.setdefault(name, []).append(km)
                row[f"{name}_km"] = float(km.mean())
            val_km = (r.get("history") or {}).get("val_km") or [None]  # none: fewer epochs than check_val_every_n_epoch
            row.update(
                val_km=val_km[-1],  # the inner validation split's km at the last validation (settings are chosen on it)
                model_km_median=r["test/km_median"],
                model_r2=r["test/r2"],
                knn_k=r["test/baseline_knn_k"],
                epochs=r["epochs_trained"],
            )
            row["test_km"] = row["model_km"]  # the name earlier reports read
            folds.append(row)
            progress.done(f"fold {f + 1}/{k}: " + ", ".join(f"{n} {row[f'{n}_km']:,.0f} km" for n in preds))
    write_table(folds, out / "cv_folds", f"{k}-fold cross-validation")
    res: dict[str, Any] = {}
    for name, v in pooled.items():
        km = np.concatenate(v)
        res[f"cv_{name}_km"] = float(km.mean())
        res[f"cv_{name}_km_median"] = float(np.median(km))
    validated = [f["val_km"] for f in folds if f["val_km"] is not None]
    if validated:
        res["cv_model_val_km"] = float(np.mean(validated))
    res["cv_folds"] = k
    res["cv_tracks"] = int(sum(len(x) for x in pooled["model"]))
    res["cv_forest_trees"] = trees
    res["zhou2014_rf_km"] = 3113.0
    res["folds"] = folds
    return res


# ------------------------------------------------------------------------------- multirun report
def report_multirun(sweep_dir: str | Path) -> Path:
    """Tables and best/median/worst curves from a Hydra multirun of experiment=gom_mlp or
    gom_autoencoder (each job's results.json holds its per-epoch history):

        python -m hybridlearn.gom.study lightning_logs/gom_mlp/multiruns/<time>
    """
    sweep = Path(sweep_dir)
    jobs = []
    for f in sorted(sweep.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        r = json.loads(f.read_text())
        if r.get("status") == "completed" and "history" in r.get("metrics", {}):
            jobs.append(r)
    if not jobs:
        raise ConfigError(f"{sweep}: no completed gom_mlp / gom_autoencoder jobs with a history in */results.json")
    kind = "autoencoder" if jobs[0].get("task_name", "").startswith("gom_autoencoder") else "mlp"
    E = max(len(j["metrics"]["history"]["train_energy"]) for j in jobs)
    M = len(jobs)

    def arr(key: str) -> np.ndarray:
        a = np.full((M, E), np.nan)
        for i, j in enumerate(jobs):
            v = j["metrics"]["history"][key]
            a[i, : len(v)] = v
        return a

    specs, rows = [], []
    for j in jobs:
        tag = {
            o.split("=", 1)[0].split(".")[-1]: o.split("=", 1)[1]
            for o in j.get("overrides", [])
            if o.startswith("model.")
        }
        specs.append(NetSpec((), 0.0, 0, tag))
        m = j["metrics"]
        row = dict(tag)
        row.update(
            best_val_energy=m.get("best_val_energy"),
            best_epoch=m.get("best_epoch"),
            epochs_run=m.get("epochs_run"),
            final_train_energy=m.get("final_train_energy"),
            test_energy=m.get("test/energy"),
        )
        if kind == "mlp":
            row.update(test_km=m.get("test/km"), test_r2=m.get("test/r2"))
        rows.append(row)
    res = GridResult(
        specs,
        arr("train_energy"),
        arr("train_delta"),
        arr("train_delta_abs"),
        arr("val_energy"),
        arr("val_delta"),
        arr("val_delta_abs"),
        np.array([r["epochs_run"] for r in rows]),
        np.array([r["best_val_energy"] for r in rows], dtype=float),
        np.array([r["best_epoch"] for r in rows]),
        [],
        [],
    )
    order = np.argsort(res.best_val, kind="stable")
    write_table(
        [rows[i] for i in order],
        sweep / f"grid_{kind}",
        f"GOM {kind} multirun ({M} jobs, sorted by best validation energy)",
    )
    for rank, i in rank_indices(res).items():
        tag = ", ".join(f"{k}={v}" for k, v in specs[i].tag.items())
        plot_grid_curves(
            res, i, f"{kind} {rank}: {tag}; best val energy {res.best_val[i]:.4g}", sweep / f"{kind}_{rank}_curves.png"
        )
    return sweep / f"grid_{kind}.md"


if __name__ == "__main__":
    for d in sys.argv[1:] or ["."]:
        print(report_multirun(d))
