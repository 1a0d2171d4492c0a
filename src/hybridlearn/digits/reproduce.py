"""The digits stage of `make reproduce` (paper section 3.2): `experiment=digits_study` and the fig. 4
contact sheet, and its report section read from the study's study.json as a `StudyResult` (a renamed
field fails there, naming the file and the field, not as "n/a" in a table)."""

from __future__ import annotations

import statistics
from pathlib import Path

from omegaconf import DictConfig

from hybridlearn.core.report import FIG_DIR, completed, copy_png, interval, mean_std, per_seed
from hybridlearn.core.reproduce import PlanContext, ReportContext, Run, flatten
from hybridlearn.digits.paper import PAPER_ACCURACY
from hybridlearn.digits.results import LOWO_MODELS, PaperEpoch, StudyResult, read_study

STAGES = ("digits",)


def plan(stage: str, s: DictConfig, ctx: PlanContext) -> list[Run]:
    return [
        Run(stage, "study", ["experiment=digits_study", *ctx.common, *flatten(s.get("set") or {})]),
        Run(stage, "contact_sheet", ["experiment=digits_contact_sheet", *ctx.common], cost=0.01),  # seconds
    ]


def section(stage: str, ctx: ReportContext) -> list[str]:
    return digits_section(ctx.root, ctx.figs)


def differences(ctx: ReportContext) -> list[str]:
    """Where the paper's setup trains to another accuracy than the paper's."""
    D = []
    f = ctx.root / "digits" / "study" / "study.json"
    for e, t in (read_study(f).paper_setup if f.is_file() else {}).items():
        p = PAPER_ACCURACY.get(e)
        if p and t.train_acc:
            tr = statistics.mean(t.train_acc)
            if abs(tr - p["train_acc"]) > 0.02:
                D.append(
                    f"Digits, {e} epochs: train accuracy {tr:.3f} vs the paper's {p['train_acc']} (val "
                    f"{statistics.mean(t.val_acc):.3f} vs {p['val_acc']}): PyTorch vs Keras, our own "
                    "random splits per seed; the validation split holds only 49 digits (one digit = 0.02)."
                )
    return D


def digits_section(root: Path, figs: Path) -> list[str]:
    L = ["## 2. LeNet-5 on the authors' handwritten digits (paper section 3.2)", ""]
    sheet = copy_png(
        root / "digits" / "contact_sheet" / "fig04_digits.png",
        figs / "digits_fig04_contact_sheet.png",
        max_side=1000,
    )
    if sheet:
        L += [
            f"Fig. 4, the 610 normalized digits (label above each cell): ![contact sheet]({FIG_DIR}/{sheet})",
            "",
        ]
    run = root / "digits" / "study"
    if not (completed(run) and (run / "study.json").is_file()):
        return L + ["Not run (or not finished): `experiment=digits_study`.", ""]
    st = read_study(run / "study.json")
    L += [
        f"`experiment=digits_study`, seeds {st.seeds} (each seed draws its own split, initialisation and batch "
        "order); ± is the standard deviation over seeds.",
        "",
        "### Figs. 12-13: the paper's setup (Keras LeNet-5, retrained from scratch)",
        "",
        "| epochs | train acc (paper) | train acc (ours) | val acc (paper) | val acc (ours) | test acc (ours) |",
        "|---|---|---|---|---|---|",
    ]
    table = st.paper_setup
    return L + _paper_setup_rows(run, figs, table) + _transfer_tables(st, table) + _lowo_tables(st) + _pages_table(st)


def _paper_setup_rows(run: Path, figs: Path, table: dict[int, PaperEpoch]) -> list[str]:
    """Figs. 12-13: the paper's setup per epoch count, beside the paper's accuracies; the curves."""
    L = []
    for e in sorted(table):
        t, p = table[e], PAPER_ACCURACY.get(e, {})
        L.append(
            f"| {e} | {p.get('train_acc', 'n/a')} | {mean_std(t.train_acc)} | {p.get('val_acc', 'n/a')} | "
            f"{mean_std(t.val_acc)} | {mean_std(t.test_acc)} |"
        )
    curves = copy_png(run / "curves_paper.png", figs / "digits_fig12_13_curves.png")
    if curves:
        L += [
            "",
            f"![train/val loss and accuracy per epoch, paper's points marked]({FIG_DIR}/{curves})",
        ]
    return L


def _transfer_tables(st: StudyResult, table: dict[int, PaperEpoch]) -> list[str]:
    """Transfer learning against the paper's LeNet on the same per-seed test splits; pooled scores."""
    last = max(table) if table else None
    L = [
        "",
        "### What we add: transfer learning against the paper's LeNet (same per-seed test splits)",
        "",
        "| model | test acc (mean ± std) | per seed |",
        "|---|---|---|",
    ]
    if last:
        test = table[last].test_acc
        L.append(f"| paper's LeNet-5, {last} epochs | {mean_std(test)} | {per_seed(test)} |")
    if st.zero_shot_test_acc:
        z = st.zero_shot_test_acc
        L.append(f"| MNIST-pretrained LeNet-5, no fine-tuning | {mean_std(z)} | {per_seed(z)} |")
    for label, accs in st.transfer.items():
        L.append(f"| {label} | {mean_std(accs)} | {per_seed(accs)} |")
    scored = st.transfer_scores
    if scored:
        L += [
            "",
            "The same test splits as one sample: every seed's test digits pooled, with the 95 % Wilson interval "
            "(one digit of a 122-digit split moves a seed by 0.008), and the expected calibration error of the "
            "confidences predict.py prints (mean over seeds, 10 bins).",
            "",
            "| model | digits right | 95 % CI | ECE |",
            "|---|---|---|---|",
        ]
        for label, sc in scored.items():
            L.append(
                f"| {label} | {sc.correct}/{sc.n} ({sc.correct / sc.n:.3f}) | {interval(sc.ci95)} | "
                f"{statistics.mean(sc.ece):.3f} |"
            )
    return L


def _lowo_tables(st: StudyResult) -> list[str]:
    """Leave-one-writer-out: per held-out writer, and per fine-tuned variant with intervals."""
    L = []
    if st.lowo:
        L += [
            "",
            f"Leave-one-writer-out (seeds {st.lowo_seeds}): test on all digits of a writer never seen.",
            "",
            "| held-out writer | paper's LeNet | MNIST model, no fine-tuning | transfer + augmentation |",
            "|---|---|---|---|",
        ]
        for w, row in st.lowo.items():
            L.append(f"| {w} | " + " | ".join(mean_std(row[m]) for m in LOWO_MODELS) + " |")
    lowo_scores = st.lowo_scores
    if lowo_scores:
        L += [
            "",
            "Leave-one-writer-out per fine-tuned variant: mean over seeds, the 95 % Wilson interval of the "
            "seeds' pooled digits, the expected calibration error (mean over seeds) and the ensemble of the "
            "seeds (mean probabilities; its ECE in brackets).",
            "",
            "| fine-tuned variant | held-out writer | accuracy | 95 % CI | ECE | ensemble of seeds |",
            "|---|---|---|---|---|---|",
        ]
        labels = list(dict.fromkeys(label for row in lowo_scores.values() for label in row))
        for label in labels:
            for w, row in lowo_scores.items():
                sc = row.get(label)
                if sc:
                    L.append(
                        f"| {label} | {w} | {mean_std(sc.acc)} | {interval(sc.ci95)} | "
                        f"{statistics.mean(sc.ece):.3f} | {sc.ensemble_acc:.3f} ({sc.ensemble_ece:.3f}) |"
                    )
    return L


def _pages_table(st: StudyResult) -> list[str]:
    """Whole synthetic pages read by the sheet reader."""
    L = []
    pages = st.pages
    if pages:
        L += [
            "",
            "Whole synthetic pages read by the sheet reader (`predict.py CKPT page.png`), MNIST test digits:",
            "",
            "| pages | digits | found in reading order | accuracy on the page | same digits as clean cells |",
            "|---|---|---|---|---|",
        ]
        for kind, p in pages.items():
            L.append(f"| {kind} | {p.n} | {p.found:.3f} | {p.page_acc:.3f} | {p.clean_acc:.3f} |")
    return L + [""]
