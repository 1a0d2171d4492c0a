"""Sheets cut into digits: every cell of every sheet, preprocessed, with its label and writer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hybridlearn.core.errors import DataError
from hybridlearn.digits.images import dark_ink, load_grey, preprocess_cell, slice_grid
from hybridlearn.digits.manifest import Sheet, labels_for
from hybridlearn.digits.reader import read_page


@dataclass
class DigitSet:
    """All sliced digits: images float [N, 1, S, S] in [0, 1] (light ink on black) and metadata."""

    x: torch.Tensor
    y: torch.Tensor
    sheet: torch.Tensor  # index into `sheets`
    cell: torch.Tensor  # [N, 2] (row, col)
    writer: list[str]
    sheets: list[Sheet]

    @property
    def writers(self) -> list[str]:
        return list(dict.fromkeys(self.writer))


def cut_sheet(sheet: Sheet) -> tuple[list[np.ndarray], bool, Sheet]:
    """A sheet's cells in row-major order, whether they need inverting, and the sheet with its
    grid and labels filled in (layout auto: counted by the sheet reader and checked)."""
    if not sheet.file.is_file():
        raise DataError(f"sheet {sheet.name}: image file {sheet.file} not found; fix 'file' in the manifest")
    grey = load_grey(sheet.file, what=f"sheet {sheet.name}")
    if sheet.layout == "grid":
        if grey.shape[0] < sheet.rows or grey.shape[1] < sheet.cols:
            raise DataError(
                f"sheet {sheet.name}: a {grey.shape[1]}x{grey.shape[0]} image cannot hold a "
                f"{sheet.rows}x{sheet.cols} grid"
            )
        invert = dark_ink(grey) if sheet.invert == "auto" else bool(sheet.invert)
        return slice_grid(grey, sheet.rows, sheet.cols), invert, sheet
    if sheet.invert != "auto" and bool(sheet.invert) != dark_ink(grey):
        grey = 1.0 - grey  # the reader detects the polarity by itself; a forced one flips the page
    page = read_page(grey)  # NoDigitError is a DataError: one line naming the sheet below
    rows, cols = sheet.rows, sheet.cols
    if not rows:
        counts = [len(r) for r in page.rows]
        rows, cols = len(counts), max(counts)
    problem = page.grid_mismatch(rows, cols)
    if problem:
        raise DataError(
            f"sheet {sheet.name} (layout auto): the reader {problem}; check the page with "
            f"`python predict.py CKPT {sheet.file}` or give it a hand grid (layout: grid)"
        )
    labels = sheet.labels or labels_for(sheet.extra["entry"], sheet.name, rows, cols, sheet.extra["folder"])
    resolved = Sheet(
        sheet.file, rows, cols, labels, sheet.invert, sheet.writer, sheet.name, sheet.md5, sheet.extra, sheet.layout
    )
    return [c.image for c in page.cells], False, resolved  # reader cells: light ink on black


def _load_sheet(
    sheet: Sheet, size: int, preprocess: str, border: float, despeckle: float
) -> tuple[torch.Tensor, bool, Sheet]:
    cells, invert, sheet = cut_sheet(sheet)
    return torch.stack([preprocess_cell(c, size, invert, preprocess, border, despeckle) for c in cells]), invert, sheet


def build_digits(
    sheets: Sequence[Sheet],
    size: int = 32,
    preprocess: str = "paper",
    border: float = 0.08,
    writer_groups: Mapping[str, str] | None = None,
    despeckle: float = 0.0,
) -> DigitSet:
    xs, ys, sh, cells, writers = [], [], [], [], []
    groups = dict(writer_groups or {})
    resolved = []
    for i, s in enumerate(sheets):
        x, _, s = _load_sheet(s, size, preprocess, border, despeckle)
        resolved.append(s)
        xs.append(x)
        ys.extend(s.labels)
        sh.extend([i] * len(s.labels))
        cells.extend([(r, c) for r in range(s.rows) for c in range(s.cols)])
        writers.extend([groups.get(s.name, s.writer)] * len(s.labels))
    return DigitSet(
        torch.cat(xs).unsqueeze(1),
        torch.tensor(ys, dtype=torch.long),
        torch.tensor(sh),
        torch.tensor(cells, dtype=torch.long),
        writers,
        resolved,
    )
