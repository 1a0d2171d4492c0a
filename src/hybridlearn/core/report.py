"""Helpers every experiment's report section uses (`<package>/reproduce.py`): reading a run
folder's own files (its CSV logs over resumed attempts, its wall time), a machine-free error line,
mean ± std over seeds, and figures copied into the report's `figures/` (small PNGs, GIFs under a
size limit)."""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from PIL import Image

from hybridlearn.core.io import atomic_output, save_gif
from hybridlearn.core.results import RESUMED

FIG_DIR = "figures"


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


def csv_rows(run: Path) -> list[dict[str, str]]:
    """The rows of every attempt's CSV log: a resumed run starts a new metrics.csv, the earlier ones
    are kept in resumed/ (core.results.keep_earlier_log, when a Trainer is built for the resumed run)."""
    return _rows([*sorted((run / RESUMED).glob("metrics_*.csv")), run / "csv" / "metrics.csv"])


def _rows(files: Sequence[Path]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for f in files:
        if f.is_file():
            with open(f, newline="") as fh:
                rows += list(csv.DictReader(fh))
    return rows


def per_epoch(rows: list[dict[str, str]], key: str) -> dict[int, float]:
    """{epoch: value} of a per-epoch metric in a run's CSV rows (a resumed epoch: its last value)."""
    return {int(float(r["epoch"])): float(r[key]) for r in rows if r.get(key) and r.get("epoch")}


def wall_time(run_dir: Path, record: dict[str, Any]) -> tuple[float | None, int]:
    """(seconds, attempts) of a run. results.json's duration_s is its last attempt's alone: a run
    resumed from its checkpoint adds the epochs its earlier attempts finished (their time/epoch_s,
    callbacks.epoch_time, in resumed/) that the last one did not train again. An epoch cut off by a
    kill left no row and is not counted."""
    d = record.get("duration_s")
    d = float(d) if isinstance(d, (int, float)) else None
    earlier = sorted((run_dir / RESUMED).glob("metrics_*.csv"))
    if not earlier or d is None:
        return d, 1 + len(earlier)
    attempts = [per_epoch(_rows([f]), "time/epoch_s") for f in [*earlier, run_dir / "csv" / "metrics.csv"]]
    # the same rows in two files (runs resumed when the reproduce stages copied the log, not moved it)
    last = {e for e, s in attempts[-1].items() if attempts[-2].get(e) != s}
    before = {e: s for a in attempts[:-1] for e, s in a.items() if e not in last}  # a resumed epoch: its last time
    return d + sum(before.values()), len(attempts)


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


def mean_std(vals: Sequence[float | None], fmt: str = ".3f", one: str = " (1 seed)") -> str:
    """ "m ± s" over seeds (None and NaN left out); a single value is followed by `one`."""
    v = [float(x) for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:{fmt}}{one}"
    return f"{statistics.mean(v):{fmt}} ± {statistics.stdev(v):{fmt}}"


def per_seed(vals: Sequence[Any], fmt: str = ".3f") -> str:
    return ", ".join("n/a" if v is None else (f"{v:{fmt}}" if isinstance(v, float) else str(v)) for v in vals)


def interval(ci: Sequence[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


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
