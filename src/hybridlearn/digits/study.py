"""The custom-digits study (paper sections 2.2 / 3.2): the seed table for the paper's setup and
for the transfer-learning fix, and leave-one-writer-out.

`run_study` (`python train.py experiment=digits_study`): every run of the study in one job,
writing `study.md`, `study.json` and `curves_paper.png` into the run directory. Its variants
(paper, transfer, ablations) are config nodes (`study.variants`, `study.ablation_runs`) merged
onto the run's own config; each run is trained by a Trainer built from that config
(hybridlearn.digits.fitting).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from hybridlearn.core.io import write_text_atomic
from hybridlearn.core.report import interval, mean_std, per_seed  # one='': study.md names its seeds
from hybridlearn.core.stats import expected_calibration_error, wilson_interval
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.digits.conf import SINGLE, study_settings
from hybridlearn.digits.fitting import curves, fit_one, fit_writers, fit_writers_out, misclassified
from hybridlearn.digits.paper import PAPER_ACCURACY
from hybridlearn.digits.predict import classify, preparation, read_digits
from hybridlearn.digits.results import PageReading, PaperEpoch, PooledScore, SeedScores, StudyResult, write_study
from hybridlearn.digits.synth import LOWRES_STYLES, STYLES, UNRULED_SMALL_STYLES, found_in_order, mnist_pages
from hybridlearn.mnist.data import load_mnist

log = logging.getLogger(__name__)
ONE_NETWORK = "transfer, one network (the ensemble's first)"  # its row, scored from the ensemble's fits


def scores(probs: Sequence[torch.Tensor], y: torch.Tensor) -> SeedScores:
    """Per run (one probability matrix each): accuracy, digits right, ECE; over the runs: the
    pooled Wilson 95 % interval and the accuracy and ECE of their ensemble (mean probabilities)."""
    right = [int((p.argmax(1) == y).sum()) for p in probs]
    n = len(y)
    ens = torch.stack(list(probs)).mean(0)
    lo, hi = wilson_interval(sum(right), n * len(probs))
    return SeedScores(
        acc=[r / n for r in right],
        correct=right,
        n=n,
        ece=[expected_calibration_error(p.max(1).values.numpy(), (p.argmax(1) == y).numpy()) for p in probs],
        ci95=[lo, hi],
        ensemble_acc=float((ens.argmax(1) == y).float().mean()),
        ensemble_ece=expected_calibration_error(ens.max(1).values.numpy(), (ens.argmax(1) == y).numpy()),
    )


def run_study(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    """Entry `hybridlearn.digits.study:run_study` (experiment=digits_study)."""
    if cfg.study.get("threads"):  # for this run (core.runner gives the process its count back)
        torch.set_num_threads(int(cfg.study.threads))
    return _run_study(cfg, output_dir, trainers)


def ablation_variants(st: DictConfig, key: str, first: tuple[str, str]) -> list[tuple[str, str, Any]]:
    """(name, label, changes) of `first` (the transfer fix itself) and of each ablation listed in
    `study.<key>` (names checked against study.ablation_runs by hybridlearn.digits.conf)."""
    return [(*first, None)] + [(a, st.ablation_runs[a].label, st.ablation_runs[a]) for a in st.get(key) or []]


def _run_study(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory) -> dict[str, Any]:
    st = study_settings(cfg)

    def fit(name, variant, seed, epochs, *extra, test_at=()):
        return fit_one(trainers, cfg, name, seed, epochs, output_dir, variant, *extra, test_at=test_at)

    variants = ablation_variants(st, "ablations", ("transfer", "transfer (pretrained + augmentation)"))
    lowo_variants = ablation_variants(st, "lowo_ablations", ("transfer", "transfer")) if st.lowo else []
    started = time.time()
    result = StudyResult(seeds=list(st.seeds), lowo_seeds=list(st.lowo_seeds), paper_setup={})
    md = [
        "# Custom handwritten digits: LeNet-5 study",
        "",
        f"Seeds {result.seeds} (each seed draws its own train/val/test split, initialisation and batch order).",
        "",
    ]
    md += paper_setup(fit, st, result, output_dir)
    md += transfer_fix(fit, st, result, variants)
    if st.lowo:
        md += leave_one_writer_out(cfg, fit, trainers, output_dir, st, result, lowo_variants)
    md += ["", f"Total time: {time.time() - started:.0f} s on {torch.get_num_threads()} CPU thread(s).", ""]
    write_text_atomic(output_dir / "study.md", "\n".join(md))
    write_study(output_dir / "study.json", result)
    print("\n".join(md))
    return {**study_metrics(result), "study_md": str(output_dir / "study.md")}


def paper_setup(fit, st: DictConfig, result: StudyResult, output_dir: Path) -> list[str]:
    """1. The paper's setup, one run per seed (into `result.paper_setup`); its curves; its table.
    The 10-epoch numbers are read at epoch 10 of the 50-epoch run (no LR schedule, so identical to
    a separate 10-epoch run with the same seed)."""
    runs = []
    for s in result.seeds:
        r = fit("paper", st.variants.paper, s, max(st.paper_epochs), test_at=st.paper_epochs)
        runs.append(r)
        log.info("paper setup seed %d: train %.3f val %.3f test %.3f", s, r["train_acc"], r["val_acc"], r["test_acc"])
    title = "LeNet-5 on the custom digits, paper setup"
    curves([r["history"] for r in runs], output_dir / "curves_paper.png", title, paper=PAPER_ACCURACY)
    n = runs[0]["n"]
    md = [
        "## Paper setup (Keras LeNet-5: tanh, average pooling, Adam 1e-3, 32x32, plain slicing)",
        "",
        f"Split: {n['train']} train / {n['val']} val / {n['test']} test.",
        "",
        "| epochs | train acc (paper) | train acc (ours) | val acc (paper) | val acc (ours) | test acc (ours) |",
        "|---|---|---|---|---|---|",
    ]
    for e in st.paper_epochs:
        t = PaperEpoch(
            train_acc=[r["history"][e - 1]["train_acc"] for r in runs],
            val_acc=[r["history"][e - 1]["val_acc"] for r in runs],
            test_acc=[r["test_acc_at"][e] for r in runs],
        )
        p = PAPER_ACCURACY.get(e, {})
        md.append(
            f"| {e} | {p.get('train_acc', 'n/a')} | {mean_std(t.train_acc, one='')} | {p.get('val_acc', 'n/a')} | "
            f"{mean_std(t.val_acc, one='')} | {mean_std(t.test_acc, one='')} |"
        )
        result.paper_setup[e] = t
    return md


def transfer_fix(fit, st: DictConfig, result: StudyResult, variants: list) -> list[str]:
    """2. The fix (MNIST-pretrained LeNet-5, MNIST-like cells, handwriting augmentation) and its
    ablations over the seeds, against the paper setup; the synthetic pages; the misread digits."""
    seeds, transfer_v, max_ep = result.seeds, st.variants.transfer, max(st.paper_epochs)
    if st.get("zero_shot", True):  # the first member's MNIST network as it is
        result.zero_shot_test_acc = [fit("zero_shot", transfer_v, s, 0, SINGLE)["test_acc"] for s in seeds]
    paper_test = result.paper_setup[max_ep].test_acc
    md = [
        "",
        "## The fix: transfer learning + augmentation (28x28 MNIST-like cells)",
        "",
        f"{st.transfer_epochs} epochs of fine-tuning; test accuracy on the same per-seed test split as above.",
        "",
        "| model | test acc (mean ± std) | 95 % CI (pooled digits) | ECE | per seed |",
        "|---|---|---|---|---|",
        f"| paper setup, {max_ep} epochs | {mean_std(paper_test, one='')} | | | {per_seed(paper_test)} |",
    ]
    zero = result.zero_shot_test_acc
    if zero is not None:
        md.append(f"| MNIST-pretrained LeNet-5, no fine-tuning | {mean_std(zero, one='')} | | | {per_seed(zero)} |")
    for name, label, extra in variants:
        rows: dict[str, list[tuple[float, SeedScores]]] = {label: []}  # per seed: (accuracy, scores)
        for s in seeds:
            r = fit(name, transfer_v, s, st.transfer_epochs, extra)
            log.info("%s seed %d: test %.3f", label, s, r["test_acc"])
            rows[label].append((r["test_acc"], scores([r["probs"]], r["labels"])))
            if r["member_probs"]:  # an ensemble: its first network alone is the single model (ablations' baseline)
                one = scores([r["member_probs"][0]], r["labels"])
                rows.setdefault(ONE_NETWORK, []).append((one.acc[0], one))
            if not extra and s == seeds[0]:
                first = r  # the transfer model, first seed: its misread digits and its pages
                result.transfer_errors_seed0 = misclassified(r) or None
        for row_label, runs in rows.items():
            accs, sc = [a for a, _ in runs], pooled_score([one for _, one in runs])
            result.transfer[row_label], result.transfer_scores[row_label] = accs, sc
            md.append(
                f"| {row_label} | {mean_std(accs, one='')} | {interval(sc.ci95)} | {statistics.mean(sc.ece):.3f} | "
                f"{per_seed(accs)} |"
            )
    if st.get("pages"):
        result.pages = read_synthetic_pages(first["model"], first["dm"], int(st.pages.n_pages))
        md += pages_table(result.pages, seeds[0])
    if result.transfer_errors_seed0:
        md += [
            "",
            f"Misclassified test digits of the transfer model, seed {seeds[0]} (sheet, row, col: true -> predicted): "
            + "; ".join(f"{w.sheet} r{w.row} c{w.col}: {w.true} -> {w.pred}" for w in result.transfer_errors_seed0),
        ]
    return md


def pooled_score(per_seed_scores: list[SeedScores]) -> PooledScore:
    """The seeds' test digits as one sample (every seed has its own split, so pooled by count)."""
    right = sum(sc.correct[0] for sc in per_seed_scores)
    n = sum(sc.n for sc in per_seed_scores)
    lo, hi = wilson_interval(right, n)
    return PooledScore(correct=right, n=n, ci95=[lo, hi], ece=[e for sc in per_seed_scores for e in sc.ece])


def pages_table(pages: dict[str, PageReading], seed: int) -> list[str]:
    md = [
        "",
        f"Whole synthetic pages of MNIST test digits read by the sheet reader (the transfer model, seed {seed}):",
        "",
        "| pages | digits | found in reading order | accuracy on the page | same digits as clean cells |",
        "|---|---|---|---|---|",
    ]
    for kind, p in pages.items():
        md.append(f"| {kind} | {p.n} | {p.found:.3f} | {p.page_acc:.3f} | {p.clean_acc:.3f} |")
    return md


def leave_one_writer_out(cfg, fit, trainers, output_dir, st: DictConfig, result: StudyResult, variants) -> list[str]:
    """3. Leave-one-writer-out: the paper setup, the MNIST model alone, the transfer fix and the
    ablations in study.lowo_ablations, each over lowo_seeds by core.cv (one fold per writer group,
    `runs/lowo_<variant>_seed<seed>/fold_<k>/`); the CI pools the seeds' digits (the same writer's
    digits each time) and the ensemble averages the seeds' probabilities. When the transfer model is an
    ensemble (`model.ensemble` > 1), its first network alone is scored too, from the same folds."""
    seeds, transfer_v = result.lowo_seeds, st.variants.transfer
    digits = fit_writers(cfg, transfer_v)

    def folds(name, variant, epochs, *extra):  # per seed: {writer: (test probabilities, labels)}
        fit_args = (trainers, cfg, f"lowo_{name}")
        return [fit_writers_out(*fit_args, s, epochs, output_dir, variant, *extra, writers=len(digits)) for s in seeds]

    fits = {"paper": folds("paper", st.variants.paper, max(st.paper_epochs))}
    for name, label, extra in variants:
        fits[label] = folds(name, transfer_v, st.transfer_epochs, extra)
        if all(f[w][2] for f in fits[label] for w in digits):  # an ensemble: its first network alone
            fits[ONE_NETWORK] = [{w: (f[w][2][0], f[w][1], []) for w in digits} for f in fits[label]]
    result.lowo, result.lowo_scores = {}, {}
    for w in digits:
        zero = fit(f"lowo_{w}_zero_shot", transfer_v, seeds[0], 0, SINGLE, {"data": {"test_writer": w}})
        sc = {label: scores([r[w][0] for r in runs], runs[0][w][1]) for label, runs in fits.items()}
        result.lowo[w] = {"mnist_only": [zero["test_acc"]], **{label: s.acc for label, s in sc.items()}}
        result.lowo_scores[w] = {label: s for label, s in sc.items() if label != "paper"}
        log.info("LOWO %s: %s", w, result.lowo[w])
    return lowo_tables(result, digits, [label for label in fits if label != "paper"])


def lowo_tables(result: StudyResult, digits: dict[str, int], labels: list[str]) -> list[str]:
    md = [
        "",
        "## Leave-one-writer-out (train + val on the other writers, test on all digits of one)",
        "",
        f"Seeds {result.lowo_seeds}. Writer groups: " + ", ".join(f"{w} ({k} digits)" for w, k in digits.items()) + ".",
        "",
        "| held-out writer | digits | paper setup | MNIST model, no fine-tuning | transfer + augmentation |",
        "|---|---|---|---|---|",
    ]
    for w, row in result.lowo.items():
        md.append(
            f"| {w} | {digits[w]} | {mean_std(row['paper'], one='')} | {mean_std(row['mnist_only'], one='')} | "
            f"{mean_std(row['transfer'], one='')} |"
        )
    over = {
        k: statistics.mean(statistics.mean(row[k]) for row in result.lowo.values())
        for k in ("paper", "mnist_only", "transfer")
    }
    md.append(f"| mean over writers | | {over['paper']:.3f} | {over['mnist_only']:.3f} | {over['transfer']:.3f} |")
    md += [
        "",
        "Each fine-tuned variant per held-out writer: mean accuracy over the seeds, the 95 % Wilson interval "
        "of the pooled digits, the expected calibration error (mean over seeds), and the ensemble of the seeds "
        "(mean probabilities).",
        "",
        "| fine-tuned variant | held-out writer | accuracy (mean ± std) | 95 % CI | ECE | ensemble of seeds (ECE) |",
        "|---|---|---|---|---|---|",
    ]
    for label in labels:
        for w in digits:
            sc = result.lowo_scores[w][label]
            md.append(
                f"| {label} | {w} | {mean_std(sc.acc, one='')} | {interval(sc.ci95)} | {statistics.mean(sc.ece):.3f} | "
                f"{sc.ensemble_acc:.3f} ({sc.ensemble_ece:.3f}) |"
            )
    return md


def study_metrics(result: StudyResult) -> dict[str, float]:
    """The study's means as the run's metrics (results.json)."""
    metrics = {
        f"paper_{e}ep_{k}_mean": statistics.mean(getattr(t, k))
        for e, t in result.paper_setup.items()
        for k in ("train_acc", "val_acc", "test_acc")
    }
    metrics.update({f"transfer_test_acc_mean/{k}": statistics.mean(v) for k, v in result.transfer.items()})
    if result.lowo is not None:
        metrics.update({f"lowo/{w}/{k}": statistics.mean(v) for w, r in result.lowo.items() for k, v in r.items()})
        metrics.update(
            {f"lowo/{w}/{k}/ece": statistics.mean(v.ece) for w, r in result.lowo_scores.items() for k, v in r.items()}
        )
    if result.zero_shot_test_acc is not None:
        metrics["zero_shot_test_acc_mean"] = statistics.mean(result.zero_shot_test_acc)
    return metrics


PAGE_KINDS = {
    "scans and photos (60 px per cell; paper, rotation, light, JPEG)": (STYLES, 70),
    "small ruled JPEG scans (18-24 px per cell)": (LOWRES_STYLES, 20),
    "small unruled scans (16-24 px per cell; dots, specks, broken strokes)": (UNRULED_SMALL_STYLES, 20),
}


def read_synthetic_pages(model, dm, n_pages: int) -> dict[str, PageReading]:
    """Pages rendered from MNIST test digits (hybridlearn.digits.synth), read the way predict.py
    reads a page: the share of digits found in reading order, the accuracy on the page, and the
    model's accuracy on the same digits given as clean cells."""
    raw = load_mnist(dm.hparams.data_dir)
    x, y = raw["test_x"].numpy(), raw["test_y"].numpy()
    prep = preparation(dm.hparams, model.net.in_size)
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
        out[kind] = PageReading(n=n, found=found / n, page_acc=right_page / n, clean_acc=right_clean / n)
    return out
