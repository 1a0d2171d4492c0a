"""results.json per run, and the one Markdown/CSV table writer."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

from hybridlearn.core.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
RESULTS = "results.json"
# A run's sub-runs, each a fit with a results.json of its own: <run>/fold_<k>/ (cross-validation,
# core.cv and the studies) and <run>/seed_<s>/ (repeat.seeds, core.repeat).
FOLD, SEED = "fold_", "seed_"
RESUMED = "resumed"  # <run>/resumed/metrics_<n>.csv: the CSV logs of a resumed run's earlier attempts


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


def keep_earlier_log(run_dir: Path, metrics: Path) -> None:
    """Before a Trainer logs into a run resumed in place: Lightning's CSVLogger starts `metrics` afresh
    (it deletes the old file), so the earlier attempt's log moves to <run>/resumed/metrics_<n>.csv,
    where the report's readers (core.report.csv_rows) find every epoch."""
    if metrics.is_file():
        kept = Path(run_dir) / RESUMED
        kept.mkdir(exist_ok=True)
        os.replace(metrics, kept / f"metrics_{len(list(kept.glob('metrics_*.csv'))):03d}.csv")


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
