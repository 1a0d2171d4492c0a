"""k-fold cross-validation of a hybrid configuration (`entry: hybridlearn.gom.cv:run_cv`,
experiment=gom_cv): great-circle km pooled over all folds, as Zhou et al. 2014 report, with the
training-mean, k-NN and random-forest baselines on the same folds. Each fold is a Lightning fit
(`fit.fit_and_test`) in its own subfolder `fold_<k>/`. The baselines' settings are `study:` (study=gom_cv,
gom.conf.GomCVConfig)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from hybridlearn.core.progress import fit_progress
from hybridlearn.core.results import write_table
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.gom.data import GomData
from hybridlearn.gom.fit import fit_and_test
from hybridlearn.gom.metrics import forest_predict, haversine_km, knn_predict
from hybridlearn.gom.results import CvResult
from hybridlearn.gom.settings import build_model, datamodule, set_threads


def cv_settings(cfg: DictConfig) -> tuple[int, int, list[str]]:
    """(folds, forest trees, forest targets); debug=fdr asks "does it run?": `study.fast_dev_run`'s
    folds and small forests answer it."""
    st = cfg.study
    k, trees, targets = cfg.data.cv_folds, st.forest_trees, list(st.forest_targets)
    if cfg.trainer.get("fast_dev_run"):
        k, trees = min(k, st.fast_dev_run.folds), min(trees, st.fast_dev_run.forest_trees)
    return k, trees, targets


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


def run_fold(
    cfg: DictConfig, trainers: TrainerFactory, f: int, k: int, forest: tuple[int, list[str]], out: Path
) -> tuple[dict, dict]:
    """Fold f of k: the model and the baselines trained on the other folds. Returns (its row of
    cv_folds.csv, predictor -> km of each test track)."""
    dm = datamodule(cfg, cv_folds=k, fold=f)
    model = build_model(cfg)
    r = fit_and_test(trainers, dm, model, cfg.trainer.max_epochs, out / f"fold_{f}", name=f"fold_{f}")
    pred, true = np.asarray(r.pop("test_predictions_deg")), np.asarray(r.pop("test_true_deg"))
    threads = cfg.study.threads or 1
    knn_k = int(r["test/baseline_knn_k"])
    preds = {"model": pred, **fold_baselines(dm.data, knn_k, *forest, cfg.seed, threads)}
    row: dict[str, Any] = {"fold": f}
    kms = {}
    for name, p in preds.items():
        kms[name] = haversine_km(p[:, 0], p[:, 1], true[:, 0], true[:, 1])
        row[f"{name}_km"] = float(kms[name].mean())
    val_km = (r.get("history") or {}).get("val_km") or [None]  # none: fewer epochs than check_val_every_n_epoch
    row.update(
        val_km=val_km[-1],  # the inner validation split's km at the last validation (settings are chosen on it)
        model_km_median=r["test/km_median"],
        model_r2=r["test/r2"],
        knn_k=r["test/baseline_knn_k"],
        epochs=r["epochs_trained"],
    )
    row["test_km"] = row["model_km"]  # the name earlier reports read
    return row, kms


def run_cv(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry: k-fold CV of the model in cfg.model (each fold a Lightning fit with its own val split
    for checkpoint selection / early stopping), plus the training-mean, k-NN and random-forest
    baselines on the same folds (the fold assignment is drawn from `seed`)."""
    out = Path(output_dir)
    set_threads(cfg.study)
    k, trees, targets = cv_settings(cfg)
    folds: list[dict[str, Any]] = []
    pooled: dict[str, list[np.ndarray]] = {}
    with fit_progress(k, f"{k}-fold CV") as progress:
        for f in range(k):
            row, kms = run_fold(cfg, trainers, f, k, (trees, targets), out)
            for name, km in kms.items():
                pooled.setdefault(name, []).append(km)
            folds.append(row)
            progress.done(f"fold {f + 1}/{k}: " + ", ".join(f"{n} {row[f'{n}_km']:,.0f} km" for n in kms))
    write_table(folds, out / "cv_folds", f"{k}-fold cross-validation")
    km = {name: np.concatenate(v) for name, v in pooled.items()}
    validated = [f["val_km"] for f in folds if f["val_km"] is not None]
    return CvResult(
        pooled={name: (float(v.mean()), float(np.median(v))) for name, v in km.items()},
        folds_n=k,
        tracks=int(len(km["model"])),
        forest_trees=trees,
        folds=folds,
        model_val_km=float(np.mean(validated)) if validated else None,
    ).metrics()
