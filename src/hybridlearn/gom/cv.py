"""k-fold cross-validation of a GOM model beside its baselines (`entry: hybridlearn.gom.cv:run_cv`,
experiment=gom_cv*). The model's folds are core.cv's (`cv.folds`, `cv.seed`): each a Lightning fit in
`fold_<k>/` on the other folds (data.split's train:val ratio carves its inner validation split), tested
on the held-out fold, a killed CV resuming at its next unfinished fold. Then the training-mean, k-NN
and random-forest baselines run on exactly those folds (the assignment core.cv keeps in cv_folds.json),
and every predictor's great-circle km is pooled over all held-out tracks, as Zhou et al. 2014 report
(CvResult). The baselines' settings are `study:` (study=gom_cv, gom.conf.GomCVConfig)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig, open_dict

from hybridlearn.core.cv import FOLDS_FILE, cross_validate, pooled
from hybridlearn.core.errors import DataError
from hybridlearn.core.io import write_text_atomic
from hybridlearn.core.results import FOLD, write_table
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.gom.data import GomData
from hybridlearn.gom.metrics import baseline_predictions, forest_predict, haversine_km
from hybridlearn.gom.results import CvResult
from hybridlearn.gom.settings import datamodule, set_threads

log = logging.getLogger(__name__)
PREDICTIONS = "test_predictions.csv"  # each fold's, beside its checkpoints


class FoldRecord(L.Callback):
    """In the Trainer's folder, after a test: `test_predictions.csv` (each tested track: its 0-based row
    in the data file, its origin and the prediction, in degrees), for the baselines' same-track check."""

    TARGET = "hybridlearn.gom.cv.FoldRecord"  # its `_target_` in a callbacks config

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "test_degrees", None) is None:  # a GomModule that has tested
            return
        pred, true = pl_module.test_degrees
        rows = trainer.datamodule.data.idx_test
        lines = [",".join([str(r), *(f"{v:.17g}" for v in (*t, *p))]) for r, t, p in zip(rows, true, pred)]
        write_text_atomic(
            Path(trainer.default_root_dir) / PREDICTIONS, "\n".join(["row,lat,lon,pred_lat,pred_lon", *lines]) + "\n"
        )


def fold_baselines(d: GomData, targets: Sequence[str], trees: int, seed: int, threads: int) -> dict[str, np.ndarray]:
    """Test-fold predictions (degrees) of the baselines on one fold's data: the training mean and k-NN
    (k chosen on the inner validation split) as the model's own test computes them; the random forests
    from every row outside the test fold (a forest needs no validation split, as Zhou et al.'s CV)."""
    out, _ = baseline_predictions(d)
    x_fit = np.concatenate([d.x_train.double().numpy(), d.x_val.double().numpy()])
    y_fit = np.concatenate([d.yd_train.numpy(), d.yd_val.numpy()])
    for t in targets:
        out[f"rf_{t}"] = forest_predict(x_fit, y_fit, d.x_test.double().numpy(), t, trees, seed, threads)
    return out


def model_predictions(fold_dir: Path, rows: np.ndarray) -> np.ndarray:
    """The fold's test predictions (degrees) as its fit wrote them, checked to be of the tracks `rows`."""
    path, redo = fold_dir / PREDICTIONS, f"delete {fold_dir / 'results.json'} to train the fold again"
    if not path.is_file():
        raise DataError(f"{path} is missing (the fold was trained by another version); {redo}")
    a = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if not np.array_equal(a[:, 0], rows):
        raise DataError(f"{path} holds other tracks than the fold's test tracks in {FOLDS_FILE}; {redo}")
    return a[:, 3:5]


def run_cv(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry: the model's folds by core.cv (their Trainers with FoldRecord; under debug=fdr at most
    `study.fast_dev_run` folds and trees), then the baselines on the same folds. The metrics: core.cv's
    (cv/..., `cv/folds`: each fold's row, here with its epochs, inner validation `val/...` and forests'
    km) and CvResult's (km pooled over every held-out track, per predictor)."""
    out, st, fdr = Path(output_dir), cfg.study, cfg.trainer.get("fast_dev_run")
    set_threads(st)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.callbacks = cfg.get("callbacks") or {}
        cfg.callbacks.gom_fold_record = {"_target_": FoldRecord.TARGET}
        cfg.cv.folds = min(cfg.cv.folds, st.fast_dev_run.folds) if fdr else cfg.cv.folds
    trees = min(st.forest_trees, st.fast_dev_run.forest_trees) if fdr else st.forest_trees
    metrics = cross_validate(cfg, out, trainers)
    assignment = json.loads((out / FOLDS_FILE).read_text())
    rows, every, km = metrics["cv/folds"], np.arange(assignment["n"]), {}
    for row, test in zip(rows, assignment["test"]):
        fold_dir, dm = out / f"{FOLD}{row['fold']}", datamodule(cfg)
        dm.use_fold(np.setdiff1d(every, test).tolist(), test)
        dm.setup()
        preds = {"model": model_predictions(fold_dir, dm.data.idx_test)}
        preds.update(fold_baselines(dm.data, list(st.forest_targets), trees, cfg.seed, st.threads or 1))
        true = dm.data.yd_test.numpy()
        for name, p in preds.items():
            km.setdefault(name, []).append(haversine_km(p[:, 0], p[:, 1], true[:, 0], true[:, 1]))
            if name.startswith("rf_"):
                row[f"test/baseline_{name}_km"] = float(km[name][-1].mean())
        log.info("cv: fold %d: %s", row["fold"], ", ".join(f"{n} {v[-1].mean():,.0f} km" for n, v in km.items()))
    write_table(rows, out / "cv_folds", f"{len(rows)}-fold cross-validation")
    val = [r["val/km"] for r in rows if "val/km" in r]
    result = CvResult(
        {name: (float(np.concatenate(v).mean()), float(np.median(np.concatenate(v)))) for name, v in km.items()},
        rows,
        trees,
        float(np.mean(val)) if val else None,
    )
    return {**metrics, **pooled(rows), **result.metrics()}
