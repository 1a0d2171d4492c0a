"""Add a new writer's sheet to a digit manifest without measuring its grid by hand.

    python -m hybridlearn.digits.sheets add-sheet page.png --writer anna --rows-read 0123456789
    python -m hybridlearn.digits.sheets add-sheet page.jpg --writer ben --rows-read 0123456789 \\
        --manifest my_digits/sheets.yaml --rows 10

The sheet reader finds the digits on the page; every row must hold as many digits as --rows-read
has (and --rows rows when given). The entry (`layout: auto`, the grid found, the labels row by row,
the writer) is appended to the manifest (default: sheets.yaml next to the page; created when
missing), checked by loading the sheet back through the manifest, and a contact sheet of the cut
digits with their labels is written (`<page stem>_contact.png` next to the manifest) for a look.
Nothing is written when a check fails; existing files are never replaced (the manifest only grows).
Use the manifest with `data.manifest=<path>` or `data.extra_manifests=[<path>]`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from hybridlearn.core.errors import ConfigError, DataError, one_line_errors
from hybridlearn.core.io import write_text_atomic
from hybridlearn.digits.contact import contact_sheet
from hybridlearn.digits.digitset import build_digits
from hybridlearn.digits.images import load_grey
from hybridlearn.digits.manifest import parse_sheets
from hybridlearn.digits.reader import read_page


def _entry_text(file: str, rows: int, cols: int, rows_read: str, writer: str) -> str:
    labels = " ".join([rows_read] * rows)
    return (
        f"  - file: {yaml.safe_dump(file, default_style=None).splitlines()[0]}\n"
        f"    layout: auto            # cut by the sheet reader (hybridlearn.digits.reader)\n"
        f"    rows: {rows}\n    cols: {cols}\n"
        f'    labels: "{labels}"   # each row reads {rows_read}\n'
        f"    writer: {yaml.safe_dump(writer).splitlines()[0]}\n"
    )


def add_sheet(
    page: str | Path,
    writer: str,
    rows_read: str,
    manifest: str | Path | None = None,
    rows: int | None = None,
    overwrite_contact: bool = False,
) -> tuple[Path, Path, int]:
    """Append a checked `layout: auto` entry for `page`; returns (manifest, contact sheet, digits)."""
    page = Path(page).expanduser().resolve()
    if not rows_read.isdigit():
        raise ConfigError(f"--rows-read must be the digits each row reads, e.g. 0123456789 (got {rows_read!r})")
    if not writer.strip():
        raise ConfigError("--writer must name the writer (used for leave-one-writer-out)")
    manifest = Path(manifest).expanduser().resolve() if manifest else page.parent / "sheets.yaml"
    contact = manifest.parent / f"{page.stem}_contact.png"
    if contact.exists() and not overwrite_contact:
        raise ConfigError(f"{contact} already exists; pass --overwrite to replace it")
    found = read_page(load_grey(page, what=f"page {page}"))
    problem = found.grid_mismatch(rows or len(found.rows), len(rows_read))
    if problem:
        raise DataError(f"{page}: the reader {problem}; every row must read {rows_read}")
    n_rows = len(found.rows)
    try:
        file = os.path.relpath(page, manifest.parent)
    except ValueError:  # another drive (Windows)
        file = str(page)

    old_text, old_entries = "", []
    if manifest.exists():
        old_text = manifest.read_text()
        try:
            doc = yaml.safe_load(old_text) or {}
        except yaml.YAMLError as e:
            raise DataError(f"digit manifest {manifest}: cannot parse ({str(e).splitlines()[0]})") from None
        old_entries = list(doc.get("sheets") or []) if isinstance(doc, dict) else []
        if any(
            Path(manifest.parent, str(e.get("file", ""))).resolve() == page for e in old_entries if isinstance(e, dict)
        ):
            raise DataError(f"{page} is already listed in {manifest}")
    entry = _entry_text(file, n_rows, len(rows_read), rows_read, writer)
    if old_text:
        new_text = old_text + ("" if old_text.endswith("\n") else "\n") + entry
    else:
        new_text = "# Digit sheets (see docs/digits.md)\nsheets:\n" + entry
    doc = yaml.safe_load(new_text)
    entries = doc.get("sheets") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or len(entries) != len(old_entries) + 1 or entries[-1].get("file") != file:
        raise DataError(
            f"{manifest}: cannot append an entry (its 'sheets:' list is not the last thing in the "
            f"file); add this by hand:\n{entry}"
        )
    # Check the entry the way training will read it, before writing anything.
    sheets = parse_sheets([entries[-1]], manifest.parent, str(manifest))
    digits = build_digits(sheets, size=28, preprocess="clean")
    contact_sheet(digits, contact, scale=2, overwrite=overwrite_contact)
    write_text_atomic(manifest, new_text)
    return manifest, contact, len(digits.y)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hybridlearn.digits.sheets",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    sub = p.add_subparsers(dest="command", required=True)
    a_ = sub.add_parser("add-sheet", help="append a page of digits to a manifest (layout: auto)")
    a_.add_argument("page", help="the page image (PNG/JPG)")
    a_.add_argument("--writer", required=True, help="who wrote it (writer group)")
    a_.add_argument("--rows-read", required=True, metavar="DIGITS", help="what every row reads, e.g. 0123456789")
    a_.add_argument("--rows", type=int, help="how many rows the page has (checked)")
    a_.add_argument("--manifest", help="the sheets YAML to append to (default: sheets.yaml next to the page)")
    a_.add_argument("--overwrite", action="store_true", help="replace an existing contact sheet")
    a = p.parse_args(argv)
    manifest, contact, n = add_sheet(a.page, a.writer, a.rows_read, a.manifest, a.rows, a.overwrite)
    print(f"{a.page}: {n} digits added to {manifest} (writer {a.writer}); contact sheet: {contact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
