"""REPORT.md of a reproduce folder: the page around the experiments' sections. Each section, with the
paper's values beside ours, comes from its experiment's `<package>/reproduce.py` (the registry), read
only from the runs' own results.json / study.json / CSV files, with their figures copied next to it.

The report holds no clock time of its own: the same run folders give the same report, so a second
`make reproduce` that skips every finished run rewrites it byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hybridlearn.core.io import write_text_atomic
from hybridlearn.core.report import FIG_DIR, read_json, run_error, wall_time
from hybridlearn.core.reproduce import ReportContext
from hybridlearn.reproduce.registry import Registry, registry


def differences(ctx: ReportContext, reg: Registry) -> list[str]:
    """Plain statements of where our numbers differ from the paper's, from the runs' numbers."""
    D = []
    if ctx.quick:
        D.append(
            "**QUICK mode**: every stage ran with reduced settings (fewer seeds, epochs, folds, frames); "
            "the numbers show that the pipeline works, not the paper's scale. Run `make reproduce` for those."
        )
    for m in reg.modules:
        D += m.differences(ctx)
    return ["## Where we differ from the paper, and why", ""] + [f"- {d}" for d in D] + [""]


def runs_table(
    root: Path,
    reg: Registry,
    expected: dict[str, float],
) -> list[str]:
    L = [
        "## Runs",
        "",
        "Every number above comes from these runs' own files (results.json, study.json, csv/). A resumed run's "
        "wall time is its last attempt's plus the epochs its earlier attempts finished (their CSV logs in resumed/).",
        "",
        "| stage | run | status | wall time | error |",
        "|---|---|---|---|---|",
    ]
    for s in reg.stages:
        total, n = 0.0, 0
        for p in sorted(x for x in (root / s).glob("*") if x.is_dir() and ".stale-" not in x.name):
            r = read_json(p / "results.json") or {}
            d, attempts = wall_time(p, r)
            if d is not None:
                total, n = total + d, n + 1
            took = "" if d is None else f"{d:.0f} s" + (f" ({attempts} attempts)" if attempts > 1 else "")
            L.append(
                f"| {s} | {p.name} | {r.get('status', 'not finished')} | {took} | {run_error(p).replace('|', '/')[:200]} |"
            )
        if n:
            L.append(
                f"| {s} | **stage total** | | **{total / 60:.1f} min** (expected {expected.get(s, 0) / 60:.0f} min) | |"
            )
    return L + [""]


def write_report(
    root: Path,
    quick: bool,
    stages: Sequence[str],
    expected: dict[str, float] | None = None,
    gif_max_mb: float = 2.0,
    video_frames_n: int = 4,
    modules: Sequence[str] | None = None,
) -> Path:
    """Write `<root>/REPORT.md` and `<root>/figures/` from the run folders under root; `modules`: the
    experiments' reproduce modules (`reproduce.modules`; None: the default list)."""
    root = Path(root)
    reg = registry(modules)
    ctx = ReportContext(root, root / FIG_DIR, quick, gif_max_mb, video_frames_n)
    ctx.figs.mkdir(parents=True, exist_ok=True)
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
        "(see each experiment's `reproduce.py`).",
        "",
    ]
    for s, module in reg.stage_modules.items():
        if s in stages or (root / s).is_dir():  # the folder's report: earlier stages' results too
            L += module.section(s, ctx)
    L += differences(ctx, reg)
    L += runs_table(root, reg, expected or {})
    return write_text_atomic(root / "REPORT.md", "\n".join(L))
