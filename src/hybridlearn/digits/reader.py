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
5. Connected pieces -> digits: specks, pen dots and the dots of dotted paper (under 0.3 of a
   digit height, little ink, not inside a digit's box nor cut off by a removed line) go first;
   pieces stacked within a quarter of a digit height (a 5's bar, a broken stroke, a 4 drawn in
   two parts) are merged, the closest pairs first; blobs much smaller than the typical digit and
   ones far larger (frames, leftover lines) are dropped, and so are dashes (under 0.3 of a digit
   high, twice as wide: bits of ruling, underlines), which join a digit only as its bar, never a
   full-height digit beside or under them; fragments under half a digit high with under a third
   of its ink join the digit they lie over or under, or the nearest one, or are dropped, so they
   never open a row of their own; blobs wider or taller than two digits (touching neighbours,
   in a row or across rows) are cut at the lines with the least ink.
6. Rows: digits sorted by height on the deskewed page, a new row where a centre lies more than
   half a digit height below the row's; columns: left to right within a row; neighbours closer
   than half the row's spacing that fit one digit's box together are one broken digit.

Each cell's `image` is the digit's ink alone (light on black, other digits and paper texture
erased) cut from the deskewed page over its cell, with the faint ink that continues its strokes
(a stroke that faded and broke when binarized); `cell` is the region between it and its
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
SPECK = 0.3  # pieces smaller than this many digit heights both ways (and with little ink) are specks
DASH = 0.3  # a group lower than this many digit heights (and twice as wide) is a dash, not a digit
FAINT = 0.25  # ink over this share of the binarizing threshold, touching a digit's strokes, is its ink too
BROKEN = 0.5  # neighbours in a row closer than this share of the row's spacing may be one broken digit


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
            f"found {len(self.cells)} digits, expected {rows}x{cols} = {rows * cols} ({len(counts)} rows of "
            f"{', '.join(map(str, counts[:12]))}{', ...' if len(counts) > 12 else ''})"
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
    ink, mask, angle, to_page, thr = _deskew(ink, mask)
    inked = mask
    mask, ruling, lab, n, box, H = _clean_lines(mask, min_digit)
    mask, lab, n, box = _drop_specks(mask, lab, n, box, H, inked & ~mask)
    groups, gb = _merge_pieces(box, n, H, ruling)
    piece_area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    g_area = {root: int(piece_area[members].sum()) for root, members in groups.items()}
    typical = float(np.median([a for r, a in g_area.items() if gb[r][3] - gb[r][1] >= 0.5 * H] or [1]))
    _join_small_pieces(groups, gb, g_area, typical, H)
    digits = _digit_blobs(groups, gb, g_area, typical, H)
    digits = _absorb_fragments(digits, piece_area, H, typical)
    digits = _one_digit_in_strokes(_split_touching(digits, lab, mask, H))
    # not the ink of removed lines, specks and dashes, nor the faint rims of ruled lines
    removed = ndimage.binary_dilation(inked & (lab == 0), iterations=2) | ndimage.binary_dilation(ruling, iterations=4)
    faint = (ink > FAINT * thr) & ~removed
    rows = _join_broken(_rows(digits), H)
    # a digit too faint to binarize whole: its specks were dropped, the ink is there
    lost = (ink > FAINT * thr) & ~ndimage.binary_dilation((lab > 0) | ruling, iterations=3)
    rows = _rescue_faint(rows, H, lost, ink > 0.5 * thr, typical)
    cells = _cells(rows, lab, ink, faint, H, to_page, grey.shape)
    return Page(cells, tuple(grey.shape), angle, H)


def _deskew(ink: np.ndarray, mask: np.ndarray):
    """Step 3: (ink, mask) rotated back by the skew angle when it is 0.3 degrees or more, the angle
    (0.0 when not rotated), the deskewed -> page coordinate map (None when not rotated) and the
    binarizing threshold."""
    angle = skew_angle(mask)
    if abs(angle) < 0.3:
        return ink, mask, 0.0, None, binarize(ink)[1]
    (ho, wo), rot, ci, co, to_page = _rotation(ink.shape, angle)
    # deskewed -> page coordinates for affine_transform (it maps output to input)
    ink = ndimage.affine_transform(ink, rot.T, offset=ci - rot.T @ co, output_shape=(ho, wo), order=1)
    mask, thr = binarize(ink)
    return ink, mask, angle, to_page, thr


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


def _drop_specks(mask: np.ndarray, lab: np.ndarray, n: int, box: np.ndarray, H: float, lines: np.ndarray):
    """Specks, pen dots and the dots of dotted paper out before pieces are merged (a dot stacked
    on a dash would make one digit-sized group; one stacked on a digit would stretch its crop): a
    piece under SPECK of a digit height both ways, holding under a fifth of a typical digit's ink,
    goes unless it lies within a larger piece's box (a bit of a broken stroke) or touches `lines`,
    the ink of removed lines (a bit of a digit that a ruled line cut off). Returns (mask, labels,
    count, boxes) of the pieces left."""
    hts, wds = box[:, 3] - box[:, 1], box[:, 2] - box[:, 0]
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    tall = hts >= 0.5 * H
    if not tall.any():
        return mask, lab, n, box
    speck = (np.maximum(hts, wds) < SPECK * H) & (area < 0.2 * np.median(area[tall]))
    if not speck.any() or speck.all():
        return mask, lab, n, box
    g = max(1.0, 0.06 * H)
    big = box[~speck]
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    within = (
        (cx[:, None] >= big[None, :, 0] - g)
        & (cx[:, None] <= big[None, :, 2] + g)
        & (cy[:, None] >= big[None, :, 1] - g)
        & (cy[:, None] <= big[None, :, 3] + g)
    ).any(1)
    cut = np.zeros(n, bool)
    if lines.any():
        cut = np.asarray(ndimage.maximum(ndimage.binary_dilation(lines, iterations=2), lab, np.arange(1, n + 1)), bool)
    drop = speck & ~within & ~cut
    if not drop.any():
        return mask, lab, n, box
    keep = np.concatenate([[False], ~drop])
    mask = keep[lab]
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    objs = ndimage.find_objects(lab)
    box = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in objs], dtype=np.float64)
    return mask, lab, n, box


def _merge_pieces(box: np.ndarray, n: int, H: float, ruling: np.ndarray):
    """Step 5, first part: the pieces of one digit merged, stacked (x-overlap, small vertical gap)
    or side by side across a ruled line, the closest pairs first (a broken stroke's two ends join
    before either joins a dot or the digit of the next row). Returns ({root: piece indices}, group
    boxes by root)."""
    wds = box[:, 2] - box[:, 0]
    find, union = _union_find(n)
    order = np.argsort(box[:, 0])
    pairs = []
    for a_i in range(n):
        i = order[a_i]
        for b_i in range(a_i + 1, n):
            j = order[b_i]
            if box[j, 0] >= box[i, 2] + 8:
                break
            xo = min(box[i, 2], box[j, 2]) - max(box[i, 0], box[j, 0])
            ygap = max(box[i, 1], box[j, 1]) - min(box[i, 3], box[j, 3])
            stacked = xo >= 0.3 * min(wds[i], wds[j]) and ygap <= 0.25 * H
            if not (stacked or _split_by_ruling(box, i, j, xo, ygap, H, ruling)) or _dash_beside(box, i, j, H):
                continue
            pairs.append((max(ygap, 0.0), len(pairs), i, j))
    gb = box.copy()
    for _, _, i, j in sorted(pairs):
        ri, rj = find(i), find(j)
        if ri == rj:
            continue
        merged = [
            min(gb[ri, 0], gb[rj, 0]),
            min(gb[ri, 1], gb[rj, 1]),
            max(gb[ri, 2], gb[rj, 2]),
            max(gb[ri, 3], gb[rj, 3]),
        ]
        dashes = int(_is_dash(box[i], H)) + int(_is_dash(box[j], H))
        if dashes == 2 or merged[3] - merged[1] > _tallest(dashes > 0) * H:
            continue  # two dashes make no digit; a dash joins no full-height one
        union(i, j)
        gb[find(i)] = merged
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return groups, gb


def _is_dash(b, H: float) -> bool:
    """Lower than any digit and at least twice as wide as high: a dash, an underline, ruling."""
    return bool(b[3] - b[1] < DASH * H and b[2] - b[0] >= 2 * (b[3] - b[1]))


def _tallest(dash: bool) -> float:
    """How tall (digit heights) a merged digit may be: 1.4, but 1.15 with a dash in it, so a bit
    of ruling over or under a full-height digit stays out while a 7's or 5's bar joins its digit."""
    return 1.15 if dash else 1.4


def _dash_beside(box: np.ndarray, i: int, j: int, H: float) -> bool:
    """One of the two is a dash lying beside the other (level with its middle half, mostly
    outside it): not a 5's or 7's bar, which lies over the rest of the digit."""
    for d, o in ((box[i], box[j]), (box[j], box[i])):
        if not _is_dash(d, H):
            continue
        mid, oh = (d[1] + d[3]) / 2, o[3] - o[1]
        level = o[1] + 0.25 * oh <= mid <= o[3] - 0.25 * oh
        if level and min(d[2], o[2]) - max(d[0], o[0]) < 0.5 * (d[2] - d[0]):
            return True
    return False


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
    detached tick) beside a digit joins it when the two still fit one digit's box; a dash (a bit
    of ruling) level with a digit's middle and beside it does not, nor one dash another."""
    for r in sorted(list(groups), key=lambda r: g_area[r]):
        if r not in groups or g_area[r] >= 0.35 * typical:
            continue
        b = gb[r]
        best, best_d, tallest = None, 0.2 * H, _tallest(_is_dash(b, H))
        for q in groups:
            if q == r or g_area[q] < g_area[r]:
                continue
            c = gb[q]
            if _dash_beside(np.array([b, c]), 0, 1, H) or (_is_dash(b, H) and _is_dash(c, H)):
                continue
            dist = max(c[0] - b[2], b[0] - c[2], c[1] - b[3], b[1] - c[3], 0)
            merged = [min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])]
            if dist <= best_d and merged[2] - merged[0] <= 1.3 * H and merged[3] - merged[1] <= tallest * H:
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
        if _is_dash(b, H):
            continue  # a dash, an underline, a bit of ruling: lower than any digit
        digits.append((b, [m + 1 for m in members]))
    if not digits:
        raise NoDigitError("no digit found (no digit-sized blobs, only dots or specks)")
    return digits


def _join_broken(rows: list[list], H: float) -> list[list]:
    """Pieces of one digit side by side (a stroke that faded out, broken when binarized: a 4's
    upright apart from its arm, a 0 in two arcs): neighbours in a row whose centres are closer
    than BROKEN of the row's usual spacing, and that together are no wider than a digit, are one."""
    out = []
    for r in rows:
        if len(r) < 3:
            out.append(r)
            continue
        xs = [(d[0][0] + d[0][2]) / 2 for d in r]
        pitch = float(np.median(np.diff(xs)))
        merged = [r[0]]
        for d in r[1:]:
            b, c = merged[-1][0], d[0]
            u = [min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])]
            close = (c[0] + c[2]) / 2 - (b[0] + b[2]) / 2 < BROKEN * pitch
            if close and u[2] - u[0] <= 1.3 * H and u[3] - u[1] <= 1.4 * H and _plain(merged[-1]) and _plain(d):
                merged[-1] = (np.array(u, dtype=np.float64), list(merged[-1][1]) + list(d[1]))
            else:
                merged.append(d)
        out.append(merged)
    return out


def _rescue_faint(rows: list[list], H: float, lost: np.ndarray, firm: np.ndarray, typical: float) -> list[list]:
    """A digit too faint to binarize whole (a light pencil, a pen running dry: only specks of it
    binarized, and they were dropped) leaves a gap in its row. Where two neighbours lie more than
    1.6 of the page's column spacing apart, the ink between them that no digit owns (`lost`: over
    FAINT of the threshold) is a digit when it holds a quarter of a typical digit's ink and its
    tallest piece is half a digit tall and holds most of its firm ink (`firm`: over half the
    threshold); specks, dots and dashes around an empty cell are scattered pieces."""
    gaps = [g for r in rows if len(r) >= 3 for g in np.diff([(d[0][0] + d[0][2]) / 2 for d in r])]
    if not gaps:
        return rows
    pitch = float(np.median(gaps))
    out = []
    for r in rows:
        kept = [r[0]]
        yc = float(np.median([(d[0][1] + d[0][3]) / 2 for d in r]))
        for a, b in zip(r[:-1], r[1:]):
            xa, xb = (a[0][0] + a[0][2]) / 2, (b[0][0] + b[0][2]) / 2
            missing = int(round((xb - xa) / pitch)) - 1
            if xb - xa > 1.6 * pitch:
                for k in range(1, missing + 1):
                    d = _faint_digit(lost, firm, xa + k * (xb - xa) / (missing + 1), yc, pitch, H, typical)
                    if d is not None:
                        kept.append(d)
            kept.append(b)
        out.append(kept)
    return out


def _faint_digit(lost: np.ndarray, firm: np.ndarray, xc: float, yc: float, pitch: float, H: float, typical: float):
    """The faint digit centred near (xc, yc) as (box, {"members": [], "mask", "origin"}), or None."""
    x0, x1 = int(max(0, xc - 0.45 * pitch)), int(min(lost.shape[1], xc + 0.45 * pitch))
    y0, y1 = int(max(0, yc - 0.7 * H)), int(min(lost.shape[0], yc + 0.7 * H))
    win = lost[y0:y1, x0:x1]
    if win.sum() < 0.25 * typical or not (win & firm[y0:y1, x0:x1]).any():
        return None
    lab, n = ndimage.label(win, structure=np.ones((3, 3)))
    objs = ndimage.find_objects(lab)
    tallest = int(np.argmax([o[0].stop - o[0].start for o in objs]))
    strong = firm[y0:y1, x0:x1] & win
    # one stroke half a digit tall holding most of the firm ink, not specks and dots of the paper
    if (
        objs[tallest][0].stop - objs[tallest][0].start < 0.5 * H
        or (strong & (lab == tallest + 1)).sum() < 0.8 * strong.sum()
    ):
        return None
    ys, xs = np.nonzero(win)
    bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    box = np.array([x0 + bx0, y0 + by0, x0 + bx1, y0 + by1], dtype=np.float64)
    return box, {"members": [], "mask": win[by0:by1, bx0:bx1], "origin": (x0 + bx0, y0 + by0)}


def _plain(d) -> bool:
    """A digit made of whole pieces (not a part of a blob cut by _split_touching)."""
    return isinstance(d[1], list)


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


def _cells(
    rows: list[list], lab: np.ndarray, ink: np.ndarray, faint: np.ndarray, H: float, to_page, shape
) -> list[Cell]:
    """Each digit's cell (midway to its neighbours) and its own ink cut from the deskewed page
    (`faint`: where ink too faint to binarize may belong to a digit, see _own_ink)."""
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
            image = _own_ink(b, cb, members, lab, ink, faint)
            cells.append(Cell(ri, ci_, _to_page_box(b, to_page, shape), _to_page_box(cb, to_page, shape), image))
    return cells


def _own_ink(b, cb, members, lab: np.ndarray, ink: np.ndarray, faint: np.ndarray) -> np.ndarray:
    """The crop: the cell `cb`, grown to hold all of this digit's ink (box `b`); only its own ink
    kept, with the faint ink that continues its strokes (a stroke that faded where the pen ran dry
    and broke when binarized: `faint` holds ink over FAINT of the threshold that no other piece,
    removed line or speck owns), so the model sees the 9's loop that did not binarize."""
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
    others = ndimage.binary_dilation((lab[y0:y1, x0:x1] > 0) & ~own, iterations=2)
    own = ndimage.binary_propagation(own, mask=own | (faint[y0:y1, x0:x1] & ~others))
    own = ndimage.binary_dilation(own, iterations=2)
    return np.where(own, ink[y0:y1, x0:x1], 0.0).astype(np.float32)


def _absorb_fragments(digits: list, piece_area: np.ndarray, H: float, typical: float) -> list:
    """Fragments much smaller than the typical digit (under half its height and a third of its
    ink: a stroke end a grid line cut off, a line crossing left over, JPEG dirt, the lower end of
    a 7 whose stem faded) would open a row, or a column, of their own. One over or under a digit
    (within half a digit height, the two fitting one digit's box) joins it; else a piece level with
    full-size digits, 0.4 of their height tall and with a fifth of their ink stays (a small digit
    of a collage strip; no speck, dot or dash is that big); else it joins the nearest digit within
    half a digit height when the two fit one digit's box, or is dropped."""
    area = [float(piece_area[np.asarray(m) - 1].sum()) for _, m in digits]
    small = [(b[3] - b[1]) < 0.5 * H and a < 0.35 * typical for (b, _), a in zip(digits, area)]
    if not any(small) or all(small):
        return digits
    full = [[np.array(b, dtype=np.float64), list(m)] for (b, m), s in zip(digits, small) if not s]
    kept = []
    for (b, m), s, a in zip(digits, small, area):
        if not s:
            continue
        mid = (b[1] + b[3]) / 2
        level = any(c[1] + 0.15 * H <= mid <= c[3] - 0.15 * H for c, _ in full)  # with a digit's middle
        best = _fitting_neighbour(b, full, H, stacked=True)
        if best is None and level and b[3] - b[1] >= 0.4 * H and a >= 0.2 * typical:  # no speck nor dash is that big
            kept.append((b, m))
            continue
        if best is None:
            best = _fitting_neighbour(b, full, H, stacked=False)
        if best is not None:
            c = full[best][0]
            full[best][0] = np.array([min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])])
            full[best][1] += list(m)
    return [(b, m) for b, m in full] + kept


def _fitting_neighbour(b, full: list, H: float, stacked: bool) -> int | None:
    """The index of the digit in `full` nearest to box `b` (within half a digit height) that it
    fits one digit's box with; `stacked`: only one it lies over or under (overlapping in x)."""
    best, best_d = None, 0.5 * H
    for k, (c, _) in enumerate(full):
        if stacked and min(b[2], c[2]) - max(b[0], c[0]) < 0.3 * min(b[2] - b[0], c[2] - c[0]):
            continue
        dist = max(c[0] - b[2], b[0] - c[2], c[1] - b[3], b[1] - c[3], 0)
        u = [min(b[0], c[0]), min(b[1], c[1]), max(b[2], c[2]), max(b[3], c[3])]
        if dist <= best_d and u[2] - u[0] <= 1.3 * H and u[3] - u[1] <= 1.5 * H:
            best, best_d = k, dist
    return best


def _split_touching(digits: list, lab: np.ndarray, mask: np.ndarray, H: float) -> list:
    """Cut blobs much wider than the typical digit (neighbours whose strokes touch) into as many
    parts as their width holds, at the columns with the least ink near the even cuts; then blobs
    over 1.6 digit heights tall (a digit touching the one of the next row) likewise across."""
    # The wider digits set the scale (a page of narrow 1s must not cut its 0s).
    w_med = float(np.percentile([d[0][2] - d[0][0] for d in digits], 75))
    return _split_axis(_split_axis(digits, lab, 1, w_med, 1.7), lab, 0, H, 1.6)


def _split_axis(digits: list, lab: np.ndarray, axis: int, size: float, over: float) -> list:
    """Blobs longer along `axis` (1: x, 0: y) than `over` x `size`, cut into round(length / size)
    parts at the lines with the least ink within a quarter of `size` of the even cuts."""
    out = []
    for b, members in digits:
        length = b[2] - b[0] if axis == 1 else b[3] - b[1]
        parts = int(round(length / size))
        if length < over * size or parts < 2:
            out.append((b, members))
            continue
        x0, y0, x1, y1 = (int(v) for v in b)
        if isinstance(members, dict):  # a part of a blob already cut the other way
            ox, oy = members["origin"]
            own = members["mask"][y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            members = members["members"]
        else:
            own = np.isin(lab[y0:y1, x0:x1], members)
        profile = own.sum(1 - axis)
        cuts = [0]
        for k in range(1, parts):
            c = k * length / parts
            lo, hi = int(c - 0.25 * size), int(c + 0.25 * size) + 1
            cuts.append(lo + int(np.argmin(profile[lo:hi])))
        cuts.append(own.shape[axis])
        for a, e in zip(cuts[:-1], cuts[1:]):
            sub = np.zeros_like(own)
            if axis == 1:
                sub[:, a:e] = own[:, a:e]
            else:
                sub[a:e, :] = own[a:e, :]
            ys, xs = np.nonzero(sub)
            if len(ys) == 0:
                continue
            # the cut lines bound the part along the axis; its ink, across it
            x_a, x_e = (x0 + a, x0 + e) if axis == 1 else (x0 + xs.min(), x0 + xs.max() + 1)
            y_a, y_e = (y0 + a, y0 + e) if axis == 0 else (y0 + ys.min(), y0 + ys.max() + 1)
            out.append(
                (
                    np.array([x_a, y_a, x_e, y_e], dtype=np.float64),
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
