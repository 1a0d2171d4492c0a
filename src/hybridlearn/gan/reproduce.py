"""The GAN stages of `make reproduce`: the paper's MLP GAN (fig. 14) and, beyond the paper, the same
run with the training chosen on validation (hinge loss, its learning rates, spectral norm in D, an
EMA generator: `gan_modern`) and the DCGAN sized
to the paper's GAN's wall time (`gan_dcgan`); their report sections read from the runs' CSV logs
and results.json."""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.plotting import plt, save_figure
from hybridlearn.core.report import (
    FIG_DIR,
    completed,
    copy_gif,
    copy_png,
    csv_rows,
    mean_std,
    per_epoch,
    per_seed,
    picture_row,
    run_config,
)
from hybridlearn.core.reproduce import PlanContext, ReportContext, Run, flatten

# the paper's GAN; the same with the modern options on; the DCGAN (the last two off by default)
STAGES = ("gan", "gan_modern", "gan_dcgan")


FID_TARGET = 10.0  # "epochs to reach LeNet-FID <= 10" in the comparison over seeds
MAIN = "mnist"  # a stage's first seed: the run whose grids, GIF and curves the report shows


def run_name(i: int, seed: int) -> str:
    """`mnist` for the stage's first seed, `mnist_seed<s>` for the others."""
    return MAIN if i == 0 else f"{MAIN}_seed{seed}"


def plan(stage: str, s: DictConfig, ctx: PlanContext) -> list[Run]:
    """One resumable run per training seed of the stage (`seeds`)."""
    base = [f"experiment={s.experiment}", *ctx.common, *flatten(s.get("set") or {})]
    seeds = list(s.get("seeds") or [0])
    return [Run(stage, run_name(i, seed), [*base, f"seed={seed}"], resumable=True) for i, seed in enumerate(seeds)]


def seed_runs(root: Path, stage: str) -> dict[int, tuple[Path, dict[str, Any]]]:
    """The stage's finished runs by training seed, the main run first."""
    dirs = [d for d in root.glob(f"{stage}/{MAIN}*") if re.fullmatch(rf"{MAIN}(_seed\d+)?", d.name)]
    out = {}
    for d in sorted(dirs, key=lambda d: (d.name != MAIN, len(d.name), d.name)):
        if r := completed(d):
            out[int(r.get("seed") or 0)] = (d, r)
    return out


def section(stage: str, ctx: ReportContext) -> list[str]:
    if stage == "gan":
        return gan_section(ctx.root, ctx.figs, ctx.gif_max_mb)
    if stage == "gan_dcgan":
        return gan_dcgan_section(ctx.root, ctx.figs)
    return gan_modern_section(ctx.root, ctx.figs)


def test_fid(m: dict[str, Any]) -> str | None:
    """test/fid, with its spread over sample draws when the run measured several."""
    fid, std = m.get("test/fid"), m.get("test/fid_std")
    if not isinstance(fid, (int, float)):
        return None
    return f"{fid:.2f} ± {std:.2f}" if isinstance(std, (int, float)) else f"{fid:.2f}"


def fid_curve(run: Path, metrics: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{epoch (1-based): {fid, modes, confidence, class_hist}}: the CSV logs of every attempt, then
    the run's own fid_history. Built from per-epoch files only, so a resumed run reports the same curve."""
    return curve_of(csv_rows(run), metrics)


def curve_of(rows: list[dict[str, str]], metrics: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """fid_curve of a run's CSV rows already read (csv_rows)."""
    curve: dict[int, dict[str, Any]] = {}
    for row in rows:
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


def over_seeds(root: Path, stage: str) -> str | None:
    """The stage's test LeNet-FID, mean ± std over its finished training seeds (None for one)."""
    runs = seed_runs(root, stage)
    if len(runs) < 2:
        return None
    fids = [r["metrics"].get("test/fid") for _, r in runs.values()]
    return f"{mean_std(fids, '.2f', '')} (seeds {', '.join(map(str, runs))})"


def gan_section(root: Path, figs: Path, gif_max_mb: float) -> list[str]:
    L = ["## 3. MLP GAN on MNIST (paper fig. 14)", ""]
    run = root / "gan" / MAIN
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
    return L + _fid_table(run, figs, m, c)


def _fid_table(run: Path, figs: Path, m: dict[str, Any], c: Any) -> list[str]:
    """LeNet-FID over the whole run (the paper has no metric): first, last, best epoch, the floor,
    the test scores, class coverage; and the curve."""
    curve = fid_curve(run, m)
    floor = m.get("fid_floor")
    fid_cfg = (OmegaConf.select(c, "model.fid") if c is not None else None) or {}
    n_fake, n_real = fid_cfg.get("num_samples", "?"), fid_cfg.get("num_real", "?")
    L = [
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
        ("test: best checkpoint vs test images", test_fid(m)),
        ("test: mean ± std over training seeds", over_seeds(run.parent.parent, run.parent.name)),
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


def modern_training(c: Any) -> str:
    """What a run's config changes from the paper's GAN training, in words (its loss, Adam settings,
    D:G ratio, label smoothing, spectral norm, R1, EMA)."""
    if c is None:
        return "its own settings (its config is missing)"

    def get(key: str, default: Any = None) -> Any:
        v = OmegaConf.select(c, f"model.{key}")
        return default if v is None else v

    ls, ema = float(get("label_smoothing", 0)), get("ema_decay")
    sn = get("discriminator.spectral_norm", get("spectral_norm", False))  # a key of model before the network configs
    parts = [f"the {get('loss', 'nonsaturating')} loss"]
    if None not in (lrs := [get(k) for k in ("g_lr", "d_lr", "b1", "b2")]):
        parts.append("Adam lr G {:g} / D {:g}, betas ({:g}, {:g})".format(*lrs))
    parts.append(f"{get('d_steps', 1)} D step(s) per G step")
    parts += [f"one-sided label smoothing {ls:g} (D's real targets {1 - ls:g})"] if ls else []
    parts += ["spectral norm in D"] if sn else []
    if r1 := float(get("r1_gamma", 0)):
        every = int(get("r1_every", 1))
        parts.append(f"R1 penalty gamma {r1:g} on D" + (f" (lazy, every {every}th batch)" if every > 1 else ""))
    parts += [f"an EMA generator (decay {ema:g})" if ema else "no EMA generator"]
    return ", ".join(parts)


def gan_modern_section(root: Path, figs: Path) -> list[str]:
    """Beyond the paper: the paper's networks with modern training, step for step beside its model."""
    L = ["### Beyond the paper: the MLP GAN with modern training (`experiment=gan_mnist_modern`)", ""]
    runs = {"paper's model": root / "gan" / MAIN, "modern": root / "gan_modern" / MAIN}
    results = {n: res for n, d in runs.items() if (res := completed(d))}
    if "modern" not in results:
        return L + ["Not run (or not finished): `make reproduce ARGS='reproduce.stages=[gan_modern]'`.", ""]
    curves = {n: fid_curve(runs[n], res["metrics"]) for n, res in results.items()}
    L += [
        f"The paper's networks, data, batches and seed, trained with {modern_training(run_config(runs['modern']))}: "
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
    tests = [test_fid(results[n]["metrics"]) for n in names]
    if all(t is not None for t in tests):
        L.append("| test: best checkpoint vs test images | " + " | ".join(tests) + " |" + " |" * len(names))
    over = [over_seeds(root, stage) for stage in ("gan", "gan_modern")]
    if all(over):
        L.append("| test: mean ± std over training seeds | " + " | ".join(over) + " |" + " |" * len(names))
    return L + _modern_figures(runs, curves, results["modern"]["metrics"].get("fid_floor"), figs)


def _modern_figures(runs: dict[str, Path], curves: dict[str, dict], floor: float | None, figs: Path) -> list[str]:
    """Both models' FID curves in one plot, and their last grids side by side."""
    name = plot_fid(
        curves, floor, figs / "gan_modern_fid_curve.png", "MLP GAN: the paper's model vs the modern options"
    )
    L = ["", f"![LeNet-FID per epoch, both models]({FIG_DIR}/{name.name})", ""]
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


MODELS = {"paper's model": "gan", "modern": "gan_modern", "dcgan": "gan_dcgan"}  # name -> stage


def seed_row(run: Path, r: dict[str, Any]) -> dict[str, Any]:
    """One training seed's numbers for the comparison over seeds."""
    m, rows = r["metrics"], csv_rows(run)  # the run's CSV read once: its curve, epoch times and rates
    cv = curve_of(rows, m)
    epoch_s, rates = per_epoch(rows, "time/epoch_s"), per_epoch(rows, "time/samples_per_s")  # callbacks.epoch_time
    minutes = sum(epoch_s.values()) / 60 if epoch_s else r.get("duration_s", 0) / 60 or None
    best = min(cv, key=lambda e: cv[e]["fid"]) if cv else None  # the tested checkpoint's epoch (1-based)
    return {
        "epochs": max(cv) if cv else None,
        "minutes": minutes,
        "rate": statistics.mean(rates.values()) if rates else None,  # training images/s, mean over epochs
        "reach": next((e for e, c in cv.items() if c["fid"] <= FID_TARGET), None),
        "best": cv[best]["fid"] if best else None,
        "best_epoch": best,
        # wall time into the run when the tested checkpoint was saved (epochs 0 .. best - 1 of the CSV)
        "best_minutes": sum(t for e, t in epoch_s.items() if e < best) / 60 if best and epoch_s else None,
        "test": m.get("test/fid"),
        "test_draws": test_fid(m),  # with its spread over sample draws
        "balanced": m.get("test/classes_balanced"),
    }


def seeds_table(root: Path) -> list[str]:
    """The models over their training seeds: wall time, throughput, epochs to LeNet-FID <= 10, best
    epoch, test LeNet-FID (mean ± std over seeds; per seed its own spread over sample draws), and
    class coverage."""
    L = [
        f"| model | seeds | epochs | wall time per run (min) | training images/s | epochs to LeNet-FID <= {FID_TARGET:g} "
        "(per seed) | best LeNet-FID vs train | tested checkpoint: epoch (min into the run) | **test LeNet-FID** | "
        "test per seed (± over sample draws) | digits within 10 ± 3 % (per seed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cols = {}
    for name, stage in MODELS.items():
        runs = seed_runs(root, stage)
        if not runs:
            continue
        rows = [seed_row(d, r) for d, r in runs.values()]
        col = cols[name] = {k: [x[k] for x in rows] for k in rows[0]}
        per = ", ".join(t for t in col["test_draws"] if t)
        reach = ", ".join("never" if e is None else str(e) for e in col["reach"])
        tested = ", ".join(
            f"{e} ({m:.0f})" if m is not None else str(e) for e, m in zip(col["best_epoch"], col["best_minutes"])
        )
        balanced = per_seed([None if b is None else int(b) for b in col["balanced"]])
        L.append(
            f"| {name} | {', '.join(map(str, runs))} | {per_seed(col['epochs'])} | {mean_std(col['minutes'], '.0f', '')} | "
            f"{mean_std(col['rate'], '.0f', '')} | {reach} | {mean_std(col['best'], '.2f', '')} | {tested} | "
            f"**{mean_std(col['test'], '.2f', '')}** | {per} | {balanced} |"
        )
    return L + budget_lines(cols)


def budget_lines(cols: dict[str, dict[str, list[Any]]]) -> list[str]:
    """Each model's time against the paper's model's (its mean wall time over seeds): the run's, and when
    its tested checkpoints were saved. A checkpoint saved within that time is the one a run stopped
    there would test (the best epoch so far is the best of the whole run)."""
    budget = [m for m in cols.get("paper's model", {}).get("minutes", []) if m]
    if not budget:
        return []
    b = statistics.mean(budget)
    L = [""]
    for name, col in cols.items():
        runs, at = [m for m in col["minutes"] if m], [m for m in col["best_minutes"] if m is not None]
        if name == "paper's model" or not runs or not at:
            continue
        within = sum(m <= b for m in at)
        L.append(
            f"- {name}: a run takes {statistics.mean(runs) / b:.2f}x the paper's model's {b:.0f} min; its tested "
            f"checkpoints were saved {min(at):.0f}-{max(at):.0f} min into the run, {within} of {len(at)} within "
            "the paper's model's time (for those, a run stopped there would test the same checkpoint)."
        )
    return L if len(L) > 1 else []


def plot_class_hist(hists: dict[str, list[float]], path: Path) -> Path:
    """The share of each digit among a model's test samples (grouped bars), with the 10 ± 3 % band
    the class coverage counts."""
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / max(len(hists), 1)
    for i, (label, hist) in enumerate(hists.items()):
        ax.bar([d + (i - (len(hists) - 1) / 2) * width for d in range(10)], [100 * h for h in hist], width, label=label)
    ax.axhspan(7, 13, color="k", alpha=0.08, label="10 ± 3 %")
    ax.axhline(10, color="k", lw=0.8, ls="--")
    ax.set(
        xlabel="digit (LeNet-5's reading)",
        ylabel="% of samples",
        xticks=range(10),
        title="Class histogram of the samples",
    )
    ax.legend(fontsize=7, ncol=len(hists) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return save_figure(fig, path)


def plot_seed_curves(curves: dict[str, dict[int, dict[int, dict[str, Any]]]], floor: float | None, path: Path) -> Path:
    """LeNet-FID per epoch against training images, one panel per model (name -> {seed: curve}), one
    line per training seed, on one log scale: the spread over seeds, epoch by epoch."""
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.4), sharey=True, squeeze=False)
    for ax, (name, seeds) in zip(axes[0], curves.items()):
        for i, (seed, curve) in enumerate(seeds.items()):
            ax.plot(list(curve), [c["fid"] for c in curve.values()], color=f"C{i}", lw=1.2, label=f"seed {seed}")
        if floor is not None:
            ax.axhline(floor, color="k", ls="--", lw=1, label=f"floor {floor:.2f}")
        ax.axhline(FID_TARGET, color="k", ls=":", lw=0.8, label=f"LeNet-FID {FID_TARGET:g}")
        ax.set(title=name, xlabel="epoch", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    axes[0][0].set_ylabel("LeNet-FID vs training images (log)")
    fig.suptitle("LeNet-FID per epoch over training seeds", y=1.03)
    return save_figure(fig, path)


def gan_dcgan_section(root: Path, figs: Path) -> list[str]:
    """Beyond the paper: the DCGAN sized to the paper's GAN's wall time, the three models over their
    training seeds, and each one's last grid side by side."""
    L = ["### Beyond the paper: a DCGAN in the paper's GAN's time (`experiment=gan_mnist_dcgan`)", ""]
    runs = {n: root / stage / MAIN for n, stage in MODELS.items()}
    results = {n: res for n, d in runs.items() if (res := completed(d))}
    if "dcgan" not in results:
        return L + ["Not run (or not finished): `make reproduce ARGS='reproduce.stages=[gan_dcgan]'`.", ""]
    L += [
        "The same data, batches and manual-optimization step; convolutional networks (model=dcgan) trained "
        "for fewer epochs so a run takes no longer than the paper's 200-epoch MLP GAN. Each run's best epoch "
        "is chosen by its LeNet-FID against training images; its test LeNet-FID is the mean over sample "
        "draws of that checkpoint against the test images. Mean ± std over the training seeds that finished; "
        "wall time is the sum of the epochs' (training and evaluation, callbacks.epoch_time), so it holds "
        "for a resumed run too.",
        "",
        *seeds_table(root),
    ]
    floor = results["dcgan"]["metrics"].get("fid_floor")
    per_seed_curves = {
        n: {s: fid_curve(d, r["metrics"]) for s, (d, r) in seed_runs(root, stage).items()}
        for n, stage in MODELS.items()
    }
    per_seed_curves = {n: c for n, c in per_seed_curves.items() if c}
    if any(len(c) > 1 for c in per_seed_curves.values()):
        name = plot_seed_curves(per_seed_curves, floor, figs / "gan_seed_curves.png")
        L += ["", f"![LeNet-FID per epoch of each training seed, by model]({FIG_DIR}/{name.name})"]
    curves = {n: fid_curve(runs[n], res["metrics"]) for n, res in results.items()}
    name = plot_fid(curves, floor, figs / "gan_dcgan_fid_curve.png", "LeNet-FID per epoch: MLP GANs and the DCGAN")
    L += ["", f"![LeNet-FID per epoch, MLP GANs and the DCGAN (first seed)]({FIG_DIR}/{name.name})", ""]
    hists = {n: h for n, res in results.items() if (h := res["metrics"].get("test/class_hist"))}
    if hists:
        name = plot_class_hist(hists, figs / "gan_class_hist.png")
        L += [f"![class histogram of each model's test samples (first seed)]({FIG_DIR}/{name.name})", ""]
    # each finished model's last grid side by side: the same 64 latent vectors (model.fixed_seed, latent 128)
    cells = []
    for n, cv in curves.items():
        if cv:
            last, d = max(cv), runs[n]
            f = copy_png(d / "samples" / f"epoch_{last:04d}.png", figs / f"{d.parent.name}_epoch_{last:03d}.png")
            cells += [(f"{n}, after epoch {last}", f)] if f else []
    return L + picture_row(cells)


# ------------------------------------------------------------------------------- differences
def modern_gan_note(root: Path, pap: dict[int, dict[str, Any]]) -> str:
    """What the modern options (beyond the paper) reach after the same steps as the paper's curve `pap`,
    when they were run."""
    r = completed(root / "gan_modern" / MAIN)
    if not r:
        return ""
    mod = fid_curve(root / "gan_modern" / MAIN, r["metrics"])
    e = max(set(mod) & set(pap), default=None)
    if e is None:
        return ""
    return (
        f" With the modern training (`experiment=gan_mnist_modern`, beyond the "
        f"paper) the same {e} epochs end at {mod[e]['fid']:.1f} (paper's model {pap[e]['fid']:.1f}); see the "
        "comparison above."
    )


def differences(ctx: ReportContext) -> list[str]:
    """Where the GAN's numbers differ from the paper's (the paper shows grids only)."""
    D = []
    g = completed(ctx.root / "gan" / MAIN)
    if g:
        curve = fid_curve(ctx.root / "gan" / MAIN, g["metrics"])
        fid, floor = curve[max(curve)].get("fid") if curve else None, g["metrics"].get("fid_floor")
        if isinstance(fid, (int, float)) and isinstance(floor, (int, float)) and fid > 10 * floor:
            D.append(
                f"GAN: the last LeNet-FID ({fid:.1f}) is {fid / floor:.0f}x the real-vs-real floor "
                f"({floor:.2f}) after {max(curve)} epochs: the samples are still far from the data distribution "
                "(the paper shows grids only, no metric; compare the grids and the curve above)."
                + modern_gan_note(ctx.root, curve)
            )
    D.append(
        "GAN quality is measured with a LeNet-5 FID (the paper has none); Inception-FID means little on 28x28 digits."
    )
    return D
