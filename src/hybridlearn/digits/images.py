"""Digit images: any picture file to a grey page, and one cut cell to a model's input.

Preprocessing (`preprocess`):
  - `paper` (default, the reproduction): equal cells, resized to `size` x `size`, RGB averaged to
    grey, scaled to [0, 1], inverted where the manifest says so. Nothing else.
  - `clean`: as `paper`, then `border` of each cell cropped (ruled lines, neighbours' strokes),
    the paper's grey background subtracted and the contrast stretched, specks erased
    (`despeckle`), and the digit fitted into a 20/28 box and centred by its centre of mass, like
    MNIST.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hybridlearn.core.config import check_choice
from hybridlearn.core.errors import DataError
from hybridlearn.digits.conf import PREPROCESS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_grey(path: str | Path, what: str | None = None, max_side: int | None = None) -> np.ndarray:
    """Any image (grey, RGB, RGBA, palette) -> float32 [H, W] in [0, 1]: the mean of R, G, B.

    Transparent pixels are composited onto a background that contrasts with the opaque ink, so a
    digit drawn on a transparent canvas reads like one drawn on paper. With `max_side`, a larger
    image is shrunk while decoding (JPEG draft) or right after (box filter) so that its longest
    side is at most that: memory stays bounded by the file's own pixels, never a float copy.
    """
    from PIL import Image, UnidentifiedImageError

    name = what or str(path)
    try:
        with Image.open(path) as im:
            if max_side and max(im.size) > max_side:
                im.draft(im.mode, (max_side, max_side))  # JPEG: decode at 1/2, 1/4, 1/8 scale
                im.load()
                factor = -(-max(im.size) // max_side)
                if factor > 1:
                    im = (
                        im.reduce(factor)
                        if im.mode in ("L", "RGB", "RGBA", "LA", "I", "F")
                        else im.convert("RGBA").reduce(factor)
                    )
            im.load()
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{name}: image file not found ({path})") from None
    except Image.DecompressionBombError as e:  # refused by Pillow before decoding: memory stays bounded
        raise DataError(
            f"{name}: too large to read ({e}); scale the page down first, e.g. to 4000 px on its longest side"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{name}: cannot read image {path} ({type(e).__name__}: {e}); give a PNG/JPG file") from None
    grey = rgba[..., :3].mean(-1)
    if has_alpha:
        alpha = rgba[..., 3]
        if alpha.min() < 0.99:
            opaque = alpha > 0.5
            ink_level = float(grey[opaque].mean()) if opaque.any() else 0.0
            bg = 1.0 if ink_level < 0.5 else 0.0
            grey = grey * alpha + bg * (1 - alpha)
    return np.ascontiguousarray(grey, dtype=np.float32)


def dark_ink(grey: np.ndarray) -> bool:
    """Auto-detect: a light background (median above mid-grey) means dark ink."""
    return bool(np.median(grey) > 0.5)


def cell_bounds(n: int, length: int) -> list[tuple[int, int]]:
    """Edges of `n` equal cells over `length` pixels (rounded, so non-divisible sizes work)."""
    edges = [round(i * length / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


def slice_grid(grey: np.ndarray, rows: int, cols: int) -> list[np.ndarray]:
    """Row-major list of the rows*cols equal cells of a sheet."""
    h, w = grey.shape
    return [grey[r0:r1, c0:c1] for r0, r1 in cell_bounds(rows, h) for c0, c1 in cell_bounds(cols, w)]


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[H, W] float -> [h, w], bilinear with antialiasing (area-like when shrinking)."""
    return F.interpolate(img[None, None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0, 0]


def paper_cell(cell: np.ndarray, size: int, invert: bool) -> torch.Tensor:
    """The authors' preprocessing: resize the cell to size x size, grey in [0, 1], invert dark ink."""
    x = _resize(torch.from_numpy(np.ascontiguousarray(cell)), size, size).clamp_(0, 1)
    return 1 - x if invert else x


def drop_specks(x: torch.Tensor, min_mass: float) -> torch.Tensor:
    """Erase the blobs of ink (8-connected pixels > 0.2, with their faint rims) that hold less
    than `min_mass` of the cell's ink: dust, pen dots and the tips of a neighbour's strokes. Left
    in, they stretch the bounding box, so the digit comes out small and off-centre."""
    from scipy import ndimage

    lab, n = ndimage.label((x > 0.2).numpy(), structure=np.ones((3, 3)))
    if n < 2:
        return x
    mass = np.asarray(ndimage.sum(x.numpy(), lab, range(1, n + 1)))
    small = np.nonzero(mass < min_mass * mass.sum())[0] + 1
    if len(small) == 0:
        return x
    rim = ndimage.binary_dilation(np.isin(lab, small), structure=np.ones((3, 3))) & (lab == 0) | np.isin(lab, small)
    return x.masked_fill(torch.from_numpy(rim), 0.0)


def mnist_like(
    x: torch.Tensor, size: int, border: float = 0.08, box: float = 20 / 28, despeckle: float = 0.0
) -> torch.Tensor:
    """Light-ink cell [H, W] in [0, 1] -> [size, size] the way MNIST digits were made.

    Crop `border` (a fraction of each side), subtract the background (the median, i.e. paper
    grey) and stretch the ink to 1, erase specks holding less than `despeckle` of the ink (0 =
    keep all), fit the ink's bounding box into `box`*size keeping the aspect ratio, and put its
    centre of mass at the centre.
    """
    h, w = x.shape
    bh, bw = int(round(border * h)), int(round(border * w))
    x = x[bh : h - bh or None, bw : w - bw or None]
    bg = x.median()
    x = (x - bg).clamp_(min=0)
    peak = torch.quantile(x.flatten(), 0.995) if x.numel() > 1 else x.max()
    if peak <= 0.05:  # an empty cell: nothing to centre
        return torch.zeros(size, size)
    x = (x / peak).clamp_(0, 1)
    x = torch.where(x < 0.1, torch.zeros_like(x), x)  # speckle and paper texture
    if despeckle > 0:
        x = drop_specks(x, despeckle)
    ys, xs = torch.nonzero(x > 0.2, as_tuple=True)
    if len(ys) == 0:
        return torch.zeros(size, size)
    x = x[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    target = box * size
    scale = target / max(x.shape)
    nh, nw = max(1, int(round(x.shape[0] * scale))), max(1, int(round(x.shape[1] * scale)))
    x = _resize(x, nh, nw).clamp_(0, 1)
    canvas = torch.zeros(size + 2 * max(nh, nw), size + 2 * max(nh, nw))
    total = x.sum()
    cy = float((x.sum(1) * torch.arange(nh)).sum() / total) if total > 0 else nh / 2
    cx = float((x.sum(0) * torch.arange(nw)).sum() / total) if total > 0 else nw / 2
    off = max(nh, nw)
    top = int(round(off + (size - 1) / 2 - cy))
    left = int(round(off + (size - 1) / 2 - cx))
    canvas[top : top + nh, left : left + nw] = x
    return canvas[off : off + size, off : off + size].contiguous()


def preprocess_cell(
    cell: np.ndarray, size: int, invert: bool, preprocess: str = "paper", border: float = 0.08, despeckle: float = 0.0
) -> torch.Tensor:
    """One cell (grey [H, W] in [0, 1]) -> float [size, size] in [0, 1], light ink on black.
    `border` and `despeckle` apply to preprocess=clean (see `mnist_like`)."""
    if check_choice("data.preprocess", preprocess, PREPROCESS) == "paper":
        return paper_cell(cell, size, invert)
    x = torch.from_numpy(np.ascontiguousarray(cell))
    x = 1 - x if invert else x
    return mnist_like(x, size, border, despeckle=despeckle)
