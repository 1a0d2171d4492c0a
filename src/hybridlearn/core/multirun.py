"""After a multirun (a Hydra callback): one row per job (summary.md / summary.csv), and the seed summary
of any sweep over seeds: after `train.py -m experiment=... seed=0,1,2 [other=a,b]`, the jobs
grouped by their overrides other than `seed`, every numeric metric as n, mean ± std and a 95 %
Student-t interval (seeds.md / seeds.csv), and one plot of each metric against the other swept value
when there is one (seeds.png). Failed jobs are counted and named, never averaged in."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hybridlearn.core.io import atomic_output, write_text_atomic
from hybridlearn.core.results import RESULTS, write_table
from hybridlearn.core.stats import spread_text, t_interval

# metrics a user reads first (test, then val, then the rest), and never statistics of bookkeeping
_ORDER = ("test/", "cv/", "val/", "train/")
_SKIP = ("epoch", "step", "best_score", "duration_s", "epochs_trained")


def is_seed(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0] == "seed"


def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """What a job is, apart from its seed (hydra.* placement overrides are not part of it)."""
    return tuple(sorted(o for o in overrides if not is_seed(o) and not o.startswith("hydra.")))


def metric_names(records: list[dict[str, Any]]) -> list[str]:
    names = {
        k
        for r in records
        for k, v in (r.get("metrics") or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _SKIP
    }
    # the last step's value is noise, and Lightning logs a metric again as <name>_epoch
    names = {
        n for n in names if not n.endswith("_step") and not (n.endswith("_epoch") and n[: -len("_epoch")] in names)
    }
    rank = {p: i for i, p in enumerate(_ORDER)}
    return sorted(names, key=lambda k: (next((rank[p] for p in _ORDER if k.startswith(p)), len(_ORDER)), k))


def swept_keys(groups: list[tuple[str, ...]]) -> list[str]:
    """The keys whose value differs between groups (the sweep's other axes)."""
    maps = [dict(o.partition("=")[::2] for o in g) for g in groups]
    keys = set().union(*maps) if maps else set()
    return sorted(k for k in keys if len({m.get(k) for m in maps}) > 1)


def summarize_seeds(sweep_dir: Path, jobs: list[dict[str, Any]]) -> list[Path]:
    """`jobs`: each job's results.json record with its folder name under "job". Writes seeds.md,
    seeds.csv and (one other swept key) seeds.png into `sweep_dir` when the sweep has seeds; returns
    the files written."""
    if not any(is_seed(o) for j in jobs for o in j.get("overrides", [])):
        return []
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for j in jobs:
        groups.setdefault(group_key(j.get("overrides", [])), []).append(j)
    names = metric_names([j for j in jobs if j.get("status") == "completed"])
    axes = swept_keys(list(groups))
    common = sorted({o for g in groups for o in g if o.partition("=")[0] not in axes})
    rows, md_rows = [], []
    for key, members in groups.items():
        done = [j for j in members if j.get("status") == "completed"]
        failed = [j["job"] for j in members if j.get("status") != "completed"]
        label = " ".join(o for o in key if o.partition("=")[0] in axes) or "(all jobs)"
        row: dict[str, Any] = {"runs": label, "n": len(done), "failed": len(failed)}
        md = dict(row, failed=f"{len(failed)} ({', '.join(failed)})" if failed else "0")
        md["seeds"] = ", ".join(str(j.get("seed")) for j in done)
        for name in names:
            vals = [
                float(j["metrics"][name]) for j in done if isinstance((j.get("metrics") or {}).get(name), (int, float))
            ]
            if not vals:
                continue
            mean, std, lo, hi = t_interval(vals)
            row.update({f"{name} mean": mean, f"{name} std": std, f"{name} ci95_low": lo, f"{name} ci95_high": hi})
            md[name] = spread_text(mean, std, lo, hi)
        rows.append(row)
        md_rows.append(md)
    csv_path, _ = write_table(rows, sweep_dir / "seeds")
    cols = ["runs", "n", "failed", "seeds", *[n for n in names if any(n in r for r in md_rows)]]
    lines = [
        "# Seed summary",
        "",
        "Jobs grouped by their overrides other than `seed`: mean ± sample std over the completed seeds "
        "[95 % Student-t interval of the mean]. Failed jobs are counted and named, never averaged in.",
        "",
        f"Every job: `{' '.join(common)}`" if common else "",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in md_rows),
    ]
    md_path = write_text_atomic(sweep_dir / "seeds.md", "\n".join(lines) + "\n")
    written = [md_path, csv_path]
    if len(axes) == 1 and names:
        written.append(plot_seeds(rows, axes[0], names[:4], sweep_dir / "seeds.png"))
    return written


def _x_value(runs: str, key: str) -> str:
    return next((o.split("=", 1)[1] for o in runs.split(" ") if o.split("=", 1)[0] == key), "")


def plot_seeds(rows: list[dict[str, Any]], key: str, names: list[str], path: Path) -> Path:
    """Each metric's mean against the swept value, error bars the 95 % interval (std with 2 seeds
    or fewer would be all there is: then the std)."""
    import matplotlib  # here, not at import: Hydra loads this callback at every command's start

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [_x_value(r["runs"], key) for r in rows]
    try:
        pos, ticks = [float(x) for x in xs], None
    except ValueError:  # choices, not numbers: evenly spaced, labelled
        pos, ticks = list(range(len(xs))), xs
    order = sorted(range(len(rows)), key=lambda i: pos[i])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        pts = [(pos[i], rows[i]) for i in order if f"{name} mean" in rows[i]]
        if not pts:
            continue
        x = [p for p, _ in pts]
        m = [r[f"{name} mean"] for _, r in pts]
        err = [
            (r[f"{name} mean"] - r[f"{name} ci95_low"]) if not math.isnan(r[f"{name} ci95_low"]) else r[f"{name} std"]
            for _, r in pts
        ]
        ax.errorbar(x, m, yerr=err, marker="o", capsize=4)
        for xi, mi, (_, r) in zip(x, m, pts):
            ax.annotate(f"n={r['n']}", (xi, mi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set(title=name, xlabel=key)
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), ticks)
        ax.grid(alpha=0.3)
    fig.suptitle("mean over seeds, bars: 95 % interval")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def job_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's results.json under `sweep_dir` (in job order), its folder name under "job"; a job
    killed before it could write anything is a record with status "no result"."""
    records = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        if not (job_dir / ".hydra").exists():
            continue
        try:
            r = json.loads((job_dir / RESULTS).read_text())
        except (OSError, ValueError):  # killed before it could write anything
            r = {"status": "no result", "overrides": []}
        records.append({**r, "job": job_dir.name})
    return records


def summarize(sweep_dir: Path, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Path, Path]:
    """One row per job (status, overrides, numeric metrics, the error) into summary.csv and summary.md."""
    rows = []
    for r in records:
        row = {"job": r["job"], "status": r.get("status", "?"), "overrides": " ".join(r.get("overrides", []))}
        row.update({k: v for k, v in (r.get("metrics") or {}).items() if not isinstance(v, (dict, list))})
        if r.get("error"):
            row["error"] = r["error"]
        rows.append(row)
    cols = ["job", "status", "overrides"] + sorted(
        {k for r in rows for k in r} - {"job", "status", "overrides", "error"}
    )
    if any("error" in r for r in rows):
        cols.append("error")
    csv_path, md_path = write_table(rows, sweep_dir / "summary", columns=cols, digits=4)
    return rows, csv_path, md_path


class MultirunSummary(Callback):
    """Hydra callback: after a multirun, the per-job table (summary.md/.csv) and, when seeds were
    swept, the seed summary (core.seeds: seeds.md/.csv/.png); exit 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        records = job_records(sweep_dir)
        rows, csv_path, md_path = summarize(sweep_dir, records)
        failed = [r["job"] for r in rows if r["status"] != "completed"]
        print(f"Multirun summary ({len(rows)} jobs, {len(failed)} failed): {md_path}")
        print(md_path.read_text())
        seeds = summarize_seeds(sweep_dir, records)
        if seeds:
            print(f"Seed summary: {seeds[0]}")
            print(seeds[0].read_text())
        if failed:
            print(f"error: job(s) {', '.join(failed)} failed; see their results.json in {sweep_dir}", file=sys.stderr)
            sys.exit(1)
