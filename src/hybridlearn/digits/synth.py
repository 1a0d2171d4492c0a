"""Synthetic pages of handwritten digits, rendered from MNIST *test* digits the way real pages
come from a scanner or a phone: margins, plain / dotted / squared / lined paper, jittered positions
and sizes, a slight rotation, a lighting gradient, sensor noise and JPEG compression."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


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
) -> SynthPage:
    """`digits`: uint8 [N, 28, 28] light ink on black (MNIST); the first rows*cols are drawn.
    `paper="cells"`: ruled cell lines around every digit (a form's table). `scale`: the page is
    drawn at `pitch` and shrunk by this factor before noise and JPEG (a small scan)."""
    rng = np.random.default_rng(seed)
    n = rows * cols
    h, w = 2 * margin + rows * pitch, 2 * margin + cols * pitch
    ink, centres = _draw_digits(digits[:n], cols, pitch, margin, (h, w), rng)
    page = _paper(h, w, pitch, margin, paper) * (1 - 0.88 * ink)
    img = Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8))
    if rotate:
        img, centres = _rotated(img, rotate, centres)
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BOX)
        centres = [(x * scale, y * scale) for x, y in centres]
    img = _as_photographed(img, gradient, jpeg, rng)
    return SynthPage(img, [int(v) for v in labels[:n]], [int(v) for v in index[:n]], rows, cols, centres)


def _paper(h: int, w: int, pitch: int, margin: int, paper: str) -> np.ndarray:
    """The blank page, grey [h, w]: plain, dotted, squared, lined, or ruled around the cells."""
    page = np.full((h, w), 0.93, np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    step = pitch // 2
    if paper == "dotted":
        page[((yy % step) < 2) & ((xx % step) < 2)] = 0.45
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


def mnist_pages(
    test_x, test_y, n_pages: int = 6, rows: int = 10, cols: int = 10, offset: int = 0, styles=None, margin: int = 70
) -> list[SynthPage]:
    """`n_pages` pages of distinct MNIST test digits, cycling through `styles` (STYLES)."""
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
                seed=p,
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
