"""Digit manifests: the YAML list of scanned sheets, each a grid of labelled cells.

A *manifest* lists the sheets; each entry gives the image file, its grid (`rows` x `cols`
equal cells), where the labels come from and whether the ink must be inverted:

    sheets:
      - file: jpossaz.png        # relative to the manifest's folder
        rows: 10
        cols: 10
        labels: columns          # columns: cell (r, c) is digit c | rows: digit r
        invert: false            # | csv (+ labels_file) | a list / string of rows*cols digits
        writer: jpossaz          # optional: group for leave-one-writer-out (default: file stem)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybridlearn.core.download import ensure_files
from hybridlearn.core.errors import DataError

# The authors' sheets (github scardenol/ai_2023, "2. Hybrid supervised/CNN/ourMNIST").
DIGITS_URL = "https://raw.githubusercontent.com/scardenol/ai_2023/main/2.%20Hybrid%20supervised/CNN/ourMNIST/"
DIGITS_FILES = {
    "jpossaz.png": "3fa6f61c60b1730e19c2e8f44fe99626",
    "jpossaz2.png": "2357849c04eb746ea3a96466b0584527",
    "JuanRengifo.png": "0c2dfb2c8796ed37907e7bc01dfe6a31",
    "cossio.png": "02d662125573c63da71a257ce3a6af55",
    "cossio.csv": "748605740317977109e86452543dcd74",
}
# The layout of those sheets (same as $DATA_DIR/digits/sheets.yaml). jpossaz.png and
# jpossaz2.png are drawn by the same hand (same tablet strokes, same open 4 and looped 9),
# so they form one writer group; cossio.png is a collage of many people's strips collected by
# one author and is kept as one group. See docs/digits.md.
BUILTIN_SHEETS: list[dict[str, Any]] = [
    {"file": "jpossaz.png", "rows": 10, "cols": 10, "labels": "columns", "invert": False, "writer": "jpossaz"},
    {"file": "jpossaz2.png", "rows": 10, "cols": 10, "labels": "columns", "invert": False, "writer": "jpossaz"},
    {"file": "JuanRengifo.png", "rows": 10, "cols": 10, "labels": "rows", "invert": True, "writer": "JuanRengifo"},
    {
        "file": "cossio.png",
        "rows": 31,
        "cols": 10,
        "labels": "csv",
        "labels_file": "cossio.csv",
        "invert": True,
        "writer": "cossio",
    },
]
LAYOUTS = ("grid", "auto")


@dataclass
class Sheet:
    file: Path
    rows: int
    cols: int
    labels: list[int]
    invert: bool | str
    writer: str
    name: str = ""
    md5: str | None = None
    extra: dict = field(default_factory=dict)
    layout: str = "grid"  # grid: equal cells | auto: cut by the sheet reader (rows/cols/labels may wait for it)


def labels_for(entry: Mapping[str, Any], name: str, rows: int, cols: int, folder: Path) -> list[int]:
    spec = entry.get("labels")
    n = rows * cols
    if spec == "columns":
        if cols > 10:
            raise DataError(f"sheet {name}: labels=columns needs at most 10 columns (got cols={cols})")
        return [c for _ in range(rows) for c in range(cols)]
    if spec == "rows":
        if rows > 10:
            raise DataError(f"sheet {name}: labels=rows needs at most 10 rows (got rows={rows})")
        return [r for r in range(rows) for _ in range(cols)]
    if spec == "csv":
        lf = entry.get("labels_file")
        if not lf:
            raise DataError(f"sheet {name}: labels=csv needs labels_file (a comma separated file of {n} digits)")
        path = folder / str(lf)
        try:
            text = path.read_text()
        except OSError as e:
            raise DataError(f"sheet {name}: cannot read labels_file {path} ({e.strerror or e})") from None
        tokens = [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]
    elif isinstance(spec, (list, tuple)) or (hasattr(spec, "__iter__") and not isinstance(spec, (str, bytes, Mapping))):
        tokens = [str(t).strip() for t in spec]
    elif isinstance(spec, str) and spec.replace(",", "").replace(" ", "").isdigit():
        tokens = list(spec.replace(",", "").replace(" ", ""))
    else:
        raise DataError(
            f"sheet {name}: labels must be columns, rows, csv (with labels_file) or a list of {n} digits (got {spec!r})"
        )
    bad = [t for t in tokens if not (len(t) == 1 and t.isdigit())]
    if bad:
        raise DataError(f"sheet {name}: labels must be digits 0-9; found {bad[0]!r} ({len(bad)} non-digit label(s))")
    if len(tokens) != n:
        raise DataError(
            f"sheet {name}: {len(tokens)} labels for a {rows}x{cols} grid ({n} cells); fix the labels or the grid"
        )
    return [int(t) for t in tokens]


def parse_sheets(entries: Any, folder: Path, source: str, md5s: Mapping[str, str] | None = None) -> list[Sheet]:
    """Validate manifest entries (files relative to `folder`) into Sheets; DataError names the sheet."""
    if not isinstance(entries, (list, tuple)) and not (
        hasattr(entries, "__len__") and not isinstance(entries, (str, Mapping))
    ):
        raise DataError(f"{source}: expected a list of sheets under 'sheets:'")
    if len(entries) == 0:
        raise DataError(f"{source}: 'sheets' is empty; add at least one sheet")
    sheets = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not entry.get("file"):
            raise DataError(f"{source}: sheet #{i + 1} has no 'file'")
        name = str(entry["file"])
        layout = entry.get("layout", "grid")
        if layout not in LAYOUTS:
            raise DataError(
                f"sheet {name}: layout must be grid (equal cells) or auto (found by the reader); got {layout!r}"
            )
        rows, cols = entry.get("rows"), entry.get("cols")
        for key, v in (("rows", rows), ("cols", cols)):
            if layout == "auto" and v is None:
                continue  # counted on the page
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise DataError(f"sheet {name}: {key} must be a positive integer (got {v!r})")
        invert = entry.get("invert", "auto")
        if invert not in (True, False, "auto"):
            raise DataError(f"sheet {name}: invert must be true, false or auto (got {invert!r})")
        path = folder / name
        # An auto sheet without rows/cols gets its labels once the reader has counted the digits.
        labels = labels_for(entry, name, rows, cols, folder) if rows and cols else []
        writer = str(entry.get("writer") or Path(name).stem)
        sheets.append(
            Sheet(
                path,
                rows or 0,
                cols or 0,
                labels,
                invert,
                writer,
                name,
                (md5s or {}).get(name),
                extra={"entry": dict(entry), "folder": folder},
                layout=layout,
            )
        )
    return sheets


def read_manifest(path: str | Path) -> list[Sheet]:
    path = Path(path).expanduser()
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(
            f"digit manifest {path} not found; give the path of a sheets YAML (see docs/digits.md)"
        ) from None
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"digit manifest {path}: cannot parse ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(doc, Mapping) or "sheets" not in doc:
        raise DataError(f"digit manifest {path}: expected a mapping with a 'sheets:' list")
    return parse_sheets(doc["sheets"], path.parent, str(path))


def builtin_sheets(data_dir: str | Path, timeout: float | None = None) -> list[Sheet]:
    """The authors' four sheets in `<data_dir>/digits/`, md5-checked, downloaded when missing."""
    folder = Path(data_dir).expanduser() / "digits"
    urls = {name: [DIGITS_URL + name] for name in DIGITS_FILES}
    ensure_files(folder, DIGITS_FILES, urls, what="the paper's digit sheets", timeout=timeout)
    return parse_sheets(BUILTIN_SHEETS, folder, "builtin digit sheets", DIGITS_FILES)


def resolve_sheets(
    data_dir: str | Path,
    manifest: str | None = "builtin",
    extra_manifests: Sequence[str] = (),
    timeout: float | None = None,
) -> list[Sheet]:
    """`manifest: builtin` -> the authors' sheets; a path -> that YAML; plus every extra manifest."""
    if manifest in (None, "builtin"):
        sheets = builtin_sheets(data_dir, timeout)
    else:
        sheets = read_manifest(manifest)
    for m in extra_manifests or ():
        sheets += read_manifest(m)
    names = [str(s.file) for s in sheets]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataError(f"sheet {sorted(dup)[0]} is listed twice in the digit manifests; list each sheet once")
    return sheets
