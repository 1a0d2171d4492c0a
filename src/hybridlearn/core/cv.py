"""k-fold cross-validation of any experiment (`cv.folds=5`, `cv.seed`, `cv.group_by=writer`): each fold
is a normal Lightning fit into `fold_<k>/` of the run folder, tested on its held-out fold; the run's
results.json holds the pooled metrics, their mean ± std over folds and the per-fold table.

A data module takes part by listing its samples and training on a subset of them:

    def cv_groups(self, group_by: str | None) -> Sequence:   # one entry per sample of its CV pool
        ...                                                  # (the value: the sample's group, e.g. writer)
    def use_fold(self, train: Sequence[int], test: Sequence[int]) -> None:
        ...          # fit (and carve its validation split) from `train`, test on `test`

Folds are drawn from `cv.seed` (samples shuffled, or whole groups when `group_by` is set, so a group
such as one writer's digits never spans two folds; folds = groups is leave-one-group-out). A killed
CV resumes where it stopped: finished folds are read back, the unfinished one resumes from its
last.ckpt, the rest start fresh."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from hybridlearn.core.checkpoint import instantiate_module
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import write_json_atomic
from hybridlearn.core.results import FOLD, to_number, write_results, write_table
from hybridlearn.core.runs import read_record
from hybridlearn.core.stats import t_interval
from hybridlearn.core.trainer import TrainerFactory, finish_loggers

log = logging.getLogger(__name__)
FOLDS_FILE = "cv_folds.json"


def fold_indices(groups: Sequence[Any], k: int, seed: int, grouped: bool) -> list[np.ndarray]:
    """The test indices of each of `k` folds over len(groups) samples: a seeded shuffle cut into k
    near-equal parts, or (grouped) whole groups, shuffled and given to the fold with the fewest samples
    so far, largest groups first (folds as even as whole groups allow)."""
    n = len(groups)
    rng = np.random.default_rng(seed)
    if not grouped:
        if k > n:
            raise ConfigError(f"cv.folds={k} is more than the {n} samples the data module lists")
        return [np.sort(part) for part in np.array_split(rng.permutation(n), k)]
    labels = np.asarray([str(g) for g in groups])
    names, counts = np.unique(labels, return_counts=True)
    if k > len(names):
        raise ConfigError(f"cv.folds={k} is more than the {len(names)} groups of cv.group_by ({', '.join(names[:10])})")
    order = rng.permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]
    members: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for i in order:
        f = sizes.index(min(sizes))
        members[f].append(names[i])
        sizes[f] += int(counts[i])
    return [np.flatnonzero(np.isin(labels, m)) for m in members]


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Over folds, for each test metric: pooled (the fold values weighted by their test size, which is
    the metric over all held-out samples for means and accuracies; not given for a median, whose pooled
    value needs the samples themselves), mean, std and a 95 % interval."""
    out: dict[str, Any] = {}
    names = sorted({k for r in rows for k, v in r.items() if k.startswith("test/") and isinstance(v, (int, float))})
    sizes = np.array([r["n_test"] for r in rows], dtype=float)
    for name in names:
        vals = np.array([r.get(name, np.nan) for r in rows], dtype=float)
        ok = ~np.isnan(vals)
        if not ok.any():
            continue
        mean, std, lo, hi = t_interval(vals[ok])
        key = f"cv/{name.removeprefix('test/')}"
        if "median" not in name:
            out[key] = float((vals[ok] * sizes[ok]).sum() / sizes[ok].sum())
        out.update({f"{key}_mean": mean, f"{key}_std": std, f"{key}_ci95": [lo, hi]})
    return out


def _group_list(dm: L.LightningDataModule, group_by: str | None) -> Sequence[Any]:
    if not callable(getattr(dm, "cv_groups", None)) or not callable(getattr(dm, "use_fold", None)):
        raise ConfigError(
            f"cv.folds: {type(dm).__name__} cannot list its samples (it has no cv_groups/use_fold); "
            "see core/cv.py for the two methods a data module needs for cross-validation"
        )
    return dm.cv_groups(group_by)


def _assignment(output_dir: Path, groups: Sequence[Any], k: int, seed: int, group_by: str | None) -> list[np.ndarray]:
    """The folds, kept in `cv_folds.json`: a resumed CV must test the folds it started with."""
    folds = fold_indices(groups, k, seed, group_by is not None)
    path = output_dir / FOLDS_FILE
    record = {"folds": k, "seed": seed, "group_by": group_by, "n": len(groups), "test": [f.tolist() for f in folds]}
    if path.is_file():
        old = json.loads(path.read_text())
        if old != record:
            raise ConfigError(
                f"{path} holds another fold assignment (folds/seed/group_by or the data changed); "
                "resume with the settings it was started with, or start a new run"
            )
    else:
        write_json_atomic(path, record)
    return folds


def _fit_fold(
    cfg: DictConfig, trainers: TrainerFactory, f: int, train: np.ndarray, test: np.ndarray, fold_dir: Path, name: str
) -> dict[str, Any]:
    """Fold f: a fresh data module and model (seeded as the run), fitted on `train` (resumed from the
    fold's last.ckpt when a killed run left one), its best checkpoint tested on `test`."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = instantiate(cfg.data)
    dm.use_fold(train.tolist(), test.tolist())
    model = instantiate_module(cfg.model)
    if hasattr(model, "prepare_helpers"):
        model.prepare_helpers(trainers)
    last = fold_dir / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() else None
    fold_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_results(fold_dir, status="running", fold=f, n_test=len(test))
    trainer = trainers.build(fold_dir, cfg=cfg, name=f"{name}/{fold_dir.name}" if name else fold_dir.name)
    trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True if resume else None)
    # what the fit measured (its last validation): Lightning clears it when the test starts
    fitted = {k: to_number(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    fitted["epochs_trained"] = trainer.current_epoch
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
    if best:
        trainer.test(model, datamodule=dm, ckpt_path=best, weights_only=True, verbose=False)
    else:
        trainer.test(model, datamodule=dm, verbose=False)
    metrics = {**fitted, **{k: to_number(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}}
    finish_loggers(trainer)
    write_results(
        fold_dir,
        status="completed",
        fold=f,
        n_test=len(test),
        metrics=metrics,
        duration_s=round(time.time() - started, 3),
    )
    return metrics


def cross_validate(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory, name: str = "") -> dict[str, Any]:
    """Run the k folds of `cfg.cv` (resuming a killed CV) and return the run's metrics: pooled test
    metrics under `cv/...`, their mean/std/interval over folds, and the per-fold table `cv/folds`;
    cv_folds.md/.csv in the run folder. `name`: the model's, where a study runs several CVs, so each
    fold's Trainer is `<name>/fold_<k>` (its W&B run name and resumable id)."""
    cv = cfg.cv
    k, group_by = int(cv.folds), cv.get("group_by")
    seed = int(cv.seed if cv.get("seed") is not None else (cfg.get("seed") or 0))
    groups = _group_list(instantiate(cfg.data), group_by)
    folds = _assignment(output_dir, groups, k, seed, group_by)
    every = np.arange(len(groups))
    rows = []
    for f, test in enumerate(folds):
        fold_dir = output_dir / f"{FOLD}{f}"
        record = read_record(fold_dir)
        if record.get("status") == "completed":
            metrics = record["metrics"]
            log.info("cv: fold %d/%d finished earlier", f + 1, k)
        else:
            log.info("cv: fold %d/%d (%d held out)", f + 1, k, len(test))
            metrics = _fit_fold(cfg, trainers, f, np.setdiff1d(every, test), test, fold_dir, name)
        held = sorted({str(groups[i]) for i in test}) if group_by else []
        rows.append({"fold": f, "n_test": len(test), **({group_by: " ".join(held)} if group_by else {}), **metrics})
    write_table(rows, output_dir / "cv_folds", f"{k}-fold cross-validation")
    summary = pooled(rows)
    pooled_keys = [m for m in summary if not m.endswith(("_mean", "_std", "_ci95")) and m + "_std" in summary]
    log.info("cv: %s", ", ".join(f"{m} {summary[m]:.4g} (folds {summary[m + '_std']:.2g} std)" for m in pooled_keys))
    return {**summary, "cv/folds": rows}
