"""What a GOM fit leaves in its folder beside its checkpoints, for whoever pools many fits (the k-fold
CV of experiment=gom_cv: core.cv keeps each fold's scalar test metrics only)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np

from hybridlearn.core.io import write_json_atomic, write_text_atomic
from hybridlearn.core.results import to_number
from hybridlearn.gom.models import GomModule

PREDICTIONS = "test_predictions.csv"
FIT = "fit_metrics.json"
COLUMNS = "row,lat,lon,pred_lat,pred_lon"


class FoldRecord(L.Callback):
    """In the Trainer's folder: `fit_metrics.json` at the end of the fit (the epochs trained and the last
    validation's `val/...`, which Lightning clears when the test starts) and `test_predictions.csv`
    after a test (each tested track: its 0-based row in the data file, its origin and the prediction,
    in degrees)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val = {k: to_number(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        path = Path(trainer.default_root_dir) / FIT
        if val or not path.is_file():  # no validation after a resume: the record of the fit's start stays
            write_json_atomic(path, {"epochs": trainer.current_epoch, **val})

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not isinstance(pl_module, GomModule) or pl_module.test_degrees is None:
            return
        pred, true = pl_module.test_degrees
        rows = trainer.datamodule.data.idx_test
        lines = [",".join([str(r), *(f"{v:.17g}" for v in (*t, *p))]) for r, t, p in zip(rows, true, pred)]
        write_text_atomic(Path(trainer.default_root_dir) / PREDICTIONS, "\n".join([COLUMNS, *lines]) + "\n")


def read_predictions(fold_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, true, predicted) of a fold's test_predictions.csv (FileNotFoundError when it has none)."""
    a = np.loadtxt(fold_dir / PREDICTIONS, delimiter=",", skiprows=1, ndmin=2)
    return a[:, 0].astype(np.int64), a[:, 1:3], a[:, 3:5]
