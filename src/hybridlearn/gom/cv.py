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

import numpy as np
from omegaconf import DictConfig, open_dict

from hybridlearn.core.cv import FOLDS_FILE, cross_validate, pooled
from hybridlearn.core.errors import DataError
from hybridlearn.core.results import write_table
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.gom.callbacks import FIT, PREDICTIONS, FoldRecord, read_predictions
from hybridlearn.gom.data import GomData
from hybridlearn.gom.metrics import baseline_predictions, forest_predict, haversine_km
from hybridlearn.gom.results import CvResult
from hybridlearn.gom.settings import datamodule, set_threads

log = logging.getLogger(__name__)


def fold_config(cfg: DictConfig) -> DictConfig:
    """The run's config for core.cv: FoldRecord among the callbacks (each fold's tracks and inner
    validation km), and under debug=fdr ("does it run?") at most `study.fast_dev_run.folds` folds."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if not cfg.get("callbacks"):
            cfg.callbacks = {}
        cfg.callbacks.gom_fold_record = {"_target_": f"{FoldRecord.__module__}.{FoldRecord.__name__}"}
        if cfg.trainer.get("fast_dev_run"):
            cfg.cv.folds = min(cfg.cv.folds, cfg.study.fast_dev_run.folds)
    return cfg


def fold_baselines(d: GomData, targets: Sequence[str], trees: int, seed: int, threads: int) -> dict[str, np.ndarray]:
    """Test-fold predictions (degrees) of the baselines on one fold's data: the training mean and k-NN
    from the training split (k chosen on the inner validation split), as the model's own test computes
    them; the random forests from every row outside the test fold (a forest needs no validation
    split, as in Zhou et al.'s 10-fold CV)."""
    out, _ = baseline_predictions(d)
    x_fit = np.concatenate([d.x_train.double().numpy(), d.x_val.double().numpy()])
    y_fit = np.concatenate([d.yd_train.numpy(), d.yd_val.numpy()])
    for t in targets:
        out[f"rf_{t}"] = forest_predict(x_fit, y_fit, d.x_test.double().numpy(), t, trees, seed, threads)
    return out


def model_predictions(fold_dir: Path, rows: np.ndarray) -> np.ndarray:
    """The fold's test predictions (degrees) as its fit wrote them, checked to be of the tracks `rows`."""
    path = fold_dir / PREDICTIONS
    redo = f"delete {fold_dir / 'results.json'} to train the fold again"
    try:
        got, _, pred = read_predictions(fold_dir)
    except OSError:
        raise DataError(f"{path} is missing (the fold was trained by another version); {redo}") from None
    if not np.array_equal(got, rows):
        raise DataError(f"{path} holds other tracks than the fold's test tracks in {FOLDS_FILE}; {redo}")
    return pred


def fold_fit(fold_dir: Path) -> dict[str, Any]:
    """The fold's epochs and last inner validation metrics (core.cv records the fold's metrics after
    its test, when Lightning has cleared them); none when the fold's fit never validated."""
    path = fold_dir / FIT
    return json.loads(path.read_text()) if path.is_file() else {}


def run_cv(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry: the model's k folds by core.cv, then the baselines on the same folds; the run's metrics
    are core.cv's (cv/km, ..., `cv/folds`, each fold's row with its inner validation `val/...` and its
    forests' km) and CvResult's (km pooled over every held-out track, per predictor)."""
    out = Path(output_dir)
    set_threads(cfg.study)
    cfg = fold_config(cfg)
    st = cfg.study
    trees = min(st.forest_trees, st.fast_dev_run.forest_trees) if cfg.trainer.get("fast_dev_run") else st.forest_trees
    folds = TrainerFactory(cfg)  # the folds' Trainers get FoldRecord; the run's list keeps them (the runner
    folds.built = trainers.built  # closes their W&B runs and finds their last.ckpt on Ctrl-C)
    metrics = cross_validate(cfg, out, folds)
    assignment = json.loads((out / FOLDS_FILE).read_text())
    rows, every = metrics["cv/folds"], np.arange(assignment["n"])
    km: dict[str, list[np.ndarray]] = {}
    for row, test in zip(rows, assignment["test"]):
        fold_dir = out / f"fold_{row['fold']}"
        dm = datamodule(cfg)
        dm.use_fold(np.setdiff1d(every, test).tolist(), test)
        dm.setup()
        d = dm.data
        preds = {"model": model_predictions(fold_dir, d.idx_test)}
        preds.update(fold_baselines(d, list(st.forest_targets), trees, cfg.seed, st.threads or 1))
        true = d.yd_test.numpy()
        for name, p in preds.items():
            km.setdefault(name, []).append(haversine_km(p[:, 0], p[:, 1], true[:, 0], true[:, 1]))
            if name.startswith("rf_"):
                row[f"test/baseline_{name}_km"] = float(km[name][-1].mean())
        row.update(fold_fit(fold_dir))
        log.info(
            "cv: fold %d baselines: %s", row["fold"], ", ".join(f"{n} {v[-1].mean():,.0f} km" for n, v in km.items())
        )
    write_table(rows, out / "cv_folds", f"{len(rows)}-fold cross-validation")
    val = [r["val/km"] for r in rows if r.get("val/km") is not None]
    result = CvResult(
        pooled={name: (float(np.concatenate(v).mean()), float(np.median(np.concatenate(v)))) for name, v in km.items()},
        folds=rows,
        forest_trees=trees,
        val_km=float(np.mean(val)) if val else None,
    )
    return {**metrics, **pooled(rows), **result.metrics()}
