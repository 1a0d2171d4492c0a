"""Read handwritten digits with a trained LeNet-5 checkpoint: the work behind `predict.py`
(the command line and its help are in hybridlearn/digits/cli.py)."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hybridlearn.core.checkpoint import load_module, read_checkpoint
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.io import atomic_output
from hybridlearn.digits.cli import ANNOTATED
from hybridlearn.digits.images import IMAGE_SUFFIXES, cell_bounds, dark_ink, load_grey, preprocess_cell, slice_grid
from hybridlearn.digits.reader import NoDigitError, read_page
from hybridlearn.mnist.data import to_range
from hybridlearn.mnist.lenet import LeNet5


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
        return torch.stack([torch.softmax(m.eval_logits(x), -1) for m in self.members]).mean(0).log()


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
    """One page read: cells in reading order with their grid place, box, digit and confidence."""

    place: list[tuple[int, int]]
    boxes: list[tuple[int, int, int, int]]
    digits: list[int]
    conf: list[float]
    shape: tuple[int, int]


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
        return Reading(place, boxes, digits, conf, grey.shape)
    if invert != "auto":  # the reader detects the polarity; force it by flipping the page
        if (invert == "yes") != dark_ink(grey):
            grey = 1.0 - grey
    page = read_page(grey)
    if grid is not None:
        problem = page.grid_mismatch(*grid)
        if problem:
            raise DataError(f"{problem}; check the page or leave out --grid")
    digits, conf = classify(model, prep, [c.image for c in page.cells], invert=False)
    return Reading([(c.row, c.col) for c in page.cells], [c.box for c in page.cells], digits, conf, grey.shape)


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


def annotate(grey: np.ndarray, reading: Reading, labels: list[int] | None, out: Path, overwrite: bool) -> Path:
    """The page with a box, the digit and its confidence per cell (red: wrong, green: right)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.clip(grey * 255, 0, 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    heights = [b[3] - b[1] for b in reading.boxes] or [20]
    size = max(10, int(np.median(heights) * 0.35))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    width = max(1, size // 8)
    for k, (box, d, p) in enumerate(zip(reading.boxes, reading.digits, reading.conf)):
        if labels is None:
            colour, text = (0, 90, 255), f"{d} {p:.2f}"
        elif labels[k] == d:
            colour, text = (0, 170, 0), f"{d} {p:.2f}"
        else:
            colour, text = (230, 0, 0), f"{d}!={labels[k]} {p:.2f}"
        draw.rectangle(box, outline=colour, width=width)
        draw.text((box[0], max(0, box[1] - size - 2)), text, fill=colour, font=font)
    with atomic_output(out, overwrite=overwrite) as tmp:
        img.save(tmp)
    return out


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
