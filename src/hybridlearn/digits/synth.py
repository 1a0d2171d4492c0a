"""Synthetic pages of handwritten digits, rendered from MNIST *test* digits the way real pages
come from a scanner or a phone: margins, plain / dotted / squared / lined paper, jittered positions
and sizes, a slight rotation, a lighting gradient, sensor noise and JPEG compression; for small
scans also specks, pen dots and ruling fragments beside the digits and strokes too faint in places
to survive binarizing."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage


@dataclass
class SynthPage:
    image: Image.Image  # grey ("L") page
    labels: list[int]  # row-major, reading order
    index: list[int]  # the MNIST test index of each digit (same order)
    rows: int
    cols: int
    centres: list[tuple[float, float]]  # (x, y) of each digit on the final page


def render_page(
    digits: np.ndarray,
    labels: np.ndarray,
    index: np.ndarray,
    rows: int = 10,
    cols: int = 10,
    paper: str = "plain",
    rotate: float = 0.0,
    gradient: float = 0.0,
    jpeg: int | None = None,
    seed: int = 0,
    pitch: int = 60,
    margin: int = 70,
    scale: float = 1.0,
    specks: int = 0,
    breaks: float = 0.0,
) -> SynthPage:
    """`digits`: uint8 [N, 28, 28] light ink on black (MNIST); the first rows*cols are drawn.
    `paper="cells"`: ruled cell lines around every digit (a form's table). `scale`: the page is
    drawn at `pitch` and shrunk by this factor before noise and JPEG (a small scan). `specks`:
    that many specks, pen dots and short ruling fragments beside the digits (never touching one).
    `breaks` (0-1): how faint the ink gets along a few stretches of every stroke (a dry pen, a
    light pencil), so binarizing breaks strokes. Both draw from their own random stream: pages
    without them are the same as before they existed."""
    rng = np.random.default_rng(seed)
    n = rows * cols
    h, w = 2 * margin + rows * pitch, 2 * margin + cols * pitch
    ink, centres = _draw_digits(digits[:n], cols, pitch, margin, (h, w), rng)
    marks = np.zeros_like(ink)
    if specks or breaks:
        extra = np.random.default_rng([seed, 1])
        if breaks:
            ink = _broken(ink, breaks, pitch, extra)
        if specks:
            marks = _specks(ink, centres, specks, pitch, extra)
    page = _paper(h, w, pitch, margin, paper, dot=max(2, round(1 / scale))) * (1 - 0.88 * np.maximum(ink, marks))
    img = Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8))
    if rotate:
        img, centres = _rotated(img, rotate, centres)
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BOX)
        centres = [(x * scale, y * scale) for x, y in centres]
    img = _as_photographed(img, gradient, jpeg, rng)
    return SynthPage(img, [int(v) for v in labels[:n]], [int(v) for v in index[:n]], rows, cols, centres)


def _paper(h: int, w: int, pitch: int, margin: int, paper: str, dot: int = 2) -> np.ndarray:
    """The blank page, grey [h, w]: plain, dotted, squared, lined, or ruled around the cells.
    `dot`: the dots' side (pixels), so they stay about a pixel wide on a shrunk page."""
    page = np.full((h, w), 0.93, np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    step = pitch // 2
    if paper == "dotted":
        page[((yy % step) < dot) & ((xx % step) < dot)] = 0.45
    elif paper == "squared":
        page[((yy % step) < 2) | ((xx % step) < 2)] = 0.6
    elif paper == "lined":
        page[(yy % step) < 2] = 0.55
    elif paper == "cells":  # the table's lines, between the cells only
        inside = (yy >= margin - 1) & (yy <= h - margin + 1) & (xx >= margin - 1) & (xx <= w - margin + 1)
        on = (((yy - margin) % pitch) < 3) | (((xx - margin) % pitch) < 3)
        page[inside & on] = 0.35
    return page


def _draw_digits(digits: np.ndarray, cols: int, pitch: int, margin: int, shape: tuple[int, int], rng):
    """The digits' ink [h, w] in [0, 1], each jittered in size and place in its cell, and their centres (x, y)."""
    ink = np.zeros(shape, np.float32)
    centres = []
    for k in range(len(digits)):
        r, c = divmod(k, cols)
        size = int(pitch * rng.uniform(0.8, 1.05))  # the MNIST box (digit ~ 20/28 of it)
        d = Image.fromarray(digits[k]).resize((size, size), Image.BILINEAR)
        cy = margin + r * pitch + pitch / 2 + rng.uniform(-0.1, 0.1) * pitch
        cx = margin + c * pitch + pitch / 2 + rng.uniform(-0.1, 0.1) * pitch
        y0, x0 = int(cy - size / 2), int(cx - size / 2)
        centres.append((cx, cy))
        ink[y0 : y0 + size, x0 : x0 + size] = np.maximum(
            ink[y0 : y0 + size, x0 : x0 + size], np.asarray(d, np.float32) / 255
        )
    return ink, centres


def _broken(ink: np.ndarray, strength: float, pitch: int, rng) -> np.ndarray:
    """The ink made faint (down to 1 - strength) in short stretches where a random field, smooth
    over a stroke width (a fifteenth of the cell), is high: about a tenth of the ink fades, a
    twentieth fully, so a stroke breaks in a place or two per digit and no digit fades whole."""
    field = ndimage.gaussian_filter(rng.standard_normal(ink.shape).astype(np.float32), pitch / 15)
    field /= field.std() + 1e-8
    fade = np.clip((field - 1.2) * 2, 0.0, 1.0)
    return ink * (1 - strength * fade)


def _specks(ink: np.ndarray, centres: list, n: int, pitch: int, rng) -> np.ndarray:
    """Marks that are not digits, each beside a random digit, outside its ink: specks of dust and
    pen dots (round, 2-9 px across at 60 px per cell, i.e. 1-3 px on a 20 px scan) and ruling
    fragments (a straight bit of line, 1/5-1/2 of a cell long, 2-3 px thick; the vertical ones
    shorter, under a fifth of a cell, so that none could pass for a 1)."""
    h, w = ink.shape
    near = ndimage.maximum_filter(ink, size=15) > 0.05  # the digits' ink and 7 px around it
    marks = np.zeros_like(ink)
    apart = np.zeros(ink.shape, bool)  # the marks and a few pixels around them: two never touch
    placed = tries = 0
    while placed < n and tries < 50 * n:
        tries += 1
        cx, cy = centres[rng.integers(len(centres))]
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.3, 0.55) * pitch
        x, y = cx + dist * np.cos(ang), cy + dist * np.sin(ang)
        kind = rng.choice(["speck", "dot", "hline", "vline"], p=[0.4, 0.3, 0.2, 0.1])
        r = int(pitch // 4)  # the window the mark is drawn in
        x0, y0 = int(x) - r, int(y) - r
        if x0 < 0 or y0 < 0 or x0 + 2 * r >= w or y0 + 2 * r >= h:
            continue
        yy, xx = np.mgrid[y0 : y0 + 2 * r, x0 : x0 + 2 * r]
        if kind in ("speck", "dot"):
            rad = rng.uniform(1.0, 2.5) if kind == "speck" else rng.uniform(2.5, 4.5)
            shape = (xx - x) ** 2 + (yy - y) ** 2 <= rad * rad
        else:
            length = rng.uniform(0.2, 0.5) * pitch if kind == "hline" else rng.uniform(0.1, 0.16) * pitch
            half_t = rng.uniform(1.0, 1.5)
            along, across = (xx - x, yy - y) if kind == "hline" else (yy - y, xx - x)
            shape = (np.abs(along) <= length / 2) & (np.abs(across) <= half_t)
        win = (slice(y0, y0 + 2 * r), slice(x0, x0 + 2 * r))
        if not shape.any() or (shape & (near[win] | apart[win])).any():
            continue  # touching a digit (or another mark): it would be part of that digit
        marks[win][shape] = rng.uniform(0.6, 1.0)
        apart[win] |= ndimage.binary_dilation(shape, iterations=8)
        placed += 1
    return marks


def _rotated(img: Image.Image, rotate: float, centres: list) -> tuple[Image.Image, list]:
    """The page turned by `rotate` degrees, with the digits' centres where they land."""
    w, h = img.size
    img = img.rotate(rotate, resample=Image.BILINEAR, expand=True, fillcolor=237)
    # PIL turns the page counter-clockwise about its centre, then pads it to the new size
    t = np.radians(rotate)
    W, H = img.size
    centres = [
        (
            (x - w / 2) * np.cos(t) + (y - h / 2) * np.sin(t) + W / 2,
            -(x - w / 2) * np.sin(t) + (y - h / 2) * np.cos(t) + H / 2,
        )
        for x, y in centres
    ]
    return img, centres


def _as_photographed(img: Image.Image, gradient: float, jpeg: int | None, rng) -> Image.Image:
    """Uneven light, sensor noise and JPEG compression, as a phone photo or a scan has them."""
    arr = np.asarray(img, np.float32) / 255
    if gradient:  # light falling off from one corner, as a phone photo under a lamp
        gy, gx = np.mgrid[0 : arr.shape[0], 0 : arr.shape[1]]
        arr = arr * (1 - gradient * (gx / arr.shape[1] + gy / arr.shape[0]) / 2)
    arr = arr + rng.normal(0, 0.015, arr.shape)
    img = Image.fromarray(np.clip(arr * 255, 0, 255).astype(np.uint8))
    if jpeg:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=jpeg)
        img = Image.open(io.BytesIO(buf.getvalue()))
        img.load()
    return img


# What the tests and the measurement draw: every kind of page a user sends.
STYLES = [
    dict(paper="plain"),
    dict(paper="dotted", jpeg=75),
    dict(paper="squared", jpeg=80),
    dict(paper="lined", gradient=0.45),
    dict(paper="dotted", rotate=3.0, gradient=0.4, jpeg=75),
    dict(paper="squared", rotate=-3.0, jpeg=85),
]


# Small scans: 18-24 px per digit cell, the cells ruled, JPEG-compressed (drawn at 60 px, shrunk).
LOWRES_STYLES = [
    dict(paper="cells", scale=18 / 60, jpeg=70),
    dict(paper="cells", scale=20 / 60, jpeg=75),
    dict(paper="cells", scale=22 / 60, jpeg=60),
    dict(paper="cells", scale=24 / 60, jpeg=80),
    dict(paper="plain", scale=20 / 60, jpeg=75),
    dict(paper="lined", scale=20 / 60, jpeg=75),
]


# Small unruled scans, as a new writer sends them: 16-24 px per cell on dotted or plain paper,
# specks, pen dots and bits of ruling beside the digits, strokes that break when binarized, a
# slight rotation, JPEG (drawn at 60 px, shrunk).
UNRULED_SMALL_STYLES = [
    dict(paper="dotted", scale=16 / 60, jpeg=75, specks=25, breaks=0.6, rotate=1.0),
    dict(paper="plain", scale=18 / 60, jpeg=70, specks=30, breaks=0.7, rotate=-1.5),
    dict(paper="dotted", scale=20 / 60, jpeg=60, specks=30, breaks=0.7, rotate=0.7),
    dict(paper="plain", scale=22 / 60, jpeg=80, specks=30, breaks=0.8, rotate=2.0, gradient=0.3),
    dict(paper="dotted", scale=24 / 60, jpeg=70, specks=35, breaks=0.8, rotate=-1.0),
    dict(paper="dotted", scale=20 / 60, jpeg=75, specks=30, breaks=0.6, rotate=-2.0, gradient=0.3),
]


def mnist_pages(
    test_x,
    test_y,
    n_pages: int = 6,
    rows: int = 10,
    cols: int = 10,
    offset: int = 0,
    styles=None,
    margin: int = 70,
    seed: int = 0,
) -> list[SynthPage]:
    """`n_pages` pages of distinct MNIST test digits, cycling through `styles` (STYLES); page p
    is drawn with seed `seed` + p."""
    styles = styles or STYLES
    pages = []
    per = rows * cols
    for p in range(n_pages):
        idx = np.arange(offset + p * per, offset + (p + 1) * per)
        pages.append(
            render_page(
                np.asarray(test_x[idx]),
                np.asarray(test_y[idx]),
                idx,
                rows,
                cols,
                seed=seed + p,
                margin=margin,
                **styles[p % len(styles)],
            )
        )
    return pages


def found_in_order(page: SynthPage, boxes) -> float:
    """Fraction of the page's digits whose reading-order box (x0, y0, x1, y1; same index) holds
    its centre."""
    hits = 0
    for k, (x, y) in enumerate(page.centres):
        if k < len(boxes):
            x0, y0, x1, y1 = boxes[k]
            hits += x0 - 3 <= x <= x1 + 3 and y0 - 3 <= y <= y1 + 3
    return hits / len(page.centres)


def each_row_reads(test_x, test_y, rows: int, digits: str = "0123456789", start: int = 0):
    """MNIST test digits so that every row reads `digits`: (images, labels, indices)."""
    y = np.asarray(test_y)
    pools = {d: list(np.nonzero(y == d)[0][start:]) for d in range(10)}
    idx = np.array([pools[int(d)].pop(0) for _ in range(rows) for d in digits])
    return np.asarray(test_x[idx]), y[idx], idx
