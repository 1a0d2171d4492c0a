"""The whole GOM study of the paper (`entry: hybridlearn.gom.study:run_study`, experiment=gom_study):
the MLP grid and the autoencoder grid (`grid_study`), then the hybrid on the chosen reduction (M1*)
and extraction (M2*) autoencoders, the baselines, and one report (`study_report`).

Each hybrid is trained and tested by a Trainer of the run's own config (so `trainer=gpu` and
`logger=wandb` reach it: one W&B run `<run>/hybrid_M1`) in its own subfolder (`hybrid_M1/`,
`hybrid_M2/`); the study's settings are `study:` (study=gom, gom.conf.GomStudyConfig) and `grid:`
(grid=gom).

    python -m hybridlearn.gom.study lightning_logs/gom_mlp/multiruns/<time>   # see gom.multirun
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from hybridlearn.core.trainer import TrainerFactory, finish_loggers
from hybridlearn.gom.figures import plot_true_vs_pred
from hybridlearn.gom.grid_study import train_grid_kind
from hybridlearn.gom.metrics import baselines
from hybridlearn.gom.multirun import report_multirun
from hybridlearn.gom.results import Baselines, GridSummary, HybridResult, StudyResult
from hybridlearn.gom.settings import build_model, datamodule, prepare_data, set_threads
from hybridlearn.gom.study_report import write_study_report

log = logging.getLogger(__name__)
TRUE_VS_PRED_FIGS = {"M1": ("fig10", "fig11"), "M2": ("fig17", "fig18")}  # latitude, longitude


def run_study(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry: the whole GOM study (MLP grid, autoencoder grid, hybrids with M1*/M2*) and a report."""
    t0 = time.perf_counter()
    set_threads(cfg.grid)
    out = Path(output_dir)
    d = prepare_data(cfg)
    mlp, figs = train_grid_kind(cfg, "mlp", d, out)
    ae, ae_figs = train_grid_kind(cfg, "autoencoder", d, out)
    figs.update(ae_figs)
    grids_seconds = round(time.perf_counter() - t0, 3)
    hybrids: dict[str, HybridResult] = {}
    for fam in ("M1", "M2"):
        choice = hybrid_choice(cfg, fam, ae)
        if choice is not None:
            hybrids[fam], fam_figs = train_hybrid(cfg, trainers, fam, *choice, out)
            figs.update(fam_figs)
    result = StudyResult(
        mlp,
        ae,
        grids_seconds,
        hybrids,
        Baselines.read(baselines(d), "baselines"),
        figs,
        round(time.perf_counter() - t0, 3),
    )
    write_study_report(out, result)
    return result.metrics()


def hybrid_choice(cfg: DictConfig, fam: str, ae: GridSummary) -> tuple[int, float] | None:
    """(hidden units, lr) of the family's autoencoder: `study.m1`/`study.m2` (default auto: the
    grid's best); None when auto and the grid has no autoencoder of that family."""
    choice = cfg.study[fam.lower()]
    if choice != "auto":
        return choice, cfg.study[f"{fam.lower()}_lr"]
    best = ae.picks.get(f"{fam}_best")
    return None if best is None else (best.hidden, best.lr)


def train_hybrid(
    cfg: DictConfig, trainers: TrainerFactory, fam: str, h: int, lr: float, out: Path
) -> tuple[HybridResult, dict[str, str]]:
    """The hybrid on a fresh autoencoder of h hidden units (lr), in `hybrid_<fam>/`; its result and figures."""
    log.info("hybrid with %s* = %d hidden (lr %g)", fam, h, lr)
    dm = datamodule(cfg)
    model = build_model(cfg, **{"autoencoder.hidden": h, "autoencoder.lr": lr})
    trainer = trainers.build(out / f"hybrid_{fam}", name=f"hybrid_{fam}", max_epochs=cfg.study.hybrid_epochs)
    trainer.fit(model, datamodule=dm)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None  # none: callbacks=none
    trainer.test(model, datamodule=dm, ckpt_path=best, weights_only=True if best else None, verbose=False)
    finish_loggers(trainer)  # this model's W&B run is complete (a failure is closed by the core)
    r = {**model.extra_results, "epochs_trained": trainer.current_epoch, "best_ckpt": best or ""}
    pred, true = np.asarray(r.pop("test_predictions_deg")), np.asarray(r.pop("test_true_deg"))
    figs = {}
    for j, (what, fig) in enumerate(zip(("latitude", "longitude"), TRUE_VS_PRED_FIGS[fam])):
        figs[f"hybrid_{fam}_{what}"] = plot_true_vs_pred(
            true[:, j],
            pred[:, j],
            what,
            f"hybrid {fam}* (hidden {h}, lr {lr}): test {what}; mean error {r['test/km']:.0f} km",
            out / f"{fig}_hybrid_{fam}_{what}.png",
        ).name
    scalars = {"ae_hidden": h, "ae_lr": lr, **{k: v for k, v in r.items() if not isinstance(v, (dict, list))}}
    return HybridResult.read(scalars, f"hybrid_{fam}"), figs


if __name__ == "__main__":  # the multirun reporter's command line, kept where docs/gom.md names it
    for d in sys.argv[1:] or ["."]:
        print(report_multirun(d))
