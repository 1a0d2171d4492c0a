"""REPORT.md of a reproduce folder: the paper's values beside ours, read only from the runs' own
results.json / study.json / CSV files, and their figures copied next to it (small PNGs, GIFs <= 2 MB).

The report holds no clock time of its own: the same run folders give the same report, so a second
`make reproduce` that skips every finished run rewrites it byte for byte.

Paper values (Banoy, Rengifo, Cardeño 2023) as recorded in this repository: docs/gom.md (M1* = 19,
M2* = 87; the hybrid regressor), the paper's text (best MLP: 1 hidden layer x 3 neurons, lr 0.01),
docs/digits.md (section 3.2: train/val 0.645/0.492 after 10 epochs, 0.973/0.615 after 50),
docs/gom.md (Zhou et al. 2014, random forests, 10-fold CV: 3,113 km), docs/gan.md (fig. 14:
grids at epochs 1, 100, 200), docs/style_video.md (figs. 15-16).
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from hybridlearn.core.io import atomic_output, save_gif, write_text_atomic
from hybridlearn.core.plotting import plt, save_figure

FIG_DIR = "figures"
# the stylized video in the report: 48 frames, 160 px wide, 64 colours (~0.6 MB for the 23 s demo clip)
GIF_FRAMES = 48
# every stage of `make reproduce`, in run and report order (gan_modern: beyond the paper, off by default)
STAGES = ("gom", "digits", "gan", "gan_modern", "style")
PAPER_DIGITS = {
    10: {"train_acc": 0.645, "val_acc": 0.492},
    50: {"train_acc": 0.973, "val_acc": 0.615},
}
PAPER_M = {"M1": 19, "M2": 87}
PAPER_BEST_MLP = "1 hidden layer x 3 neurons, lr 0.01"
ZHOU_2014_KM = 3113.0


# ------------------------------------------------------------------------------------- reading
def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def completed(run_dir: Path) -> dict[str, Any] | None:
    """The run's results.json when it says completed, else None."""
    r = read_json(run_dir / "results.json")
    return r if r and r.get("status") == "completed" else None


def run_config(run_dir: Path) -> Any:
    f = run_dir / ".hydra" / "config.yaml"
    return OmegaConf.load(f) if f.is_file() else None


def run_error(run_dir: Path) -> str:
    """The run's error message with machine folders taken out: the data folder reads `DATA_DIR`,
    the reproduce folder `.`, any other absolute path its file name (the report is shared)."""
    err = str((read_json(run_dir / "results.json") or {}).get("error") or "")
    if not err:
        return ""
    cfg = run_config(run_dir)
    data_dir = (
        OmegaConf.select(cfg, "paths.data_dir", default=None, throw_on_resolution_failure=False)
        if cfg is not None
        else None
    )
    marker = read_json(run_dir / "reproduce_run.json") or {}
    for a in marker.get("args") or []:
        if data_dir is None and str(a).startswith("paths.data_dir="):
            data_dir = str(a).split("=", 1)[1].strip("'")
    roots = [(str(Path(data_dir).resolve()), "DATA_DIR"), (str(data_dir), "DATA_DIR")] if data_dir else []
    roots.append((str(run_dir.parent.parent.resolve()), "."))
    for root, name in sorted(roots, key=lambda r: -len(r[0])):
        err = err.replace(root.rstrip("/") + "/", name + "/").replace(root, name)
    return re.sub(r"(?<![\w.~/:])/(?:[^\s/:;,()']+/)+([^\s/:;,()']+)", r"\1", err)


def mean_std(vals: Sequence[float | None], fmt: str = ".3f") -> str:
    v = [float(x) for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:{fmt}} (1 seed)"
    return f"{statistics.mean(v):{fmt}} ± {statistics.stdev(v):{fmt}}"


def per_seed(vals: Sequence[Any], fmt: str = ".3f") -> str:
    return ", ".join("n/a" if v is None else (f"{v:{fmt}}" if isinstance(v, float) else str(v)) for v in vals)


# ------------------------------------------------------------------------------------- figures
def copy_png(src: Path, dst: Path, max_side: int = 1000) -> str | None:
    """Copy a PNG into the report (downscaled when larger than max_side); its name, or None."""
    if not src.is_file():
        return None
    im = Image.open(src)
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    with atomic_output(dst) as tmp:
        im.save(tmp, format="PNG", optimize=True)
    return dst.name


def picture_row(cells: Sequence[tuple[str, str]]) -> list[str]:
    """A one-row markdown table of figures under their captions: [(caption, file name in figures/)]."""
    if not cells:
        return []
    return [
        "| " + " | ".join(cap for cap, _ in cells) + " |",
        "|" + "---|" * len(cells),
        "| " + " | ".join(f"![{cap}]({FIG_DIR}/{n})" for cap, n in cells) + " |",
        "",
    ]


def copy_gif(src: Path, dst: Path, max_mb: float) -> str | None:
    """Copy a GIF, keeping every k-th frame (and the last) until it is at most max_mb."""
    if not src.is_file():
        return None
    if src.stat().st_size <= max_mb * 2**20:
        with atomic_output(dst) as tmp:
            tmp.write_bytes(src.read_bytes())
        return dst.name
    im = Image.open(src)
    frames = []
    for i in range(getattr(im, "n_frames", 1)):
        im.seek(i)
        frames.append(im.convert("RGB").quantize(colors=64))
    k = 2
    while k <= len(frames):
        keep = frames[::k] + ([frames[-1]] if (len(frames) - 1) % k else [])
        save_gif(keep, dst, 300)
        if dst.stat().st_size <= max_mb * 2**20:
            return dst.name
        k *= 2
    dst.unlink(missing_ok=True)
    return None


def video_frames(video: Path, counts: Sequence[int]) -> tuple[list[list[np.ndarray]], float | None]:
    """For each n of counts, n frames spread evenly over the video (RGB uint8), and the video's
    duration in s (None when the container does not say). Two decoding passes that keep only the
    chosen frames, so a long video never sits in memory whole."""
    with av.open(str(video)) as c:
        st = c.streams.video[0]
        duration = float(st.duration * st.time_base) if st.duration else None
        total = sum(1 for _ in c.decode(video=0))
    if not total:
        return [[] for _ in counts], duration
    picks = [np.linspace(0, total - 1, num=min(n, total)).round().astype(int).tolist() for n in counts]
    wanted = {i for pick in picks for i in pick}
    kept: dict[int, np.ndarray] = {}
    with av.open(str(video)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                kept[i] = f.to_ndarray(format="rgb24")
    return [[kept[i] for i in pick] for pick in picks], duration


def frames_strip(frames: list[np.ndarray], dst: Path, max_width: int = 1400) -> str | None:
    if not frames:
        return None
    ims = [Image.fromarray(f) for f in frames]
    h = ims[0].height
    strip = Image.new("RGB", (sum(i.width for i in ims) + 6 * (len(ims) - 1), h), (255, 255, 255))
    x = 0
    for im in ims:
        strip.paste(im, (x, 0))
        x += im.width + 6
    if strip.width > max_width:
        strip = strip.resize((max_width, max(1, round(h * max_width / strip.width))), Image.LANCZOS)
    with atomic_output(dst) as tmp:
        strip.save(tmp, format="PNG", optimize=True)
    return dst.name


def video_gif(
    frames: list[np.ndarray], duration: float | None, dst: Path, max_mb: float, width: int = 160, colors: int = 64
) -> str | None:
    """A short, small GIF of the stylized video from some of its frames (the MP4 stays out of the report)."""
    if not frames:
        return None
    ims = [Image.fromarray(f) for f in frames]
    s = width / ims[0].width
    ims = [im.resize((width, max(2, round(im.height * s))), Image.LANCZOS).quantize(colors=colors) for im in ims]
    dur = duration if duration else len(frames) / 24
    save_gif(ims, dst, max(40, round(1000 * dur / len(ims))))
    if dst.stat().st_size > max_mb * 2**20:
        dst.unlink()
        return None
    return dst.name


# ---------------------------------------------------------------------------------------- GOM
def _seed_of(name: str) -> int:
    return int(name.rsplit("seed", 1)[1])


def study_runs(root: Path, prefix: str = "study_seed") -> list[Path]:
    """gom/<prefix><N> folders by seed (not the `.stale-N` ones moved aside): study_seed (paper
    text) or code_seed (the authors' code setting)."""
    runs = [p for p in (root / "gom").glob(f"{prefix}*") if p.name[len(prefix) :].isdigit()]
    return sorted(runs, key=lambda p: _seed_of(p.name))


def gom_section(root: Path, figs: Path) -> list[str]:
    L = [
        "## 1. Geographical Original of Music: MLPs, autoencoders, hybrid (paper section 3.1)",
        "",
    ]
    done = [(p, r) for p in study_runs(root) if (r := completed(p))]
    code = [(p, r) for p in study_runs(root, "code_seed") if (r := completed(p))]
    if not done:
        L += ["Not run (or not finished): `experiment=gom_study`.", ""]
    else:
        seeds = [_seed_of(p.name) for p, _ in done]
        ms = [r["metrics"] for _, r in done]
        settings = [
            (label, [(_seed_of(p.name), r["metrics"]) for p, r in runs])
            for label, runs in (("paper text", done), ("authors' code", code))
            if runs
        ]
        L += [
            f"`experiment=gom_study`, one run per seed (seeds {seeds}; each seed draws its own 60/20/20 split "
            "and initialisation). 175 MLPs and 405 autoencoders per seed, 100 full-batch epochs each.",
            "",
        ]
        if code:
            L += [
                "Two settings: the paper's text (the defaults) and the authors' code (`code_seed*`: the five "
                "switches of docs/gom.md, `model.ae_grad_reduction=sum model.ae_bias=false model.ae_input_layer=true "
                "data.target_scaling=joint data.n_features=67`; the grids take them from the model config). "
                "Does the paper's pick follow from its code?",
                "",
            ]
        L += [
            "### Best MLP of the grid (lowest validation energy)",
            "",
            "| | setting | depth x width | lr | best val energy | test km |",
            "|---|---|---|---|---|---|",
            "| paper | | 1 x 3 | 0.01 | n/a | n/a |",
        ]
        for label, rows in settings:
            for s_, m in rows:
                b = m.get("mlp_best") or {}
                L.append(
                    f"| ours, seed {s_} | {label} | {b.get('depth')} x {b.get('width')} | {b.get('lr')} | "
                    f"{b.get('best_val_energy', float('nan')):.5f} | {b.get('test_km', float('nan')):.0f} |"
                )
        L += [
            "",
            "### Best autoencoders M1* (reduction) and M2* (extraction)",
            "",
            "| | setting | paper | ours, per seed | ours, mean ± std |",
            "|---|---|---|---|---|",
        ]
        for fam in ("M1", "M2"):
            for label, rows in settings:
                hs = [((m.get("hybrid") or {}).get(fam) or {}).get("ae_hidden") for _, m in rows]
                L.append(
                    f"| {fam}* (hidden units) | {label} | {PAPER_M[fam]} | {per_seed(hs)} | {mean_std(hs, '.1f')} |"
                )
        L += [
            "",
            "### Hybrid (autoencoder code -> 3 sigmoid neurons), test set: great-circle error",
            "",
            "| model | setting | seeds | mean km (mean ± std over seeds) | per seed | median km | R² lat | R² lon |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for fam in ("M1", "M2"):
            for label, rows in settings:
                hy = [((m.get("hybrid") or {}).get(fam) or {}) for _, m in rows]
                km = [h.get("test/km") for h in hy]
                L.append(
                    f"| hybrid {fam}* | {label} | {len(rows)} | {mean_std(km, '.0f')} | {per_seed(km, '.0f')} | "
                    f"{mean_std([h.get('test/km_median') for h in hy], '.0f')} | "
                    f"{mean_std([h.get('test/r2_lat') for h in hy])} | {mean_std([h.get('test/r2_lon') for h in hy])} |"
                )
        bl = [m.get("baselines") or {} for m in ms]
        for key, label in (
            ("baseline_mean", "training mean (baseline)"),
            ("baseline_knn", "k-NN (baseline)"),
        ):
            km = [b.get(f"{key}_km") for b in bl]
            L.append(
                f"| {label} | paper text | {len(seeds)} | {mean_std(km, '.0f')} | {per_seed(km, '.0f')} | "
                f"{mean_std([b.get(f'{key}_km_median') for b in bl], '.0f')} | "
                f"{mean_std([b.get(f'{key}_r2_lat') for b in bl])} | {mean_std([b.get(f'{key}_r2_lon') for b in bl])} |"
            )
        p0, m0 = done[0][0], ms[0]
        names = {
            "mlp_best": "Fig. 7",
            "mlp_median": "Fig. 8",
            "mlp_worst": "Fig. 9",
            "hybrid_M1_latitude": "Fig. 10",
            "hybrid_M1_longitude": "Fig. 11",
            "hybrid_M2_latitude": "Fig. 17",
            "hybrid_M2_longitude": "Fig. 18",
        }
        shown = []
        for key, fname in (m0.get("figures") or {}).items():
            name = copy_png(p0 / fname, figs / f"gom_{key}.png")
            if name:
                shown.append(
                    f"- {names.get(key, 'Figs. 7-9 (autoencoders)')}, {key.replace('_', ' ')} "
                    f"(seed {seeds[0]}): ![{key}]({FIG_DIR}/{name})"
                )
        if shown:
            L += [
                "",
                f"Figures of seed {seeds[0]} (energy and local output gradient per epoch; true vs predicted):",
                "",
                *shown,
            ]
    L += [""]
    cvs = sorted((root / "gom").glob("cv_*"))
    cvs = [p for p in cvs if ".stale-" not in p.name]
    if cvs:
        L += [
            "### What we add: 10-fold cross-validation against the baselines",
            "",
            "Great-circle error pooled over all tracks (`experiment=gom_cv`: standardized features -> 256 ReLU -> "
            "softmax over the origins, the least expected distance; each fold a Lightning fit on the other folds, "
            "tested on the held-out fold). The baselines ran on the same folds: random forests (scikit-learn, "
            "Zhou et al.'s method) predicting latitude/longitude or 3-D unit vectors, k-NN, the training mean. "
            "Zhou et al. 2014 report 3,113 km on a different track set (1,142 pieces, 73 countries; "
            "the UCI file has 1,059 tracks, 33 places).",
            "",
            "| feature file | folds | model, mean km | fold spread (std) | median km | random forest lat/lon | "
            "random forest 3-D | k-NN | training mean | Zhou et al. 2014 (other tracks) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in cvs:
            r = completed(p)
            feat = p.name[3:]
            if not r:
                err = run_error(p)
                why = f"failed: {err.split(';')[0].split(' (')[0]}" if err else "not finished"
                L.append(f"| {feat} | {why.replace('|', '/')} | | | | | | | | {ZHOU_2014_KM:.0f} |")
                continue
            m = r["metrics"]
            folds = [f.get("test_km") for f in m.get("folds") or []]
            spread = f"{statistics.stdev(folds):.0f}" if len(folds) > 1 else "n/a"

            def km(key: str, m: dict[str, Any] = m) -> str:
                v = m.get(key)
                return f"{v:.0f}" if isinstance(v, (int, float)) else "n/a"

            L.append(
                f"| {feat} | {m.get('cv_folds')} | {km('cv_model_km')} | {spread} | {km('cv_model_km_median')} | "
                f"{km('cv_rf_latlon_km')} | {km('cv_rf_unit_km')} | {km('cv_knn_km')} | {km('cv_mean_km')} | "
                f"{m.get('zhou2014_rf_km', ZHOU_2014_KM):.0f} |"
            )
        L.append("")
    return L


# ------------------------------------------------------------------------------------- digits
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
    r, st = completed(run), read_json(run / "study.json")
    if not (r and st):
        return L + ["Not run (or not finished): `experiment=digits_study`.", ""]
    seeds = st.get("seeds", [])
    L += [
        f"`experiment=digits_study`, seeds {seeds} (each seed draws its own split, initialisation and batch "
        "order); ± is the standard deviation over seeds.",
        "",
        "### Figs. 12-13: the paper's setup (Keras LeNet-5, retrained from scratch)",
        "",
        "| epochs | train acc (paper) | train acc (ours) | val acc (paper) | val acc (ours) | test acc (ours) |",
        "|---|---|---|---|---|---|",
    ]
    table = st.get("paper_setup") or {}
    for e in sorted(table, key=int):
        t, p = table[e], PAPER_DIGITS.get(int(e), {})
        L.append(
            f"| {e} | {p.get('train_acc', 'n/a')} | {mean_std(t['train_acc'])} | {p.get('val_acc', 'n/a')} | "
            f"{mean_std(t['val_acc'])} | {mean_std(t['test_acc'])} |"
        )
    curves = copy_png(run / "curves_paper.png", figs / "digits_fig12_13_curves.png")
    if curves:
        L += [
            "",
            f"![train/val loss and accuracy per epoch, paper's points marked]({FIG_DIR}/{curves})",
        ]
    last = str(max(table, key=int)) if table else None
    L += [
        "",
        "### What we add: transfer learning against the paper's LeNet (same per-seed test splits)",
        "",
        "| model | test acc (mean ± std) | per seed |",
        "|---|---|---|",
    ]
    if last:
        L.append(
            f"| paper's LeNet-5, {last} epochs | {mean_std(table[last]['test_acc'])} | "
            f"{per_seed(table[last]['test_acc'])} |"
        )
    if st.get("zero_shot_test_acc"):
        z = st["zero_shot_test_acc"]
        L.append(f"| MNIST-pretrained LeNet-5, no fine-tuning | {mean_std(z)} | {per_seed(z)} |")
    for label, accs in (st.get("transfer") or {}).items():
        L.append(f"| {label} | {mean_std(accs)} | {per_seed(accs)} |")
    scored = st.get("transfer_scores") or {}
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
                f"| {label} | {sc['correct']}/{sc['n']} ({sc['correct'] / sc['n']:.3f}) | {interval(sc['ci95'])} | "
                f"{statistics.mean(sc['ece']):.3f} |"
            )
    if st.get("lowo"):
        L += [
            "",
            f"Leave-one-writer-out (seeds {st.get('lowo_seeds')}): test on all digits of a writer never seen.",
            "",
            "| held-out writer | paper's LeNet | MNIST model, no fine-tuning | transfer + augmentation |",
            "|---|---|---|---|",
        ]
        for w, row in st["lowo"].items():
            L.append(
                f"| {w} | {mean_std(row.get('paper', []))} | {mean_std(row.get('mnist_only', []))} | "
                f"{mean_std(row.get('transfer', []))} |"
            )
    lowo_scores = st.get("lowo_scores") or {}
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
                        f"| {label} | {w} | {mean_std(sc['acc'])} | {interval(sc['ci95'])} | "
                        f"{statistics.mean(sc['ece']):.3f} | {sc['ensemble_acc']:.3f} ({sc['ensemble_ece']:.3f}) |"
                    )
    pages = st.get("pages")
    if pages:
        L += [
            "",
            "Whole synthetic pages read by the sheet reader (`predict.py CKPT page.png`), MNIST test digits:",
            "",
            "| pages | digits | found in reading order | accuracy on the page | same digits as clean cells |",
            "|---|---|---|---|---|",
        ]
        for kind, p in pages.items():
            L.append(f"| {kind} | {p['n']} | {p['found']:.3f} | {p['page_acc']:.3f} | {p['clean_acc']:.3f} |")
    return L + [""]


def interval(ci: Sequence[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


# ---------------------------------------------------------------------------------------- GAN
def fid_curve(run: Path, metrics: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{epoch (1-based): {fid, modes, confidence, class_hist}}: the CSV logs of every attempt (a
    resumed run starts a new metrics.csv; the earlier ones are kept in resumed/), then the run's own
    fid_history. Built from per-epoch files only, so a resumed run reports the same curve."""
    curve: dict[int, dict[str, Any]] = {}
    for f in [*sorted((run / "resumed").glob("metrics_*.csv")), run / "csv" / "metrics.csv"]:
        if not f.is_file():
            continue
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                if not (row.get("fid") and row.get("epoch")):
                    continue
                c = curve.setdefault(int(float(row["epoch"])) + 1, {})
                c["fid"] = float(row["fid"])
                if row.get("gen/modes_covered"):
                    c["modes"] = int(float(row["gen/modes_covered"]))
                if row.get("gen/confidence"):
                    c["confidence"] = float(row["gen/confidence"])
                if all(row.get(f"gen/class_{i}") for i in range(10)):
                    c["class_hist"] = [round(float(row[f"gen/class_{i}"]), 3) for i in range(10)]
    for e, v in metrics.get("fid_history") or []:
        curve.setdefault(int(e), {})["fid"] = float(v)
    return dict(sorted(curve.items()))


def plot_fid(curves: dict[str, dict[int, dict[str, Any]]], floor: float | None, path: Path, title: str) -> Path:
    """LeNet-FID per epoch of one or more runs (label -> curve), the floor, and each run's class coverage."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax2 = None
    for i, (label, curve) in enumerate(curves.items()):
        ep, color = list(curve), f"C{i}"
        ax.plot(
            ep,
            [curve[e]["fid"] for e in ep],
            color=color,
            marker="." if len(ep) < 40 else None,
            label=f"LeNet-FID, {label}",
        )
        modes = [(e, c["modes"]) for e, c in curve.items() if "modes" in c]
        if modes:
            ax2 = ax2 or ax.twinx()
            ax2.plot(*zip(*modes), color=color, ls=":", alpha=0.6, label=f"digits covered (>= 2.5%), {label}")
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label=f"real-vs-real floor {floor:.2f}")
    ax.set(xlabel="epoch", ylabel="LeNet-FID (log)", yscale="log", title=title)
    ax.grid(alpha=0.3)
    if ax2 is not None:
        ax2.set(ylabel="digits covered (dotted)", ylim=(0, 10.5))
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    # one legend for both axes, under the plot: the curves fill the whole box
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=7, frameon=False)
    return save_figure(fig, path)


def gan_section(root: Path, figs: Path, gif_max_mb: float) -> list[str]:
    L = ["## 3. MLP GAN on MNIST (paper fig. 14)", ""]
    run = root / "gan" / "mnist"
    r = completed(run)
    if not r:
        return L + ["Not run (or not finished): `experiment=gan_mnist`.", ""]
    m = r["metrics"]
    c = run_config(run)

    def conf(key: str, default: Any) -> Any:
        v = OmegaConf.select(c, key) if c is not None else None
        return default if v is None else v

    epochs, batch = conf("trainer.max_epochs", "?"), conf("data.batch_size", "?")
    grid_epochs = list(conf("callbacks.gan_samples.epochs", [1, 100, 200]))
    cells = []
    for e in grid_epochs:
        name = copy_png(
            run / "samples" / f"epoch_{int(e):04d}.png",
            figs / f"gan_epoch_{int(e):03d}.png",
        )
        if name:
            cells.append((e, name))
    L += [
        f"`experiment=gan_mnist`, {epochs} epochs (paper: 200), batch {batch}, "
        "8x8 grids of the same 64 latent vectors.",
        "",
    ]
    L += picture_row([(f"after epoch {e}", n) for e, n in cells])
    gif = copy_gif(run / "samples" / "training.gif", figs / "gan_training.gif", gif_max_mb)
    if gif:
        L += [
            f"Every grid of the run as an animation: ![training]({FIG_DIR}/{gif})",
            "",
        ]
    curve = fid_curve(run, m)
    floor = m.get("fid_floor")
    fid_cfg = (OmegaConf.select(c, "model.fid") if c is not None else None) or {}
    n_fake, n_real = fid_cfg.get("num_samples", "?"), fid_cfg.get("num_real", "?")
    L += [
        "### What we add: LeNet-FID over the whole run, real-vs-real floor, class coverage",
        "",
        f"LeNet-FID: Fréchet distance of {n_fake} samples vs {n_real} training images in the 84-d features of "
        "an MNIST LeNet-5 (not Inception: comparable only within this repository). The floor is the same "
        f"distance for {n_fake} real test images: what a perfect generator would get.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    best = min(curve.items(), key=lambda kv: kv[1]["fid"]) if curve else None
    last = curve[max(curve)] if curve else {}
    rows = [
        ("epochs trained", max(curve) if curve else None),
        ("LeNet-FID, epoch 1", curve.get(1, {}).get("fid")),
        ("LeNet-FID, last epoch", last.get("fid")),
        ("LeNet-FID, best epoch", f"{best[1]['fid']:.2f} (epoch {best[0]})" if best else None),
        ("real-vs-real floor", floor),
        ("test: best checkpoint vs test images", m.get("test/fid")),
        ("test: floor (train vs test images)", m.get("test/fid_floor")),
        ("digits covered (>= 2.5% of samples), last epoch", last.get("modes")),
        ("class histogram of the samples, last epoch (0-9)", last.get("class_hist")),
        ("classifier confidence on the samples, last epoch", last.get("confidence")),
    ]
    for k, v in rows:
        if v is not None:
            L.append(f"| {k} | {f'{v:.2f}' if isinstance(v, float) else v} |")
    if curve:
        name = plot_fid(
            {"generator vs train": curve},
            floor,
            figs / "gan_fid_curve.png",
            f"MLP GAN: LeNet-FID per epoch ({len(curve)} epochs)",
        )
        L += [
            "",
            f"![LeNet-FID per epoch with the floor and class coverage]({FIG_DIR}/{name.name})",
        ]
    return L + [""]


# -------------------------------------------------------------------------------------- style
def style_section(root: Path, figs: Path, gif_max_mb: float, n_frames: int) -> list[str]:
    L = ["## 4. Video style transfer (paper figs. 15-16)", ""]
    variants = [p for p in sorted((root / "style").glob("*")) if p.is_dir() and ".stale-" not in p.name]
    done = [(p, completed(p)) for p in variants]
    if not any(r for _, r in done):
        return L + ["Not run (or not finished): `experiment=style_video`.", ""]
    base = next(
        ((p, r) for p, r in done if r and p.name == "per_frame"),
        next((x for x in done if x[1]), None),
    )
    p0, r0 = base
    c = run_config(p0)
    if c is not None:
        L += [
            f"`experiment=style_video`: {Path(str(c.input)).name} stylized with {Path(str(c.style)).name} "
            "(Magenta's arbitrary style network, PyTorch port of the TF Lite weights), every frame, source "
            "timestamps and audio kept.",
            "",
        ]
    previews = sorted(p0.glob("*_preview.png"))
    pv = copy_png(previews[0], figs / "style_fig15_16_frame_style_stylized.png") if previews else None
    if pv:
        L += [
            f"Figs. 15-16, video frame | style image | stylized frame: ![preview]({FIG_DIR}/{pv})",
            "",
        ]
    videos = sorted(p0.glob("*.mp4"))
    if videos:
        (shown, animated), duration = video_frames(videos[0], [n_frames, GIF_FRAMES])
        strip = frames_strip(shown, figs / "style_video_frames.png")
        gif = video_gif(animated, duration, figs / "style_video.gif", gif_max_mb)
        if strip:
            L += [f"Frames of the stylized video: ![frames]({FIG_DIR}/{strip})", ""]
        if gif:
            L += [f"The stylized video (GIF, reduced): ![video]({FIG_DIR}/{gif})", ""]
    L += [
        "### What we add: flicker with and without the temporal option",
        "",
        "Flicker ratio = mean |S_t - S_t-1| of the stylized frames / the same of the input frames "
        "(1: the output changes no more than the input).",
        "",
        "| variant | frames | flicker ratio | input mean frame diff | output mean frame diff |",
        "|---|---|---|---|---|",
    ]
    for p, r in done:
        if not r:
            L.append(f"| {p.name} | not finished | | | |")
            continue
        m = r["metrics"]
        L.append(
            f"| {p.name} | {m.get('frames', '')} | {m.get('flicker_ratio', float('nan')):.3f} | "
            f"{m.get('flicker_input', float('nan')):.4f} | {m.get('flicker_output', float('nan')):.4f} |"
        )
    return L + [""]


def gan_modern_section(root: Path, figs: Path) -> list[str]:
    """Beyond the paper: the same GAN with label smoothing + spectral norm, step for step beside it."""
    L = ["### Beyond the paper: label smoothing and spectral norm in D (`experiment=gan_mnist_modern`)", ""]
    runs = {"paper's model": root / "gan" / "mnist", "modern": root / "gan_modern" / "mnist"}
    results = {n: res for n, d in runs.items() if (res := completed(d))}
    if "modern" not in results:
        return L + ["Not run (or not finished): `make reproduce ARGS='reproduce.stages=[gan_modern]'`.", ""]
    curves = {n: fid_curve(runs[n], res["metrics"]) for n, res in results.items()}
    c = run_config(runs["modern"])
    ls = OmegaConf.select(c, "model.label_smoothing") if c is not None else None
    sn = OmegaConf.select(c, "model.spectral_norm") if c is not None else None
    L += [
        f"The paper's networks, data, batches, optimizers and seed, with one-sided label smoothing {ls} "
        f"(D's real targets {1 - float(ls or 0):g}) and spectral_norm={sn} in D's linear layers: "
        "the same number of steps per epoch, so each row compares the two models after the same steps.",
        "",
    ]
    both = sorted(set.intersection(*(set(cv) for cv in curves.values()))) if all(curves.values()) else []
    marks = [e for e in both if e in {1, 5, 10, 25, 50, 75, 100, 125, 150, 175, 200}]
    if both and both[-1] not in marks:
        marks.append(both[-1])
    names = list(curves)
    L += [
        "| epoch | "
        + " | ".join(f"LeNet-FID, {n}" for n in names)
        + " | "
        + " | ".join(f"digits covered, {n}" for n in names)
        + " |",
        "|---|" + "---|" * (2 * len(names)),
    ]
    for e in marks:
        fids = " | ".join(f"{curves[n][e]['fid']:.2f}" for n in names)
        modes = " | ".join(str(curves[n][e].get("modes", "")) for n in names)
        L.append(f"| {e} | {fids} | {modes} |")
    bests = []
    for n in names:
        cv = {e: v for e, v in curves[n].items() if not both or e <= both[-1]}  # the same steps
        e, v = min(cv.items(), key=lambda kv: kv[1]["fid"]) if cv else (None, {})
        bests.append(f"{v['fid']:.2f} (epoch {e})" if cv else "")
    L.append("| best | " + " | ".join(bests) + " |" + " |" * len(names))
    tests = [results[n]["metrics"].get("test/fid") for n in names]
    if all(t is not None for t in tests):
        L.append(
            "| test: best checkpoint vs test images | "
            + " | ".join(f"{t:.2f}" for t in tests)
            + " |"
            + " |" * len(names)
        )
    floor = results["modern"]["metrics"].get("fid_floor")
    name = plot_fid(
        curves, floor, figs / "gan_modern_fid_curve.png", "MLP GAN: the paper's model vs the modern options"
    )
    L += ["", f"![LeNet-FID per epoch, both models]({FIG_DIR}/{name.name})", ""]
    if not curves["modern"]:
        return L
    last = max(curves["modern"])
    cells = [  # figures/gan_epoch_200.png, figures/gan_modern_epoch_200.png
        (
            f"{n}, after epoch {last}",
            copy_png(d / "samples" / f"epoch_{last:04d}.png", figs / f"{d.parent.name}_epoch_{last:03d}.png"),
        )
        for n, d in runs.items()
    ]
    return L + picture_row([(cap, f) for cap, f in cells if f])


# ------------------------------------------------------------------------------- differences
def modern_gan_note(root: Path, pap: dict[int, dict[str, Any]]) -> str:
    """What the modern options (beyond the paper) reach after the same steps as the paper's curve `pap`,
    when they were run."""
    r = completed(root / "gan_modern" / "mnist")
    if not r:
        return ""
    mod = fid_curve(root / "gan_modern" / "mnist", r["metrics"])
    e = max(set(mod) & set(pap), default=None)
    if e is None:
        return ""
    return (
        f" With one-sided label smoothing and spectral norm in D (`experiment=gan_mnist_modern`, beyond the "
        f"paper) the same {e} epochs end at {mod[e]['fid']:.1f} (paper's model {pap[e]['fid']:.1f}); see the "
        "comparison above."
    )


def differences(root: Path, quick: bool) -> list[str]:
    """Plain statements of where our numbers differ from the paper's, from the runs' numbers."""
    D = []
    if quick:
        D.append(
            "**QUICK mode**: every stage ran with reduced settings (fewer seeds, epochs, folds, frames); "
            "the numbers show that the pipeline works, not the paper's scale. Run `make reproduce` for those."
        )
    ms = [r["metrics"] for p in study_runs(root) if (r := completed(p))]
    for fam in ("M1", "M2"):
        hs = [((m.get("hybrid") or {}).get(fam) or {}).get("ae_hidden") for m in ms]
        hs = [h for h in hs if h is not None]
        if hs and any(h != PAPER_M[fam] for h in hs):
            D.append(
                f"{fam}* = {per_seed(hs)} (seeds) vs the paper's {PAPER_M[fam]}: the grid picks the autoencoder "
                "with the lowest validation energy after 100 mean-gradient epochs (paper text: mean gradient, bias, "
                "68 features; the authors' code differs in five switches, docs/gom.md); the pick depends on each "
                "seed's split and initialisation, and the paper reports one run."
            )
    best = [m.get("mlp_best") or {} for m in ms]
    if best and any((b.get("depth"), b.get("width"), b.get("lr")) != (1, 3, 0.01) for b in best):
        picked = ", ".join(f"{b.get('depth')}x{b.get('width')} lr {b.get('lr')}" for b in best)
        D.append(
            f"Best MLP: {picked} "
            f"vs the paper's {PAPER_BEST_MLP}: with sigmoid outputs and 100 full-batch steps every net "
            "predicts nearly the training mean (docs/gom.md: test R² ≈ 0, km close to the training-mean "
            "baseline), so the ranking among the top nets says little."
        )
    st = read_json(root / "digits" / "study" / "study.json") or {}
    for e, t in (st.get("paper_setup") or {}).items():
        p = PAPER_DIGITS.get(int(e))
        if p and t.get("train_acc"):
            tr = statistics.mean(t["train_acc"])
            if abs(tr - p["train_acc"]) > 0.02:
                D.append(
                    f"Digits, {e} epochs: train accuracy {tr:.3f} vs the paper's {p['train_acc']} (val "
                    f"{statistics.mean(t['val_acc']):.3f} vs {p['val_acc']}): PyTorch vs Keras, our own "
                    "random splits per seed; the validation split holds only 49 digits (one digit = 0.02)."
                )
    g = completed(root / "gan" / "mnist")
    if g:
        curve = fid_curve(root / "gan" / "mnist", g["metrics"])
        fid, floor = curve[max(curve)].get("fid") if curve else None, g["metrics"].get("fid_floor")
        if isinstance(fid, (int, float)) and isinstance(floor, (int, float)) and fid > 10 * floor:
            D.append(
                f"GAN: the last LeNet-FID ({fid:.1f}) is {fid / floor:.0f}x the real-vs-real floor "
                f"({floor:.2f}) after {max(curve)} epochs: the samples are still far from the data distribution "
                "(the paper shows grids only, no metric; compare the grids and the curve above)."
                + modern_gan_note(root, curve)
            )
    D.append(
        "Video: the paper used TF Hub's arbitrary-image-stylization-v1-256; we run a PyTorch port of the same "
        "network's TF Lite weights (max |diff| 4e-5 against the TF Lite reference, docs/style_video.md) on a "
        "public clip (Big Buck Bunny), since the paper's video is not published."
    )
    D.append(
        "GAN quality is measured with a LeNet-5 FID (the paper has none); Inception-FID means little on 28x28 digits."
    )
    return ["## Where we differ from the paper, and why", ""] + [f"- {d}" for d in D] + [""]


# ------------------------------------------------------------------------------------- report
def runs_table(
    root: Path,
    stages: Sequence[str],
    expected: dict[str, float],
    notes: dict[str, list[str]],
) -> list[str]:
    L = [
        "## Runs",
        "",
        "Every number above comes from these runs' own files (results.json, study.json, csv/).",
        "",
        "| stage | run | status | wall time | error |",
        "|---|---|---|---|---|",
    ]
    for s in STAGES:
        total, n = 0.0, 0
        for p in sorted(x for x in (root / s).glob("*") if x.is_dir() and ".stale-" not in x.name):
            r = read_json(p / "results.json") or {}
            d = r.get("duration_s")
            if isinstance(d, (int, float)):
                total, n = total + d, n + 1
            L.append(
                f"| {s} | {p.name} | {r.get('status', 'not finished')} | "
                f"{f'{d:.0f} s' if isinstance(d, (int, float)) else ''} | "
                f"{run_error(p).replace('|', '/')[:200]} |"
            )
        for note in notes.get(s) or []:
            L.append(f"| {s} | {note.split(':', 1)[0]} | skipped | | {note.split(':', 1)[1].strip()} |")
        if n:
            L.append(
                f"| {s} | **stage total** | | **{total / 60:.1f} min** (expected {expected.get(s, 0) / 60:.0f} min) | |"
            )
    return L + [""]


def write_report(
    root: Path,
    quick: bool,
    stages: Sequence[str],
    notes: dict[str, list[str]] | None = None,
    expected: dict[str, float] | None = None,
    gif_max_mb: float = 2.0,
    video_frames_n: int = 4,
) -> Path:
    """Write `<root>/REPORT.md` and `<root>/figures/` from the run folders under root."""
    root = Path(root)
    figs = root / FIG_DIR
    figs.mkdir(parents=True, exist_ok=True)
    title = (
        "# QUICK MODE (reduced settings, NOT the paper's scale): Hybrid supervised learning, reproduced"
        if quick
        else "# Hybrid supervised learning: autoencoders, CNNs and GANs (Banoy et al. 2023), reproduced"
    )
    L = [title, ""]
    if quick:
        L += [
            "> **QUICK**: `make reproduce QUICK=1` ran every stage with reduced settings in minutes. The numbers "
            "below test the pipeline; they are not the paper's scale (`make reproduce`).",
            "",
        ]
    L += [
        "Each section puts the paper's value or figure beside ours; seeds and spread where a seed matters. "
        "Paper values as recorded in docs/gom.md, docs/digits.md, docs/gan.md, docs/style_video.md "
        "(see `hybridlearn/reproduce/report.py`).",
        "",
    ]
    sections = {
        "gom": lambda: gom_section(root, figs),
        "digits": lambda: digits_section(root, figs),
        "gan": lambda: gan_section(root, figs, gif_max_mb),
        "gan_modern": lambda: gan_modern_section(root, figs),
        "style": lambda: style_section(root, figs, gif_max_mb, video_frames_n),
    }
    for s in STAGES:
        if s in stages or (root / s).is_dir():  # the folder's report: earlier stages' results too
            L += sections[s]()
    L += differences(root, quick)
    L += runs_table(root, stages, expected or {}, notes or {})
    return write_text_atomic(root / "REPORT.md", "\n".join(L))
