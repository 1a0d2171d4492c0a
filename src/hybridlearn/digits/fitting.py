"""One run of the digits study: a variant of the run's config trained by a Trainer built from
it, its per-epoch history and learning curves, and its model's test predictions.

- `CurvesPlot`: a Lightning callback writing the train/val loss and accuracy curves (figs 12-13).
- `fit_one`: the variant (paper, transfer, an ablation) merged onto the run's own config
  (`variant_config`) and trained; returns its history, test accuracy and probabilities.
- `fit_writers_out`: the same, leave-one-writer-out by core.cv (one fold per writer group); returns
  each held-out writer's test probabilities, which `FoldProbabilities` writes beside each fold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from hybridlearn.core.checkpoint import instantiate_module
from hybridlearn.core.cv import FOLDS_FILE, cross_validate
from hybridlearn.core.errors import DataError
from hybridlearn.core.io import write_text_atomic
from hybridlearn.core.plotting import plot_curves
from hybridlearn.core.results import FOLD
from hybridlearn.core.trainer import TrainerFactory, finish_loggers
from hybridlearn.digits.conf import variant_config
from hybridlearn.digits.results import Misread

KEYS = {
    "train_loss": "train/loss_epoch",
    "train_acc": "train/acc",
    "val_loss": "val/loss",
    "val_acc": "val/acc",
}


class EpochHistory(L.Callback):
    """Per-epoch train/val loss and accuracy; test accuracy at the epochs in `test_at`."""

    def __init__(
        self,
        test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        test_at: Sequence[int] = (),
    ):
        self.history: list[dict[str, float]] = []
        self.test_data, self.test_at = test_data, set(test_at)
        self.test_acc: dict[int, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for k, key in KEYS.items():
            if key in m or (k == "train_loss" and "train/loss" in m):
                row[k] = float(m.get(key, m.get("train/loss")))
        self.history.append(row)
        if self.test_data is not None and row["epoch"] in self.test_at:
            self.test_acc[row["epoch"]] = accuracy(pl_module, *self.test_data)


class CurvesPlot(EpochHistory):
    """Writes `path` (PNG: loss and accuracy per epoch, train vs val) when fitting ends."""

    def __init__(self, path: str, title: str = ""):
        super().__init__()
        self.path, self.title = path, title

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.history or trainer.fast_dev_run or not trainer.is_global_zero:
            return
        curves([self.history], self.path, self.title)


def curves(
    histories: list[list[dict]],
    path: str | Path,
    title: str = "",
    paper: dict | None = None,
) -> Path:
    """Train/val loss and accuracy per epoch of one or several runs (mean and min-max band), with
    the paper's accuracies as markers (core.plotting.plot_curves)."""
    panels = {
        metric: {
            split: [[h.get(f"{split}_{key}", float("nan")) for h in hist] for hist in histories]
            for split in ("train", "val")
        }
        for metric, key in (("loss", "loss"), ("accuracy", "acc"))
    }
    markers = (
        {
            "accuracy": {
                f"paper ({split})": [(e, p[f"{split}_acc"]) for e, p in (paper or {}).items()]
                for split in ("train", "val")
            }
        }
        if paper
        else None
    )
    return plot_curves(
        panels,
        path,
        title,
        markers=markers,
        ylabels={"loss": "cross-entropy loss", "accuracy": "accuracy"},
    )


@torch.no_grad()
def probabilities(model: torch.nn.Module, x: torch.Tensor, member: int | None = None) -> torch.Tensor:
    """Class probabilities [N, classes] as predict.py computes them (with the model's TTA); `member`:
    that network of an ensemble alone (LeNet5.eval_logits)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    p = torch.cat(
        [torch.softmax(model.eval_logits(x[i : i + 1024].to(dev), member), -1).cpu() for i in range(0, len(x), 1024)]
    )
    model.train(was)
    return p


def member_probabilities(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each network's own probabilities when the model is an ensemble (LeNet5 `ensemble` > 1), else []."""
    members = getattr(model, "members", [])
    return [probabilities(model, x, k) for k in range(len(members))] if len(members) > 1 else []


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((probabilities(model, x).argmax(1) == y).float().mean())


def fit_one(
    trainers: TrainerFactory,
    cfg: DictConfig,
    name: str,
    seed: int,
    epochs: int,
    output_dir: Path,
    variant: DictConfig,
    *extra: DictConfig | dict | None,
    test_at: Sequence[int] = (),
) -> dict[str, Any]:
    """One study run (`variant`, then the changes in `extra`) for `epochs` epochs, trained by a Trainer
    from the run's config (its loggers write into `<output_dir>/runs/<name>_seed<seed>/`); returns
    the final-epoch metrics and test accuracy. `epochs=0`: the (pretrained) model as it is."""
    run_cfg = variant_config(cfg, variant, *extra, seed=seed)
    L.seed_everything(seed, workers=True, verbose=False)
    dm = instantiate(run_cfg.data)
    dm.setup("fit")
    model = instantiate_module(run_cfg.model)
    model.prepare_helpers(trainers)  # the MNIST pretraining of `model.pretrained: mnist`
    hist = EpochHistory(dm.tensors["test"], test_at=set(test_at) | {epochs})
    if epochs > 0:
        run_name = f"{name}_seed{seed}"
        trainer = trainers.build(
            output_dir / "runs" / run_name,
            cfg=run_cfg,
            name=run_name,
            callbacks=[hist],
            use_config_callbacks=False,
            max_epochs=epochs,
            num_sanity_val_steps=0,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        try:
            trainer.fit(model, datamodule=dm)
        finally:
            finish_loggers(trainer)
        model.eval()
    else:
        hist.history.append({"epoch": 0})
        hist.test_acc[0] = accuracy(model, *dm.tensors["test"])
    last = hist.history[-1]
    x_test, y_test = dm.tensors["test"]
    return {
        "probs": probabilities(model, x_test),
        "member_probs": member_probabilities(model, x_test),
        "labels": y_test,
        "variant": name,
        "seed": seed,
        "epochs": epochs,
        "train_acc": last.get("train_acc"),
        "val_acc": last.get("val_acc"),
        "test_acc": hist.test_acc[epochs],
        "test_acc_at": dict(hist.test_acc),
        "history": hist.history,
        "n": {k: len(v[1]) for k, v in dm.tensors.items()},
        "model": model,
        "dm": dm,
    }


PROBABILITIES = "test_probabilities.csv"  # each fold's, beside its checkpoints
MEMBER_PROBABILITIES = "test_probabilities_member{k}.csv"  # an ensemble's networks, each alone


class FoldProbabilities(L.Callback):
    """In the Trainer's folder, after a test: `test_probabilities.csv` (each test digit: its index among
    the sheets' digits, its label and the tested model's class probabilities as `probabilities` gives
    them), for the study's per-writer scores, ensembles and intervals; for an ensemble also
    `test_probabilities_member<k>.csv`, each network alone."""

    TARGET = "hybridlearn.digits.fitting.FoldProbabilities"  # its `_target_` in a callbacks config

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        x, y = dm.tensors["test"]
        out = Path(trainer.default_root_dir)
        members = member_probabilities(pl_module, x)
        for k, p in enumerate(members):
            self.write(out / MEMBER_PROBABILITIES.format(k=k), dm.indices["test"], y, p)
        self.write(out / PROBABILITIES, dm.indices["test"], y, probabilities(pl_module, x))  # last: "done"

    @staticmethod
    def write(path: Path, index: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> None:
        lines = [
            ",".join([str(i), str(t), *(f"{v:.9g}" for v in row)])  # 9 digits: float32 exactly
            for i, t, row in zip(index.tolist(), y.tolist(), p.tolist())
        ]
        head = ",".join(["index", "label", *(f"p{c}" for c in range(p.shape[1]))])
        write_text_atomic(path, "\n".join([head, *lines]) + "\n")


def read_probabilities(path: Path, test: list, redo: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, labels) of a FoldProbabilities file, checked against the fold's test digits."""
    if not path.is_file():
        raise DataError(f"{path} is missing (the fold was trained by another version); {redo}")
    a = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if not np.array_equal(a[:, 0], test):
        raise DataError(f"{path} holds other digits than the fold's test digits in {FOLDS_FILE}; {redo}")
    return torch.from_numpy(a[:, 2:]).float(), torch.from_numpy(a[:, 1]).long()


def fit_writers_out(
    trainers: TrainerFactory,
    cfg: DictConfig,
    name: str,
    seed: int,
    epochs: int,
    output_dir: Path,
    variant: DictConfig,
    *extra: DictConfig | dict | None,
    writers: int,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:
    """Leave-one-writer-out of one study run (`variant`, then `extra`, as fit_one): core.cv's k-fold CV
    with `cv.folds=<writers> cv.group_by=writer`, so each fold holds out one writer group, into
    `<output_dir>/runs/<name>_seed<seed>/fold_<k>/` (a killed study resumes at its finished folds).
    Each fold tests its final weights, as fit_one does; returns {writer: (test probabilities, labels,
    [each member's test probabilities when the model is an ensemble])}."""
    run_cfg = variant_config(cfg, variant, *extra, seed=seed)
    with open_dict(run_cfg):
        run_cfg.cv.folds, run_cfg.cv.group_by = writers, "writer"
        run_cfg.trainer.max_epochs = epochs
        run_cfg.callbacks = run_cfg.get("callbacks") or {}
        run_cfg.callbacks.model_summary = None
        run_cfg.callbacks.digits_fold_probabilities = {"_target_": FoldProbabilities.TARGET}
        if run_cfg.callbacks.get("model_checkpoint"):
            run_cfg.callbacks.model_checkpoint.monitor = None  # keep (and test) the last epoch's weights
    out, run_name = output_dir / "runs" / f"{name}_seed{seed}", f"{name}_seed{seed}"
    rows = cross_validate(run_cfg, out, trainers, name=run_name)["cv/folds"]
    tests = json.loads((out / FOLDS_FILE).read_text())["test"]
    members = int(run_cfg.model.get("ensemble") or 1)
    found = {}
    for row, test in zip(rows, tests):
        fold = out / f"{FOLD}{row['fold']}"
        redo = f"delete {fold / 'results.json'} to train the fold again"
        probs, labels = read_probabilities(fold / PROBABILITIES, test, redo)
        each = [] if members == 1 else range(members)
        each = [read_probabilities(fold / MEMBER_PROBABILITIES.format(k=k), test, redo)[0] for k in each]
        found[row["writer"]] = (probs, labels, each)
    return found


def fit_writers(cfg: DictConfig, variant: DictConfig) -> dict[str, int]:
    """{writer group: number of digits} of the digits `variant` reads."""
    d = instantiate(variant_config(cfg, variant, seed=cfg.seed).data).load()
    return {w: d.writer.count(w) for w in d.writers}


def misclassified(r: dict[str, Any]) -> list[Misread]:
    """The test digits the run's model gets wrong (plain logits), with their place on the sheets."""
    dm, model = r["dm"], r["model"]
    x, y = dm.tensors["test"]
    idx = dm.indices["test"]
    model.eval()
    with torch.no_grad():
        pred = model.eval_logits(x.to(next(model.parameters()).device)).argmax(1).cpu()
    d = dm.digits
    out = []
    for j in torch.nonzero(pred != y).flatten().tolist():
        i = int(idx[j])
        sheet = d.sheets[int(d.sheet[i])].name
        out.append(Misread(sheet, int(d.cell[i, 0]), int(d.cell[i, 1]), int(y[j]), int(pred[j])))
    return out
