"""The custom-digits study (paper sections 2.2 / 3.2): learning curves, the seed table for the
paper's setup and for the transfer-learning fix, and leave-one-writer-out.

- `CurvesPlot`: a Lightning callback writing the train/val loss and accuracy curves (figs 12-13).
- `run_study` (`python train.py experiment=digits_study`): every run of the study in one job,
  writing `study.md`, `study.json` and `curves_paper.png` into the run directory. Its variants
  (paper, transfer, ablations) are config nodes (`study.variants`, `study.ablation_runs`) merged
  onto the run's own config; each run is trained by a Trainer built from that config.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.io import write_json_atomic, write_text_atomic
from hybridlearn.core.plotting import plot_curves
from hybridlearn.core.stats import expected_calibration_error, wilson_interval
from hybridlearn.core.trainer import TrainerFactory, finish_loggers
from hybridlearn.digits.predict import classify, preparation, read_digits
from hybridlearn.digits.synth import LOWRES_STYLES, STYLES, found_in_order, mnist_pages
from hybridlearn.mnist.data import load_mnist

log = logging.getLogger(__name__)

# Paper, section 3.2 (Keras LeNet-5 retrained on the 488 custom digits).
PAPER = {
    10: {"train_acc": 0.645, "val_acc": 0.492},
    50: {"train_acc": 0.973, "val_acc": 0.615},
}
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
def probabilities(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities [N, classes] as predict.py computes them (with the model's TTA)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    p = torch.cat([torch.softmax(model.eval_logits(x[i : i + 1024].to(dev)), -1).cpu() for i in range(0, len(x), 1024)])
    model.train(was)
    return p


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((probabilities(model, x).argmax(1) == y).float().mean())


def scores(probs: Sequence[torch.Tensor], y: torch.Tensor) -> dict[str, Any]:
    """Per run (one probability matrix each): accuracy, digits right, ECE; over the runs: the
    pooled Wilson 95 % interval and the accuracy and ECE of their ensemble (mean probabilities)."""
    right = [int((p.argmax(1) == y).sum()) for p in probs]
    n = len(y)
    ens = torch.stack(list(probs)).mean(0)
    lo, hi = wilson_interval(sum(right), n * len(probs))
    return {
        "acc": [r / n for r in right],
        "correct": right,
        "n": n,
        "ece": [expected_calibration_error(p.max(1).values.numpy(), (p.argmax(1) == y).numpy()) for p in probs],
        "ci95": [lo, hi],
        "ensemble_acc": float((ens.argmax(1) == y).float().mean()),
        "ensemble_ece": expected_calibration_error(ens.max(1).values.numpy(), (ens.argmax(1) == y).numpy()),
    }


def ci_text(sc: dict[str, Any]) -> str:
    lo, hi = sc["ci95"]
    return f"[{lo:.3f}, {hi:.3f}]"


def variant_config(cfg: DictConfig, variant: DictConfig, seed: int, *extra: DictConfig | dict | None) -> DictConfig:
    """The run's config with `variant` (and then each of `extra`) merged onto its data, model and
    trainer nodes, and `seed` set; interpolations such as ${data.value_range} resolve in the result."""
    sub = cfg.copy()
    with open_dict(sub):
        for part in (variant, *extra):
            for group in ("data", "model", "trainer"):
                node = (part or {}).get(group)
                if node is not None:
                    sub[group] = OmegaConf.merge(sub[group], node)
        sub.seed = seed
    return sub


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
    run_cfg = variant_config(cfg, variant, seed, *extra)
    L.seed_everything(seed, workers=True, verbose=False)
    dm = instantiate(run_cfg.data)
    dm.setup("fit")
    model = instantiate(run_cfg.model)
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


def mean_std(vals: Sequence[float]) -> str:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def run_study(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry `hybridlearn.digits.study:run_study` (experiment=digits_study)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(int(cfg.study.get("threads") or threads))
        return _run_study(cfg, output_dir, trainers)
    finally:
        torch.set_num_threads(threads)


def _run_study(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    st = cfg.study
    if cfg.trainer.get("fast_dev_run"):  # debug=fdr: one seed, one epoch each, tiny pretraining
        st = OmegaConf.merge(
            st,
            {
                "seeds": list(st.seeds)[:1],
                "lowo_seeds": list(st.lowo_seeds)[:1],
                "paper_epochs": [1],
                "transfer_epochs": 1,
                "ablations": [],
                "lowo": False,
                "pages": None,
                "variants": {"transfer": {"model": {"pretrain": {"epochs": 1, "subset": 2000}}}},
            },
        )
    paper_v, transfer_v = st.variants.paper, st.variants.transfer

    def fit(name, variant, seed, epochs, *extra, test_at=()):
        return fit_one(trainers, cfg, name, seed, epochs, output_dir, variant, *extra, test_at=test_at)

    unknown = [a for a in (st.ablations or []) if a not in st.ablation_runs]
    if unknown:  # before any training
        raise ConfigError(f"study.ablations: unknown {unknown}; choose from {', '.join(st.ablation_runs)}")
    seeds, lowo_seeds = list(st.seeds), list(st.lowo_seeds)
    started = time.time()
    out: dict[str, Any] = {"seeds": seeds, "lowo_seeds": lowo_seeds}
    md = [
        "# Custom handwritten digits: LeNet-5 study",
        "",
        f"Seeds {seeds} (each seed draws its own train/val/test split, initialisation and batch order).",
        "",
    ]

    # 1. The paper's setup: one run per seed; the 10-epoch numbers are read at epoch 10 of the
    # 50-epoch run (no LR schedule, so identical to a separate 10-epoch run with the same seed).
    paper_runs = []
    max_ep = max(st.paper_epochs)
    for s in seeds:
        r = fit("paper", paper_v, s, max_ep, test_at=st.paper_epochs)
        paper_runs.append(r)
        log.info(
            "paper setup seed %d: train %.3f val %.3f test %.3f",
            s,
            r["train_acc"],
            r["val_acc"],
            r["test_acc"],
        )
    curves(
        [r["history"] for r in paper_runs],
        output_dir / "curves_paper.png",
        "LeNet-5 on the custom digits, paper setup",
        paper=PAPER,
    )
    n = paper_runs[0]["n"]
    md += [
        "## Paper setup (Keras LeNet-5: tanh, average pooling, Adam 1e-3, 32x32, plain slicing)",
        "",
        f"Split: {n['train']} train / {n['val']} val / {n['test']} test.",
        "",
        "| epochs | train acc (paper) | train acc (ours) | val acc (paper) | val acc (ours) | test acc (ours) |",
        "|---|---|---|---|---|---|",
    ]
    table = {}
    for e in st.paper_epochs:
        tr = [r["history"][e - 1]["train_acc"] for r in paper_runs]
        va = [r["history"][e - 1]["val_acc"] for r in paper_runs]
        te = [r["test_acc_at"][e] for r in paper_runs]
        p = PAPER.get(e, {})
        md.append(
            f"| {e} | {p.get('train_acc', 'n/a')} | {mean_std(tr)} | {p.get('val_acc', 'n/a')} | {mean_std(va)} | {mean_std(te)} |"
        )
        table[e] = {"train_acc": tr, "val_acc": va, "test_acc": te}
    out["paper_setup"] = table

    # 2. The fix: MNIST-pretrained LeNet-5, MNIST-like cells, handwriting augmentation.
    variants = [("transfer", "transfer (pretrained + augmentation)", None)]
    variants += [(a, st.ablation_runs[a].label, st.ablation_runs[a]) for a in (st.ablations or [])]
    zero = [fit("zero_shot", transfer_v, s, 0)["test_acc"] for s in seeds] if st.get("zero_shot", True) else None
    md += [
        "",
        "## The fix: transfer learning + augmentation (28x28 MNIST-like cells)",
        "",
        f"{st.transfer_epochs} epochs of fine-tuning; test accuracy on the same per-seed test split as above.",
        "",
        "| model | test acc (mean ± std) | 95 % CI (pooled digits) | ECE | per seed |",
        "|---|---|---|---|---|",
        f"| paper setup, {max_ep} epochs | {mean_std(table[max_ep]['test_acc'])} | | | "
        + ", ".join(f"{v:.3f}" for v in table[max_ep]["test_acc"])
        + " |",
    ]
    if zero is not None:
        md.append(
            f"| MNIST-pretrained LeNet-5, no fine-tuning | {mean_std(zero)} | | | "
            + ", ".join(f"{v:.3f}" for v in zero)
            + " |"
        )
        out["zero_shot_test_acc"] = zero
    out["transfer"], out["transfer_scores"] = {}, {}
    for name, label, extra in variants:
        accs, wrong, right, n, eces = [], [], 0, 0, []
        for s in seeds:
            r = fit(name, transfer_v, s, st.transfer_epochs, extra)
            accs.append(r["test_acc"])
            sc = scores([r["probs"]], r["labels"])  # each seed has its own split: pooled by hand
            right, n, eces = right + sc["correct"][0], n + sc["n"], eces + sc["ece"]
            log.info("%s seed %d: test %.3f", label, s, r["test_acc"])
            if not extra and s == seeds[0]:
                wrong = misclassified(r)
                first = r
        lo, hi = wilson_interval(right, n)
        out["transfer"][label] = accs
        out["transfer_scores"][label] = {"correct": right, "n": n, "ci95": [lo, hi], "ece": eces}
        md.append(
            f"| {label} | {mean_std(accs)} | [{lo:.3f}, {hi:.3f}] | {statistics.mean(eces):.3f} | "
            + ", ".join(f"{v:.3f}" for v in accs)
            + " |"
        )
        if wrong:
            out["transfer_errors_seed0"] = wrong
    if st.get("pages"):
        out["pages"] = read_synthetic_pages(first["model"], first["dm"], int(st.pages.n_pages))
        md += [
            "",
            f"Whole synthetic pages of MNIST test digits read by the sheet reader (the transfer model, seed {seeds[0]}):",
            "",
            "| pages | digits | found in reading order | accuracy on the page | same digits as clean cells |",
            "|---|---|---|---|---|",
        ]
        for kind, p in out["pages"].items():
            md.append(f"| {kind} | {p['n']} | {p['found']:.3f} | {p['page_acc']:.3f} | {p['clean_acc']:.3f} |")
    if out.get("transfer_errors_seed0"):
        md += [
            "",
            f"Misclassified test digits of the transfer model, seed {seeds[0]} (sheet, row, col: true -> predicted): "
            + "; ".join(
                f"{w['sheet']} r{w['row']} c{w['col']}: {w['true']} -> {w['pred']}"
                for w in out["transfer_errors_seed0"]
            ),
        ]

    # 3. Leave-one-writer-out: the paper setup, the MNIST model alone, the transfer fix and the
    # ablations in study.lowo_ablations, each over lowo_seeds; the CI pools the seeds' digits (the
    # same writer's digits each time) and the ensemble averages the seeds' probabilities.
    if st.lowo:
        unknown = [a for a in (st.get("lowo_ablations") or []) if a not in st.ablation_runs]
        if unknown:
            raise ConfigError(f"study.lowo_ablations: unknown {unknown}; choose from {', '.join(st.ablation_runs)}")
        lowo_variants = [("transfer", "transfer", None)] + [
            (a, st.ablation_runs[a].label, st.ablation_runs[a]) for a in (st.get("lowo_ablations") or [])
        ]
        digits = fit_writers(cfg, transfer_v)
        md += [
            "",
            "## Leave-one-writer-out (train + val on the other writers, test on all digits of one)",
            "",
            f"Seeds {lowo_seeds}. Writer groups: " + ", ".join(f"{w} ({k} digits)" for w, k in digits.items()) + ".",
            "",
            "| held-out writer | digits | paper setup | MNIST model, no fine-tuning | transfer + augmentation |",
            "|---|---|---|---|---|",
        ]
        out["lowo"], out["lowo_scores"] = {}, {}
        for w in digits:
            held_out = {"data": {"test_writer": w}}
            row = {"mnist_only": [fit(f"lowo_{w}_zero_shot", transfer_v, lowo_seeds[0], 0, held_out)["test_acc"]]}
            row["paper"] = [fit(f"lowo_{w}_paper", paper_v, s, max_ep, held_out)["test_acc"] for s in lowo_seeds]
            out["lowo_scores"][w] = {}
            for name, label, extra in lowo_variants:
                runs = [fit(f"lowo_{w}_{name}", transfer_v, s, st.transfer_epochs, extra, held_out) for s in lowo_seeds]
                sc = scores([r["probs"] for r in runs], runs[0]["labels"])
                row[label] = sc["acc"]
                out["lowo_scores"][w][label] = sc
                log.info("LOWO %s %s: %s", w, label, sc["acc"])
            out["lowo"][w] = row
            md.append(
                f"| {w} | {digits[w]} | {mean_std(row['paper'])} | {mean_std(row['mnist_only'])} | {mean_std(row['transfer'])} |"
            )
        allp = [statistics.mean(v["paper"]) for v in out["lowo"].values()]
        allt = [statistics.mean(v["transfer"]) for v in out["lowo"].values()]
        allz = [statistics.mean(v["mnist_only"]) for v in out["lowo"].values()]
        md.append(
            f"| mean over writers | | {statistics.mean(allp):.3f} | {statistics.mean(allz):.3f} | {statistics.mean(allt):.3f} |"
        )
        md += [
            "",
            "Each fine-tuned variant per held-out writer: mean accuracy over the seeds, the 95 % Wilson interval "
            "of the pooled digits, the expected calibration error (mean over seeds), and the ensemble of the seeds "
            "(mean probabilities).",
            "",
            "| fine-tuned variant | held-out writer | accuracy (mean ± std) | 95 % CI | ECE | ensemble of seeds (ECE) |",
            "|---|---|---|---|---|---|",
        ]
        for _, label, _ in lowo_variants:
            for w in digits:
                sc = out["lowo_scores"][w][label]
                md.append(
                    f"| {label} | {w} | {mean_std(sc['acc'])} | {ci_text(sc)} | {statistics.mean(sc['ece']):.3f} | "
                    f"{sc['ensemble_acc']:.3f} ({sc['ensemble_ece']:.3f}) |"
                )

    md += [
        "",
        f"Total time: {time.time() - started:.0f} s on {torch.get_num_threads()} CPU thread(s).",
        "",
    ]
    write_text_atomic(output_dir / "study.md", "\n".join(md))
    write_json_atomic(output_dir / "study.json", out)
    print("\n".join(md))
    metrics = {
        f"paper_{e}ep_{k}_mean": statistics.mean(v[k])
        for e, v in table.items()
        for k in ("train_acc", "val_acc", "test_acc")
    }
    metrics.update({f"transfer_test_acc_mean/{k}": statistics.mean(v) for k, v in out["transfer"].items()})
    if st.lowo:
        metrics.update({f"lowo/{w}/{k}": statistics.mean(v) for w, r in out["lowo"].items() for k, v in r.items()})
        metrics.update(
            {
                f"lowo/{w}/{k}/ece": statistics.mean(v["ece"])
                for w, r in out["lowo_scores"].items()
                for k, v in r.items()
            }
        )
    if zero is not None:
        metrics["zero_shot_test_acc_mean"] = statistics.mean(zero)
    metrics["study_md"] = str(output_dir / "study.md")
    return metrics


PAGE_KINDS = {
    "scans and photos (60 px per cell; paper, rotation, light, JPEG)": (STYLES, 70),
    "small ruled JPEG scans (18-24 px per cell)": (LOWRES_STYLES, 20),
}


def read_synthetic_pages(model, dm, n_pages: int) -> dict[str, dict[str, float]]:
    """Pages rendered from MNIST test digits (hybridlearn.digits.synth), read the way predict.py
    reads a page: the share of digits found in reading order, the accuracy on the page, and the
    model's accuracy on the same digits given as clean cells."""
    raw = load_mnist(dm.hparams.data_dir)
    x, y = raw["test_x"].numpy(), raw["test_y"].numpy()
    prep = preparation(dm.hparams, int(model.hparams.in_size))
    out = {}
    for kind, (styles, margin) in PAGE_KINDS.items():
        found = right_page = right_clean = n = 0
        for page in mnist_pages(x, y, n_pages=n_pages, styles=styles, margin=margin):
            grey = np.asarray(page.image, np.float32) / 255
            reading = read_digits(model, prep, grey, None)
            clean, _ = classify(model, prep, [x[k] / 255.0 for k in page.index], invert=False)
            found += found_in_order(page, reading.boxes) * len(page.labels)
            right_page += sum(int(d == t) for d, t in zip(reading.digits, page.labels))
            right_clean += sum(int(d == t) for d, t in zip(clean, page.labels))
            n += len(page.labels)
        out[kind] = {"n": n, "found": found / n, "page_acc": right_page / n, "clean_acc": right_clean / n}
    return out


def fit_writers(cfg: DictConfig, variant: DictConfig) -> dict[str, int]:
    """{writer group: number of digits} of the digits `variant` reads."""
    d = instantiate(variant_config(cfg, variant, cfg.seed).data).load()
    return {w: d.writer.count(w) for w in d.writers}


def misclassified(r: dict[str, Any]) -> list[dict[str, Any]]:
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
        out.append(
            {
                "sheet": d.sheets[int(d.sheet[i])].name,
                "row": int(d.cell[i, 0]),
                "col": int(d.cell[i, 1]),
                "true": int(y[j]),
                "pred": int(pred[j]),
            }
        )
    return out
