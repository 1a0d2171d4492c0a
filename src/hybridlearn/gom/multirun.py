"""Tables and best / median / worst curves of a Hydra multirun of experiment=gom_mlp or
gom_autoencoder (one Lightning fit per job; each job's results.json holds its per-epoch history):

    python -m hybridlearn.gom.study lightning_logs/gom_mlp/multiruns/<time>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.results import write_table
from hybridlearn.gom.figures import CURVES, plot_net_curves, rank_indices


def completed_jobs(sweep: Path) -> list[dict[str, Any]]:
    """The jobs' results.json records, in job order (0, 1, ..., 10), that completed with a history."""
    jobs = []
    for f in sorted(sweep.glob("*/results.json"), key=lambda p: (len(p.parent.name), p.parent.name)):
        r = json.loads(f.read_text())
        if r.get("status") == "completed" and "history" in r.get("metrics", {}):
            jobs.append(r)
    if not jobs:
        raise ConfigError(f"{sweep}: no completed gom_mlp / gom_autoencoder jobs with a history in */results.json")
    return jobs


def job_tag(job: dict[str, Any]) -> dict[str, str]:
    """The job's swept model keys: `model.width=3` -> {"width": "3"}."""
    return {
        o.split("=", 1)[0].split(".")[-1]: o.split("=", 1)[1]
        for o in job.get("overrides", [])
        if o.startswith("model.")
    }


def job_row(job: dict[str, Any], kind: str) -> dict[str, Any]:
    """The job's tag and its numbers, as a row of the grid table."""
    m = job["metrics"]
    row: dict[str, Any] = job_tag(job)
    row.update(
        best_val_energy=m.get("best_val_energy"),
        best_epoch=m.get("best_epoch"),
        epochs_run=m.get("epochs_run"),
        final_train_energy=m.get("final_train_energy"),
        test_energy=m.get("test/energy"),
    )
    if kind == "mlp":
        row.update(test_km=m.get("test/km"), test_r2=m.get("test/r2"))
    return row


def report_multirun(sweep_dir: str | Path) -> Path:
    """grid_<kind>.md/.csv (jobs sorted by best validation energy) and <kind>_<rank>_curves.png in the sweep folder."""
    sweep = Path(sweep_dir)
    jobs = completed_jobs(sweep)
    kind = "autoencoder" if jobs[0].get("task_name", "").startswith("gom_autoencoder") else "mlp"
    rows = [job_row(j, kind) for j in jobs]
    best_val = np.array([r["best_val_energy"] for r in rows], dtype=float)
    write_table(
        [rows[i] for i in np.argsort(best_val, kind="stable")],
        sweep / f"grid_{kind}",
        f"GOM {kind} multirun ({len(jobs)} jobs, sorted by best validation energy)",
    )
    for rank, i in rank_indices(best_val).items():
        tag = ", ".join(f"{k}={v}" for k, v in job_tag(jobs[i]).items())
        history = {c: np.asarray(jobs[i]["metrics"]["history"][c], dtype=float) for c in CURVES}
        title = f"{kind} {rank}: {tag}; best val energy {best_val[i]:.4g}"
        plot_net_curves(history, int(rows[i]["epochs_run"]), title, sweep / f"{kind}_{rank}_curves.png")
    return sweep / f"grid_{kind}.md"
