"""Shared figures: one matplotlib setup (Agg), one atomic save, one learning-curves plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from hybridlearn.core.io import atomic_output  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` to `path` atomically (format from the suffix) and close it."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_curves(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
    path: str | Path,
    title: str = "",
    xlabel: str = "epoch",
    markers: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]] | None = None,
    ylabels: Mapping[str, str] | None = None,
) -> Path:
    """One panel per entry of `panels` ({panel title: {series label: runs}}), each run a list of
    per-epoch values; several runs of a series draw their mean and a min-max band. `markers` adds
    points ({panel: {label: [(x, y), ...]}}), e.g. the paper's values."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    n_runs = 1
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for label, runs in series.items():
            n = min(len(r) for r in runs)
            vals = np.array([list(r)[:n] for r in runs], dtype=float)
            ep = np.arange(1, n + 1)
            (line,) = ax.plot(ep, np.nanmean(vals, 0), label=label)
            if len(runs) > 1:
                n_runs = max(n_runs, len(runs))
                ax.fill_between(ep, np.nanmin(vals, 0), np.nanmax(vals, 0), color=line.get_color(), alpha=0.2)
        for label, pts in ((markers or {}).get(panel) or {}).items():
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, marker="x", zorder=5, label=label)
        ax.set(title=panel, xlabel=xlabel, ylabel=(ylabels or {}).get(panel, ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title + (f" (mean of {n_runs} runs, band = min-max)" if n_runs > 1 else ""))
    fig.tight_layout()
    return save_figure(fig, path)
