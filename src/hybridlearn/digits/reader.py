"""The sheet reader: find every handwritten digit on a page image, whatever the layout.

    page = read_page(grey)            # grey: float [H, W] in [0, 1] (load_grey), any polarity
    for c in page.cells:              # reading order: rows top to bottom, then left to right
        c.row, c.col, c.box, c.cell, c.image

Steps (all numpy/scipy.ndimage, bounded by the page size, which `load_grey(max_side=...)` caps):
0. Small scans: when the digits found are shorter than UPSAMPLE_TO (48 px; a 20 px cell holds a
   digit about 14 px tall with 1-2 px strokes), the page is read again upsampled (cubic, up to
   4x), so binarizing, line removal and merging see strokes and lines several pixels wide.
1. Paper to white, ink to dark (polarity by the median); the paper level is estimated per pixel
   (a grey closing wider than the strokes, smoothed) and divided out, so a phone photo's
   lighting gradient or a shadow band becomes flat paper. `ink` = how much darker than the paper.
2. Binarize with Otsu's threshold plus hysteresis (faint rims kept where they touch firm ink).
3. Deskew: the angle (within +-6 degrees) whose projection profile of the ink is sharpest (rows
   of digits and ruled lines); the ink image is rotated back when it is more than 0.3 degrees.
4. Ruled and squared paper: ink runs longer than a fifth of the page, when there are at least
   three parallel ones, are lines and are removed; a digit cut by a line is bridged across it.
5. Connected pieces -> digits: pieces stacked within a quarter of a digit height (a 5's bar, a
   broken stroke, a 4 drawn in two parts) are merged; blobs much smaller than the typical digit
   (dots of dotted paper, dust) and ones far larger (frames, leftover lines) are dropped;
   fragments under half a digit high with under a third of its ink that lie between the rows
   join the nearest digit or are dropped, so they never open a row of their own.
6. Rows: digits sorted by height on the deskewed page, a new row where a centre lies more than
   half a digit height below the row's; columns: left to right within a row.

Each cell's `image` is the digit's ink alone (light on black, other digits and paper texture
erased) cut from the deskewed page over its cell; `cell` is the region between it and its
neighbours (midways), comparable with a hand-measured grid cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from hybridlearn.core.errors import DataError
from hybridlearn.digits.cli import MAX_SIDE  # pages are downscaled to this longest side (bounded memory)

UPSAMPLE_TO = 48  # digits shorter than this (pixels) are read on an upsampled page
SMALL_PAGE = 800  # a page where nothing digit-like is found at its own size is retried this large


class NoDigitError(DataError):
    """The page holds nothing that looks like a digit (blank, noise only, 1x1...)."""


@dataclass
class Cell:
    row: int
    col: int
    box: tuple[int, int, int, int]  # ink box (x0, y0, x1, y1), page pixels, x1/y1 exclusive
    cell: tuple[int, int, int, int]  # the digit's cell: midway to its neighbours (page pixels)
    image: np.ndarray = field(repr=False)  # float [h, w] in [0, 1]: this digit's ink, light on black


@dataclass
class Page:
    cells: list[Cell]
    shape: tuple[int, int]  # (H, W) of the page read
    angle: float  # degrees the page was rotated back by
    digit_height: float  # typical digit height in pixels

    @property
    def rows(self) -> list[list[Cell]]:
        out: list[list[Cell]] = []
        for c in self.cells:
            if c.row == len(out):
                out.append([])
            out[c.row].append(c)
        return out

    def grid_mismatch(self, rows: int, cols: int) -> str | None:
        """None when the digits fill rows x cols exactly, else what differs (one phrase)."""
        counts = [len(r) for r in self.rows]
        if len(counts) == rows and all(n == cols for n in counts):
            return None
        return (
            f"found {len(self.cells)} digits in {len(counts)} rows ({', '.join(map(str, counts[:12]))}"
            f"{', ...' if len(counts) > 12 else ''} per row), expected {rows}x{cols}"
        )


def otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _flatten(g: np.ndarray, k: int) -> np.ndarray:
    paper = ndimage.grey_closing(g, size=(k, k))  # erases dark strokes narrower than k
    return np.clip((paper - g) / np.maximum(paper, 0.1), 0.0, 1.0).astype(np.float32)


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Grey page -> ink strength in [0, 1] (0 = paper), lighting flattened."""
    g = grey if np.median(grey) > 0.5 else 1.0 - grey  # paper light, ink dark
    side = max(g.shape)
    k = max(int(side / 25), 5)
    ink = _flatten(g, k)
    # The paper estimate must be wider than the strokes: measure them (coarse distance
    # transform) on a first pass and redo it about three stroke widths wide.
    step = max(1, side // 500)
    mask, _ = binarize(ink[::step, ::step])
    dist = ndimage.distance_transform_edt(mask) * step
    stroke = 2 * float(np.percentile(dist[dist > 0], 90)) if (dist > 0).any() else 2.0
    # Narrow enough to follow sharp changes of paper (a collage of strips, a shadow's edge).
    return _flatten(g, int(min(max(3 * stroke, 5), side / 2)))


def binarize(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """Otsu + hysteresis (pixels above half the threshold that touch pixels above it), raised
    locally over rough paper (its texture lifts the local mean of the ink map)."""
    thr = max(otsu(ink), 0.2)
    local = ndimage.uniform_filter(ink, size=max(15, min(ink.shape) // 20))
    strong = ink > np.maximum(thr, local + thr / 2)
    weak = ink > np.maximum(thr / 2, local + thr / 4)
    lab, n = ndimage.label(weak, structure=np.ones((3, 3)))
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[strong])] = True
    keep[0] = False
    return keep[lab], thr


def skew_angle(mask: np.ndarray, max_deg: float = 6.0) -> float:
    """Angle (degrees, counter-clockwise page rotation) with the sharpest row profile."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 50:
        return 0.0
    if len(ys) > 200_000:
        pick = np.random.default_rng(0).choice(len(ys), 200_000, replace=False)
        ys, xs = ys[pick], xs[pick]
    ys, xs = ys.astype(np.float64), xs - xs.mean()

    def score(deg: float) -> float:
        t = math.radians(deg)
        h = np.bincount(np.round(ys + xs * math.tan(t) - ys.min() + mask.shape[1]).astype(np.int64))
        return float((h.astype(np.float64) ** 2).sum())

    coarse = np.arange(-max_deg, max_deg + 1e-9, 0.5)
    best = float(coarse[int(np.argmax([score(a) for a in coarse]))])
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.1)
    sc = [score(a) for a in fine]
    # Rotate only for a clearly sharper profile: jittered digits on a level page give small noise.
    return float(fine[int(np.argmax(sc))]) if max(sc) > 1.05 * score(0.0) else 0.0


def _rotation(shape: tuple[int, int], deg: float):
    """Output shape and the maps page (x, y) <-> deskewed (x, y) for a rotation by `deg`."""
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    h, w = shape
    ho, wo = int(math.ceil(abs(h * c) + abs(w * s))), int(math.ceil(abs(w * c) + abs(h * s)))
    ci, co = np.array([(h - 1) / 2, (w - 1) / 2]), np.array([(ho - 1) / 2, (wo - 1) / 2])
    # deskewed (y, x) = R (page (y, x) - ci) + co, with R rotating rows so a line y = x*tan(t) is level
    rot = np.array([[c, s], [-s, c]])

    def to_page(yx: np.ndarray) -> np.ndarray:
        return (yx - co) @ rot + ci  # rot is orthogonal: inverse = transpose

    return (ho, wo), rot, ci, co, to_page


def _remove_ruling(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ruled / squared paper on the deskewed page: rows (columns) whose ink spans more than half
    the page, with up to two neighbours each side (the blurred rim), when there are at least
    three such lines (a digit's bar is one). A stroke crossing a line is bridged straight across
    it (ink dilated across the line only, so no spurs grow along it). Returns (mask, lines)."""
    bands = []
    for axis in (1, 0):  # axis 1: fill of each row -> horizontal lines
        fill = mask.mean(axis=axis)
        core = fill > 0.5
        band = np.zeros_like(core)
        if ndimage.label(core)[1] >= 3:
            band = core.copy()
            for _ in range(2):  # the rim: at most two rows each side, partly inked
                band |= ndimage.binary_dilation(band) & (fill > 0.1)
        bands.append(band)
    lines = np.zeros_like(mask)
    lines[bands[0], :] = True
    lines[:, bands[1]] = True
    if not lines.any():
        return mask, lines
    ink = mask & ~lines
    across_h = ndimage.binary_dilation(ink, structure=np.ones((9, 1), bool))  # up/down across a row line
    across_v = ndimage.binary_dilation(ink, structure=np.ones((1, 9), bool))  # left/right across a column line
    bridge = np.zeros_like(mask)
    bridge[bands[0], :] |= across_h[bands[0], :]
    bridge[:, bands[1]] |= across_v[:, bands[1]]
    return ink | (bridge & mask), lines


def _remove_lines(mask: np.ndarray, length: int) -> np.ndarray:
    """The mask without straight horizontal or vertical ink runs of `length` pixels or more (a
    strip's edge, an underline joining digits); a digit cut by one is bridged across it."""
    lines = np.zeros_like(mask)
    for axis in (1, 0):
        if length >= mask.shape[axis]:
            continue
        full = ndimage.uniform_filter1d(mask.astype(np.float32), length, axis=axis) > 0.999
        lines |= ndimage.uniform_filter1d(full.astype(np.float32), length, axis=axis) > 0
    lines &= mask
    if not lines.any():
        return mask
    lines = ndimage.binary_dilation(lines, iterations=1) & mask  # the line's rim
    ink = mask & ~lines
    bridge = ndimage.binary_dilation(ink, iterations=3) & lines
    return ink | bridge


def _pieces(mask: np.ndarray, min_digit: int):
    """Connected pieces of ink: (labels, count, boxes [n, 4] as x0 y0 x1 y1, typical digit height)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        raise NoDigitError("no digit found (no ink blobs on the page)")
    objs = ndimage.find_objects(lab)
    box = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in objs], dtype=np.float64)
    hts, wds = box[:, 3] - box[:, 1], box[:, 2] - box[:, 0]
    area = np.asarray(ndimage.sum(mask, lab, range(1, n + 1)))
    # Typical digit height: the median height of the big pieces (specks and dots don't vote).
    big = (area >= 0.2 * np.percentile(area, 90)) & (np.maximum(hts, wds) >= max(min_digit, max(mask.shape) / 200))
    if not big.any():
        raise NoDigitError("no digit found (no digit-sized blobs, only dots or specks)")
    return lab, n, box, float(np.median(hts[big]))


def _union_find(n: int):
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    return find, union


def read_page(grey: np.ndarray, min_digit: int = 6, upsample_to: float = UPSAMPLE_TO) -> Page:
    """Find the digits of a page (see the module doc). NoDigitError when there is none.

    A page whose digits are shorter than `upsample_to` pixels (a small scan: 18-24 px cells hold
    digits about 14 px tall, with 1-2 px strokes and grid lines as thick as the strokes) is read
    again upsampled (cubic, at most 4x and MAX_SIDE): binarizing, line removal and merging then
    work on strokes several pixels wide. Boxes are given on the page as passed in."""
    if grey.ndim != 2 or min(grey.shape) < min_digit:
        raise NoDigitError(f"no digit found (a {grey.shape[-1]}x{grey.shape[0]} image is too small to hold one)")
    grey = np.asarray(grey, dtype=np.float32)
    room = MAX_SIDE / max(grey.shape)
    try:
        page = _read(grey, min_digit)
        f = min(4.0, room, upsample_to / max(page.digit_height, 1.0))
    except NoDigitError:
        # Nothing digit-like at this scale; a small page may still hold tiny digits.
        f = min(4.0, room, SMALL_PAGE / max(grey.shape))
        page = None
        if f < 1.5:
            raise
    if f < 1.5:
        return page
    big = np.clip(ndimage.zoom(grey, f, order=3, grid_mode=True, mode="nearest"), 0.0, 1.0)
    try:
        up = _read(big, round(min_digit * f))
    except NoDigitError:
        if page is None:
            raise
        return page
    fy, fx = big.shape[0] / grey.shape[0], big.shape[1] / grey.shape[1]

    def back(b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return int(round(b[0] / fx)), int(round(b[1] / fy)), int(round(b[2] / fx)), int(round(b[3] / fy))

    cells = [Cell(c.row, c.col, back(c.box), back(c.cell), c.image) for c in up.cells]
    return Page(cells, tuple(grey.shape), up.angle, up.digit_height / fy)


def _read(grey: np.ndarray, min_digit: int) -> Page:
    """One pass of steps 1-6 at the page's own scale."""
    ink = ink_map(np.asarray(grey, dtype=np.float32))
    if float(ink.max()) < 0.2:
        raise NoDigitError("no digit found (a blank page: no ink darker than the paper)")
    mask, _ = binarize(ink)
    ink, mask, angle, to_page = _deskew(ink, mask)
    mask, ruling, lab, n, box, H = _clean_lines(mask, min_digit)
    groups, gb = _merge_pieces(box, n, H, ruling)
    piece_area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    g_area = {root: int(piece_area[members].sum()) for root, members in groups.items()}
    typical = float(np.median([a for r, a in g_area.items() if gb[r][3] - gb[r][1] >= 0.5 * H] or [1]))
    _join_small_pieces(groups, gb, g_area, typical, H)
    digits = _digit_blobs(groups, gb, g_area, typical, H)
    digits = _absorb_fragments(digits, piece_area, H, typical)
    digits = _one_digit_in_strokes(_split_touching(digits, lab, mask))
    cells = _cells(_rows(digits), lab, ink, H, to_page, grey.shape)
    return Page(cells, tuple(grey.shape), angle, H)


def _deskew(ink: np.ndarray, mask: np.ndarray):
    """Step 3: (ink, mask) rotated back by the skew angle when it is 0.3 degrees or more, the angle
    (0.0 when not rotated) and the deskewed -> page coordinate map (None when not rotated)."""
    angle = skew_angle(mask)
    if abs(angle) < 0.3:
        return ink, mask, 0.0, None
    (ho, wo), rot, ci, co, to_page = _rotation(ink.shape, angle)
    # deskewed -> page coordinates for affine_transform (it maps output to input)
    ink = ndimage.affine_transform(ink, rot.T, offset=ci - rot.T @ co, output_shape=(ho, wo), order=1)
    mask, _ = binarize(ink)
    return ink, mask, angle, to_page


def _clean_lines(mask: np.ndarray, min_digit: int):
    """Step 4: ruled/squared paper and short lines out; returns (mask, ruling, labels, count,
    boxes, typical digit height) of the pieces left."""
    mask, ruling = _remove_ruling(mask)
    lab, n, box, H = _pieces(mask, min_digit)
    # Short lines (a strip's edge, an underline) that join digits: runs longer than 1.6 digits.
    cleaned = _remove_lines(mask, length=int(1.6 * H) + 1)
    if cleaned is not mask:
        mask = cleaned
        lab, n, box, H = _pieces(mask, min_digit)
    return mask, ruling, lab, n, box, H


def _merge_pieces(box: np.ndarray, n: int, H: float, ruling: np.ndarray):
    """Step 5, first part: the pieces of one digit merged, stacked (x-overlap, small vertical gap)
    or side by side across a ruled line. Returns ({root: piece indices}, group boxes by root)."""
    wds = box[:, 2] - box[:, 0]
    find, union = _union_find(n)
    order = np.argsort(box[:, 0])
    gb = box.copy()
    for a_i in range(n):
        i = order[a_i]
        for b_i in range(a_i + 1, n):
            j = order[b_i]
            if box[j, 0] >= box[i, 2] + 8:
                break
            xo = min(box[i, 2], box[j, 2]) - max(box[i, 0], box[j, 0])
            ygap = max(box[i, 1], box[j, 1]) - min(box[i, 3], box[j, 3])
            stacked = xo >= 0.3 * min(wds[i], wds[j]) and ygap <= 0.25 * H
            if not (stacked or _split_by_ruling(box, i, j, xo, ygap, H, ruling)):
                continue
            ri, rj = find(i), find(j)
            if ri == rj:
                continue
            merged = [
                min(gb[ri, 0], gb[rj, 0]),
                min(gb[ri, 1], gb[rj, 1]),
                max(gb[ri, 2], gb[rj, 2]),
                max(gb[ri, 3], gb[rj, 3]),
            ]
            if merged[3] - merged[1] > 1.4 * H:
                continue
            union(i, j)
            gb[find(i)] = merged
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return groups, gb


def _split_by_ruling(box: np.ndarray, i: int, j: int, xo: float, ygap: float, H: float, ruling: np.ndarray) -> bool:
    """Side by side where a ruled line took the ink between (a 1 drawn on a vertical line, a 3
    whose bar ran along a ruled line): the smaller piece lies on a line."""
    (hi, wi), (hj, wj) = (box[i, 3] - box[i, 1], box[i, 2] - box[i, 0]), (box[j, 3] - box[j, 1], box[j, 2] - box[j, 0])
    if not (xo >= -8 and -ygap >= 0.5 * min(hi, hj) and ruling.any()):
        return False
    k = i if wi * hi < wj * hj else j
    x0, y0, x1, y1 = (int(v) for v in box[k])
    near = ruling[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3]
    wide = max(box[i, 2], box[j, 2]) - min(box[i, 0], box[j, 0])
    return bool(near.size > 0 and near.mean() >= 0.1 and wide <= 1.2 * H)


def _join_small_pieces(groups: dict, gb: np.ndarray, g_area: dict, typical: float, H: float) -> None:
    """Step 5, second part (in place): a small fragment (a stroke end cut off by a line, a
    detached tick) beside a digit joins it when the two still fit one digit's box."""
    for r in sorted(list(groups), key=lambda r: g_area[r]):
        if r not in groups or g_area[r] >= 0.35 * typical:
            continue
        b = gb[r]
        best, best_d = None, 0.2 * H
        for q in groups:
            if q == r or g_area[q] < g_area[r]:
                continue
            c = gb[q]
            dist = max(c[0] - b[2], b[0] - c[2], c[1] - b[3], b[1] - c[3], 0)
            merged = [min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])]
            if dist <= best_d and merged[2] - merged[0] <= 1.3 * H and merged[3] - merged[1] <= 1.4 * H:
                best, best_d = q, dist
        if best is not None:
            groups[best] += groups.pop(r)
            g_area[best] += g_area.pop(r)
            c = gb[best]
            gb[best] = [min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])]


def _digit_blobs(groups: dict, gb: np.ndarray, g_area: dict, typical: float, H: float) -> list:
    """Step 5, third part: the merged groups of digit size, as (box, labels of its pieces)."""
    digits = []
    for root, members in groups.items():
        b = gb[root]
        h, w = b[3] - b[1], b[2] - b[0]
        if max(h, w) < 0.35 * H or g_area[root] < 0.12 * typical or h > 2.5 * H or w > 3 * H:
            continue  # dots, dust, slivers of a line, frames, leftover lines
        digits.append((b, [m + 1 for m in members]))
    if not digits:
        raise NoDigitError("no digit found (no digit-sized blobs, only dots or specks)")
    return digits


def _one_digit_in_strokes(digits: list) -> list:
    """An image of one digit drawn in separate strokes (no other digits to learn its size from):
    a few pieces whose union is one digit's shape, taller than wide and not much taller than the
    biggest piece, are that digit."""
    if not (2 <= len(digits) <= 4 and all(isinstance(m, list) for _, m in digits)):
        return digits
    u = np.array(
        [
            min(d[0][0] for d in digits),
            min(d[0][1] for d in digits),
            max(d[0][2] for d in digits),
            max(d[0][3] for d in digits),
        ]
    )
    tallest = max(d[0][3] - d[0][1] for d in digits)
    if u[2] - u[0] <= 1.1 * (u[3] - u[1]) and u[3] - u[1] <= 1.6 * tallest:
        return [(u, [m for _, ms in digits for m in ms])]
    return digits


def _rows(digits: list) -> list[list]:
    """Step 6: rows on the deskewed page, each left to right. A digit joins the row whose typical
    span (median top to median bottom) it overlaps by half its height or the span's, so a tall or
    jittered digit stays in."""
    digits.sort(key=lambda d: (d[0][1] + d[0][3]) / 2)
    rows: list[list] = []
    for d in digits:
        if rows:
            top = float(np.median([e[0][1] for e in rows[-1]]))
            bot = float(np.median([e[0][3] for e in rows[-1]]))
            overlap = min(bot, d[0][3]) - max(top, d[0][1])
            if overlap >= 0.5 * min(bot - top, d[0][3] - d[0][1]):
                rows[-1].append(d)
                continue
        rows.append([d])
    for r in rows:
        r.sort(key=lambda d: (d[0][0] + d[0][2]) / 2)
    return rows


def _cells(rows: list[list], lab: np.ndarray, ink: np.ndarray, H: float, to_page, shape) -> list[Cell]:
    """Each digit's cell (midway to its neighbours) and its own ink cut from the deskewed page."""
    hh, ww = ink.shape
    row_y = [float(np.mean([(d[0][1] + d[0][3]) / 2 for d in r])) for r in rows]
    row_gap = float(np.median(np.diff(row_y))) if len(rows) > 1 else 1.3 * H
    cells = []
    for ri, r in enumerate(rows):
        top = (row_y[ri - 1] + row_y[ri]) / 2 if ri > 0 else row_y[ri] - row_gap / 2
        bot = (row_y[ri] + row_y[ri + 1]) / 2 if ri + 1 < len(rows) else row_y[ri] + row_gap / 2
        xs = [(d[0][0] + d[0][2]) / 2 for d in r]
        col_gap = float(np.median(np.diff(xs))) if len(xs) > 1 else row_gap
        for ci_, (b, members) in enumerate(r):
            left = (xs[ci_ - 1] + xs[ci_]) / 2 if ci_ > 0 else xs[ci_] - col_gap / 2
            right = (xs[ci_] + xs[ci_ + 1]) / 2 if ci_ + 1 < len(xs) else xs[ci_] + col_gap / 2
            cb = np.array([max(0, left), max(0, top), min(ww, right), min(hh, bot)])
            image = _own_ink(b, cb, members, lab, ink)
            cells.append(Cell(ri, ci_, _to_page_box(b, to_page, shape), _to_page_box(cb, to_page, shape), image))
    return cells


def _own_ink(b, cb, members, lab: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """The crop: the cell `cb`, grown to hold all of this digit's ink (box `b`); only its own ink kept."""
    x0, y0 = int(min(cb[0], b[0])), int(min(cb[1], b[1]))
    x1, y1 = int(math.ceil(max(cb[2], b[2]))), int(math.ceil(max(cb[3], b[3])))
    if isinstance(members, dict):  # a part of a split blob: only its own columns
        own = np.zeros((y1 - y0, x1 - x0), bool)
        ox, oy = members["origin"]
        m = members["mask"]
        ya, xa = max(oy, y0), max(ox, x0)
        yb, xb = min(oy + m.shape[0], y1), min(ox + m.shape[1], x1)
        own[ya - y0 : yb - y0, xa - x0 : xb - x0] = m[ya - oy : yb - oy, xa - ox : xb - ox]
    else:
        own = np.isin(lab[y0:y1, x0:x1], members)
    own = ndimage.binary_dilation(own, iterations=2)
    return np.where(own, ink[y0:y1, x0:x1], 0.0).astype(np.float32)


def _absorb_fragments(digits: list, piece_area: np.ndarray, H: float, typical: float) -> list:
    """Fragments much smaller than the typical digit (under half its height and a third of its
    ink: a stroke end a grid line cut off, a line crossing left over, JPEG dirt) that lie between
    the rows (beside no full-size digit) would open a row of their own: each joins the nearest
    digit when within half a digit height and the two still fit one digit's box, or is dropped.
    A small piece level with full-size digits stays (a small digit of a collage strip)."""
    area = [float(piece_area[np.asarray(m) - 1].sum()) for _, m in digits]
    small = [(b[3] - b[1]) < 0.5 * H and a < 0.35 * typical for (b, _), a in zip(digits, area)]
    if not any(small) or all(small):
        return digits
    full = [[np.array(b, dtype=np.float64), list(m)] for (b, m), s in zip(digits, small) if not s]
    kept = []
    for (b, m), s in zip(digits, small):
        if not s:
            continue
        mid = (b[1] + b[3]) / 2
        if any(c[1] + 0.15 * H <= mid <= c[3] - 0.15 * H for c, _ in full):  # level with a digit's middle
            kept.append((b, m))
            continue
        best, best_d = None, 0.5 * H
        for k, (c, _) in enumerate(full):
            dist = max(c[0] - b[2], b[0] - c[2], c[1] - b[3], b[1] - c[3], 0)
            u = [min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])]
            if dist <= best_d and u[2] - u[0] <= 1.3 * H and u[3] - u[1] <= 1.5 * H:
                best, best_d = k, dist
        if best is not None:
            c = full[best][0]
            full[best][0] = np.array([min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])])
            full[best][1] += list(m)
    return [(b, m) for b, m in full] + kept


def _split_touching(digits: list, lab: np.ndarray, mask: np.ndarray) -> list:
    """Cut blobs much wider than the typical digit (neighbours whose strokes touch) into as many
    parts as their width holds, at the columns with the least ink near the even cuts."""
    # The wider digits set the scale (a page of narrow 1s must not cut its 0s).
    w_med = float(np.percentile([d[0][2] - d[0][0] for d in digits], 75))
    out = []
    for b, members in digits:
        w = b[2] - b[0]
        parts = int(round(w / w_med))
        if w < 1.7 * w_med or parts < 2:
            out.append((b, members))
            continue
        x0, y0, x1, y1 = (int(v) for v in b)
        own = np.isin(lab[y0:y1, x0:x1], members)
        profile = own.sum(0)
        cuts = [0]
        for k in range(1, parts):
            c = k * w / parts
            lo, hi = int(c - 0.25 * w_med), int(c + 0.25 * w_med) + 1
            cuts.append(lo + int(np.argmin(profile[lo:hi])))
        cuts.append(x1 - x0)
        for a, e in zip(cuts[:-1], cuts[1:]):
            ys = np.nonzero(own[:, a:e].any(1))[0]
            if len(ys) == 0:
                continue
            sub = np.zeros_like(own)
            sub[:, a:e] = own[:, a:e]
            out.append(
                (
                    np.array([x0 + a, y0 + ys[0], x0 + e, y0 + ys[-1] + 1], dtype=np.float64),
                    {"members": members, "mask": sub, "origin": (x0, y0)},
                )
            )
    return out


def _to_page_box(b, to_page, shape) -> tuple[int, int, int, int]:
    """An axis-aligned deskewed box -> the page box holding it (the same box when not rotated)."""
    if to_page is None:
        pts = np.array([[b[1], b[0]], [b[3], b[2]]])
    else:
        pts = to_page(np.array([[b[1], b[0]], [b[1], b[2]], [b[3], b[0]], [b[3], b[2]]], dtype=np.float64))
    y0, x0 = np.clip(pts.min(0), 0, shape)
    y1, x1 = np.clip(pts.max(0), 0, shape)
    return int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
