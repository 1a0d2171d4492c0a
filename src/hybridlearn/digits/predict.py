"""Read handwritten digits with a trained LeNet-5 checkpoint: the work behind `predict.py`
(the command line and its help are in hybridlearn/digits/cli.py)."""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from hybridlearn.core.checkpoint import load_module, read_checkpoint
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.io import atomic_output
from hybridlearn.digits.cli import ANNOTATED
from hybridlearn.digits.images import IMAGE_SUFFIXES, cell_bounds, dark_ink, load_grey, preprocess_cell, slice_grid
from hybridlearn.digits.reader import NoDigitError, read_page
from hybridlearn.mnist.data import to_range
from hybridlearn.mnist.lenet import LeNet5, mean_of_softmax

LOW_CONFIDENCE = 0.9  # cells read with less confidence are framed in amber on the annotated page
DIGIT_PX = 40  # the annotated page is enlarged until its median digit is at least this tall (pixels)
LOW_COLOUR = (255, 150, 0)  # amber: the frame and label of a low-confidence cell
LABEL_PX = 20  # ... and the gap between its rows at least this tall: one label (13 px font) fits


def list_images(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.endswith(ANNOTATED)
            )
            if not found:
                raise DataError(f"{p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out += found
        else:
            out.append(p)  # a missing file is reported with the unreadable ones
    return out


def load_model(ckpt: str):
    """(model, preprocessing settings) from a LeNet5 checkpoint, loaded with weights_only=True."""
    raw = read_checkpoint(ckpt, "a LeNet-5 checkpoint")
    model = load_module(LeNet5, ckpt, what="a LeNet-5 checkpoint")
    model.eval()
    return model, preparation(raw.get("datamodule_hyper_parameters"), model.net.in_size)


class Ensemble(torch.nn.Module):
    """Several LeNet-5s read as one: the mean of their class probabilities (each with its own
    test-time augmentation), returned as log-probabilities so that softmax gives that mean."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    @torch.no_grad()
    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return mean_of_softmax(torch.stack([m.eval_logits(x) for m in self.members]))


def load_models(ckpts: list[str]):
    """(model, preprocessing settings) of one checkpoint, or of several as an Ensemble; its members
    must prepare cells the same way (the same recipe, e.g. other seeds)."""
    loaded = [load_model(c) for c in ckpts]
    if len(loaded) == 1:
        return loaded[0]
    for c, (_, prep) in zip(ckpts[1:], loaded[1:]):
        if prep != loaded[0][1]:
            raise ConfigError(
                f"--ensemble {c}: its cells are prepared otherwise than {ckpts[0]}'s ({prep} vs {loaded[0][1]}); "
                "ensemble checkpoints of the same recipe (e.g. other seeds)"
            )
    return Ensemble([m for m, _ in loaded]).eval(), loaded[0][1]


def preparation(dm_hparams, in_size: int) -> dict:
    """How a cell is prepared for a model: its datamodule's settings (none: MNIST-like)."""
    dm = dict(dm_hparams or {})
    return {
        "preprocess": dm.get("preprocess", "clean"),  # MNIST checkpoints: MNIST-like centring
        "size": in_size,
        "value_range": dm.get("value_range", "standard"),
        "border": float(dm.get("border", 0.08)),
        "despeckle": float(dm.get("despeckle", 0.0)),
    }


@dataclass
class Reading:
    """One page read: cells in reading order with their grid place, box, digit and confidence;
    `grid`: the rows x cols the page was checked against (--grid), None when not known."""

    place: list[tuple[int, int]]
    boxes: list[tuple[int, int, int, int]]
    digits: list[int]
    conf: list[float]
    shape: tuple[int, int]
    grid: tuple[int, int] | None = None

    def count_line(self) -> str | None:
        """`found N digits, expected RxC = M` when the grid is known, else None."""
        if self.grid is None:
            return None
        r, c = self.grid
        return f"found {len(self.digits)} digits, expected {r}x{c} = {r * c}"


def classify(model, prep: dict, cells: list[np.ndarray], invert: bool) -> tuple[list[int], list[float]]:
    x = torch.stack(
        [preprocess_cell(c, prep["size"], invert, prep["preprocess"], prep["border"], prep["despeckle"]) for c in cells]
    )
    x = to_range(x.unsqueeze(1), prep["value_range"])
    with torch.no_grad():
        prob = torch.softmax(model.eval_logits(x), -1)  # with the checkpoint's test-time augmentation
    conf, digit = prob.max(-1)
    return digit.tolist(), conf.tolist()


def read_digits(
    model, prep: dict, grey: np.ndarray, grid: tuple[int, int] | None, cut: str = "reader", invert: str = "auto"
) -> Reading:
    """Read one page. NoDigitError when there is no digit; DataError when it does not fit `grid`."""
    if cut == "uniform":
        if grid is None:
            raise ConfigError("--cut uniform needs --grid ROWSxCOLS")
        rows, cols = grid
        if grey.shape[0] < rows or grey.shape[1] < cols:
            raise DataError(f"a {grey.shape[1]}x{grey.shape[0]} image cannot hold a {rows}x{cols} grid")
        inv = dark_ink(grey) if invert == "auto" else invert == "yes"
        digits, conf = classify(model, prep, slice_grid(grey, rows, cols), inv)
        boxes = [
            (c0, r0, c1, r1)
            for r0, r1 in cell_bounds(rows, grey.shape[0])
            for c0, c1 in cell_bounds(cols, grey.shape[1])
        ]
        place = [(r, c) for r in range(rows) for c in range(cols)]
        return Reading(place, boxes, digits, conf, grey.shape, grid)
    if invert != "auto":  # the reader detects the polarity; force it by flipping the page
        if (invert == "yes") != dark_ink(grey):
            grey = 1.0 - grey
    page = read_page(grey)
    if grid is not None:
        problem = page.grid_mismatch(*grid)
        if problem:
            raise DataError(f"{problem}; check the page or leave out --grid")
    digits, conf = classify(model, prep, [c.image for c in page.cells], invert=False)
    return Reading([(c.row, c.col) for c in page.cells], [c.box for c in page.cells], digits, conf, grey.shape, grid)


def expected_labels(reading: Reading, expect: str | None, labels_text: str | None) -> list[int] | None:
    """The true digits of a page from --expect (each row reads it; or all digits row-major) or
    from a labels file (all digits row-major; separators ignored)."""
    n = len(reading.digits)
    if labels_text is not None:
        digits = re.sub(r"[^0-9]", "", labels_text)
        if len(digits) != n:
            raise DataError(f"the labels file holds {len(digits)} digits but the page has {n}")
        return [int(d) for d in digits]
    if expect is None:
        return None
    if len(expect) == n and n != 0:
        return [int(d) for d in expect]
    out = []
    for r, c in reading.place:
        if c >= len(expect):
            row_len = sum(1 for p in reading.place if p[0] == r)
            raise DataError(f"row {r} has {row_len} digits but --expect gives {len(expect)}")
        out.append(int(expect[c]))
    lens = {sum(1 for p in reading.place if p[0] == r) for r, _ in reading.place}
    if lens != {len(expect)}:
        raise DataError(f"rows have {sorted(lens)} digits but --expect gives {len(expect)}")
    return out


@dataclass
class Annotation:
    """How the annotated page is laid out: enlarged `scale` times under a header `band` pixels
    high; per cell its box, label text, colour, label spot (on the picture) and whether it was
    read with low confidence."""

    scale: int
    band: int
    font_size: int
    header: str
    boxes: list[tuple[float, float, float, float]]
    texts: list[str]
    colours: list[tuple[int, int, int]]
    spots: list[tuple[float, float, float, float]]
    unsure: list[bool]
    size: tuple[int, int]  # (width, height) of the picture


def annotation_layout(
    reading: Reading, labels: list[int] | None, low: float = LOW_CONFIDENCE, digit_px: int = DIGIT_PX
) -> Annotation:
    """The layout of `annotate` (see there)."""
    scale = annotation_scale(reading, digit_px)
    heights = [b[3] - b[1] for b in reading.boxes] or [20]
    size = max(13, int(np.median(heights) * scale * 0.25))
    font = _font(size)
    found = reading.count_line() or f"found {len(reading.digits)} digits"
    colours = "green right, red wrong" if labels is not None else "blue: read"
    header = _wrap([found, colours, f"amber frame: confidence < {low:.2f}"], font, reading.shape[1] * scale - 8)
    band = int(size * (1.25 * (header.count("\n") + 1) + 0.5))
    wh = (reading.shape[1] * scale, reading.shape[0] * scale + band)
    gap = 2 * max(1, size // 8) + 2  # clear of the low-confidence frame
    lay = Annotation(scale, band, size, header, [], [], [], [], [], wh)
    for k, (b, d, p) in enumerate(zip(reading.boxes, reading.digits, reading.conf)):
        box = (b[0] * scale, b[1] * scale + band, b[2] * scale, b[3] * scale + band)
        if labels is None:
            colour, text = (0, 90, 255), f"{d} {p:.2f}"
        elif labels[k] == d:
            colour, text = (0, 150, 0), f"{d} {p:.2f}"
        else:
            colour, text = (220, 0, 0), f"{d}!={labels[k]} {p:.2f}"
        x0, y0, x1, y1 = font.getbbox(text)
        lay.boxes.append(box)
        lay.texts.append(text)
        lay.colours.append(colour)
        lay.unsure.append(p < low)
        lay.spots.append(_label_spot(box, (x1 + 4, y1 + 4), lay.spots, wh, band, gap))
    return lay


def annotate(
    grey: np.ndarray,
    reading: Reading,
    labels: list[int] | None,
    out: Path,
    overwrite: bool,
    low: float = LOW_CONFIDENCE,
    digit_px: int = DIGIT_PX,
) -> Path:
    """The page with a box, the digit and its confidence per cell (green: right, red `d!=label`:
    wrong, blue without labels), a thick amber frame (and an amber label) around each cell read
    with confidence under `low`, and a header line (digits found, expected when the grid is
    known, the colours). The page is enlarged so the median digit is at least `digit_px` tall
    and a label fits between the rows (a 218 px scan of 10x10 digits comes out 4x); every label
    sits just above its digit's box (below it at the top of the page, or the other end of the box
    when a label is already there), on a translucent white patch over whatever it covers."""
    lay = annotation_layout(reading, labels, low, digit_px)
    page = Image.fromarray(np.clip(grey * 255, 0, 255).astype(np.uint8))
    if lay.scale > 1:
        page = page.resize((page.width * lay.scale, page.height * lay.scale), Image.LANCZOS)
    img = Image.new("RGB", lay.size, (255, 255, 255))
    img.paste(page.convert("RGB"), (0, lay.band))
    draw = ImageDraw.Draw(img)
    font = _font(lay.font_size)
    draw.multiline_text((4, lay.font_size // 4), lay.header, fill=(0, 0, 0), font=font, spacing=lay.font_size // 4)
    width = max(1, lay.font_size // 8)
    for box, colour, unsure in zip(lay.boxes, lay.colours, lay.unsure):
        draw.rectangle(box, outline=colour, width=width)
        if unsure:
            g = 2 * width + 1
            draw.rectangle((box[0] - g, box[1] - g, box[2] + g, box[3] + g), outline=LOW_COLOUR, width=2 * width)
    patches = Image.new("RGBA", img.size, (0, 0, 0, 0))
    pd = ImageDraw.Draw(patches)
    for spot, colour, unsure in zip(lay.spots, lay.colours, lay.unsure):
        pd.rectangle(spot, fill=(255, 225, 170, 220) if unsure else (255, 255, 255, 200), outline=(*colour, 255))
    img = Image.alpha_composite(img.convert("RGBA"), patches).convert("RGB")
    draw = ImageDraw.Draw(img)
    for spot, text, colour in zip(lay.spots, lay.texts, lay.colours):
        draw.text((spot[0] + 2, spot[1] + 1), text, fill=colour, font=font)
    with atomic_output(out, overwrite=overwrite) as tmp:
        img.save(tmp)
    return out


def annotation_scale(reading: Reading, digit_px: int = DIGIT_PX, max_side: int = 4000) -> int:
    """The whole factor the annotated page is enlarged by: the median digit box at least
    `digit_px` tall and the median gap between rows at least one label high (a 13 px font), at
    most 6 and the picture at most `max_side` (1 for a page whose digits are big enough)."""
    heights = [b[3] - b[1] for b in reading.boxes] or [digit_px]
    med = max(1.0, float(np.median(heights)))
    scale = math.ceil(digit_px / med)
    rows: dict[int, list] = {}
    for (r, _), b in zip(reading.place, reading.boxes):
        rows.setdefault(r, []).append(b)
    if len(rows) > 1:  # room for a label between the rows
        tops = [float(np.median([b[1] for b in rows[r]])) for r in sorted(rows)]
        gap = float(np.median(np.diff(tops))) - med
        scale = max(scale, math.ceil(LABEL_PX / max(gap, LABEL_PX / 6)))
    return max(1, min(scale, 6, max_side // max(reading.shape)))


def _wrap(parts: list[str], font, width: float) -> str:
    """`parts` joined by "; ", a new line wherever the next part would pass `width` pixels."""
    lines = [parts[0]]
    for part in parts[1:]:
        if font.getlength(f"{lines[-1]}; {part}") <= width:
            lines[-1] = f"{lines[-1]}; {part}"
        else:
            lines[-1] += ";"
            lines.append(part)
    return "\n".join(lines)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one small bitmap font
        return ImageFont.load_default()


def _label_spot(box, wh, taken, page_wh, top: int, gap: int):
    """Where a label of size `wh` goes: just above `box` (left-, then right-aligned), else just
    below it: the first spot on the page clear of the labels already placed (else above-left)."""
    (w, h), (x0, y0, x1, y1) = wh, box
    spots = [(x0, y0 - gap - h), (x1 - w, y0 - gap - h), (x0, y1 + gap), (x1 - w, y1 + gap)]
    fits = [
        (sx, sy, sx + w, sy + h)
        for sx, sy in spots
        if sx >= 0 and sy >= top and sx + w <= page_wh[0] and sy + h <= page_wh[1]
    ]
    for r in fits:
        if not any(_overlap(r, o) for o in taken):
            return r
    return fits[0] if fits else (max(0, x0), max(top, y0 - h), max(0, x0) + w, max(top, y0 - h) + h)


def _overlap(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def read_labels_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text()
    except OSError as e:
        raise DataError(f"cannot read the labels file {path} ({e.strerror or e})") from None


def annotation_paths(images: list[Path], a: argparse.Namespace) -> dict[Path, Path]:
    """Where each page's annotated picture goes; ConfigError, before any reading, for one that exists."""
    outs = {}
    if a.no_annotate:
        return outs
    for img in images:
        out = (Path(a.out_dir) if a.out_dir else img.parent) / f"{img.stem}{ANNOTATED}"
        if out.exists() and not a.overwrite:
            raise ConfigError(f"{out} already exists; pass --overwrite to replace it or --out-dir to write elsewhere")
        outs[img] = out
    return outs


def print_reading(img: Path, reading: Reading, grid: tuple[int, int] | None) -> None:
    """One line per digit (an image of one digit: `<image>: <digit> ...`), then the page as a grid."""
    if len(reading.digits) == 1 and grid is None:
        print(f"{img}: {reading.digits[0]} (confidence {reading.conf[0]:.3f})")
    else:
        for (r, c), d, conf in zip(reading.place, reading.digits, reading.conf):
            print(f"{img} [{r},{c}]: {d} (confidence {conf:.3f})")
    if len(reading.digits) > 1:
        print(f"{img} grid:")
        rows: dict[int, list[str]] = {}
        for (r, _), d in zip(reading.place, reading.digits):
            rows.setdefault(r, []).append(str(d))
        for r in sorted(rows):
            print("  " + " ".join(rows[r]))


def run(a: argparse.Namespace) -> int:
    """Read every page of `a.images` with `a.checkpoint` (arguments checked by digits/cli.py, whose main
    turns our errors into one line); exit status."""
    failed: list[str] = []
    labels_text = read_labels_file(a.labels)
    model, prep = load_models([a.checkpoint, *(a.ensemble or [])])
    if a.preprocess != "auto":
        prep["preprocess"] = a.preprocess
    images = list_images(a.images)
    outs = annotation_paths(images, a)
    total = correct = 0
    for img in images:
        try:
            grey = load_grey(img, max_side=a.max_side)
        except DataError as e:
            failed.append(f"{img}: unreadable ({e})")
            continue
        try:
            reading = read_digits(model, prep, grey, a.grid, a.cut, a.invert)
            labels = expected_labels(reading, a.expect, labels_text)
        except NoDigitError as e:
            print(f"{img}: {e}")
            continue
        except DataError as e:
            failed.append(f"{img}: {e}")
            continue
        print_reading(img, reading, a.grid)
        if reading.grid is not None:
            print(f"{img}: {reading.count_line()}")
        if labels is not None:
            ok = sum(int(d == t) for d, t in zip(reading.digits, labels))
            total, correct = total + len(labels), correct + ok
            print(f"{img} accuracy: {ok / len(labels):.3f} ({ok}/{len(labels)})")
        if img in outs:
            print(f"{img}: annotated page {annotate(grey, reading, labels, outs[img], a.overwrite)}", file=sys.stderr)
    if total and len(images) > 1:
        print(f"accuracy over all pages: {correct / total:.3f} ({correct}/{total})")
    return report_failures(failed, len(images))


def report_failures(failed: list[str], n_images: int) -> int:
    """The pages not read, on stderr; the exit status: 2 when none was read, 1 when some, else 0."""
    if failed and len(failed) == n_images:  # nothing read at all
        for line in failed:
            print(f"error: {line}", file=sys.stderr)
        return 2
    if failed:
        print(f"not read ({len(failed)} of {n_images} images):", file=sys.stderr)
        for line in failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0
