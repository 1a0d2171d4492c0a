"""results.json per run, and one summary table per multirun."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hybridlearn.core.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
RESULTS = "results.json"


def to_number(v: Any) -> Any:
    """Tensors and numpy scalars -> plain floats/ints; NaN/inf kept as strings for valid JSON."""
    if hasattr(v, "item") and callable(v.item):
        try:
            v = v.item()
        except (ValueError, RuntimeError):
            return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def write_results(run_dir: Path, **fields: Any) -> Path:
    fields["metrics"] = {k: to_number(v) for k, v in sorted((fields.get("metrics") or {}).items())}
    return write_json_atomic(Path(run_dir) / RESULTS, fields)


def _cell(v: Any, digits: int) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v).replace("|", "\\|").replace("\n", " ") if v is not None else ""


def write_table(
    rows: list[dict[str, Any]], stem: str | Path, title: str = "", columns: list[str] | None = None, digits: int = 6
) -> tuple[Path, Path]:
    """The one table writer: `<stem>.csv` and `<stem>.md` (optional `# title`), atomically; the
    columns are `columns` or the keys of all rows in first-seen order."""
    stem = Path(stem)
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    csv_path = write_text_atomic(stem.with_suffix(".csv"), buf.getvalue())
    md = ([f"# {title}", ""] if title else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_cell(r.get(c, ""), digits) for c in cols) + " |" for r in rows]
    md_path = write_text_atomic(stem.with_suffix(".md"), "\n".join(md) + "\n")
    return csv_path, md_path


def summarize(sweep_dir: Path) -> tuple[list[dict[str, Any]], Path, Path]:
    """Collect every job's results.json under `sweep_dir` into summary.csv and summary.md."""
    rows = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        if not (job_dir / ".hydra").exists():
            continue
        f = job_dir / RESULTS
        if f.exists():
            r = json.loads(f.read_text())
            row = {"job": job_dir.name, "status": r.get("status", "?"), "overrides": " ".join(r.get("overrides", []))}
            row.update({k: v for k, v in r.get("metrics", {}).items() if not isinstance(v, (dict, list))})
            if r.get("error"):
                row["error"] = r["error"]
        else:  # killed before it could write anything
            row = {"job": job_dir.name, "status": "no result", "overrides": ""}
        rows.append(row)
    cols = ["job", "status", "overrides"] + sorted(
        {k for r in rows for k in r} - {"job", "status", "overrides", "error"}
    )
    if any("error" in r for r in rows):
        cols.append("error")
    csv_path, md_path = write_table(rows, sweep_dir / "summary", columns=cols, digits=4)
    return rows, csv_path, md_path


class MultirunSummary(Callback):
    """Hydra callback: after a multirun, write the summary table; exit 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():
            return
        rows, csv_path, md_path = summarize(sweep_dir)
        failed = [r["job"] for r in rows if r["status"] != "completed"]
        print(f"Multirun summary ({len(rows)} jobs, {len(failed)} failed): {md_path}")
        print(md_path.read_text())
        if failed:
            print(f"error: job(s) {', '.join(failed)} failed; see their results.json in {sweep_dir}", file=sys.stderr)
            sys.exit(1)
