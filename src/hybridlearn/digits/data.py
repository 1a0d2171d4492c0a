"""The paper's custom handwritten digits: scanned sheets cut into a grid of labelled cells.

A *manifest* (YAML) lists the sheets; each entry gives the image file, its grid (`rows` x `cols`
equal cells), where the labels come from and whether the ink must be inverted:

    sheets:
      - file: jpossaz.png        # relative to the manifest's folder
        rows: 10
        cols: 10
        labels: columns          # columns: cell (r, c) is digit c | rows: digit r
        invert: false            # | csv (+ labels_file) | a list / string of rows*cols digits
        writer: jpossaz          # optional: group for leave-one-writer-out (default: file stem)

Preprocessing (`preprocess`):
  - `paper` (default, the reproduction): equal cells, resized to `size` x `size`, RGB averaged to
    grey, scaled to [0, 1], inverted where the manifest says so. Nothing else.
  - `clean`: as `paper`, then `border` of each cell cropped (ruled lines, neighbours' strokes),
    the paper's grey background subtracted and the contrast stretched, specks erased
    (`despeckle`), and the digit fitted into a 20/28 box and centred by its centre of mass, like
    MNIST.

`python -m hybridlearn.digits.data --contact-sheet out.png` draws every sliced cell with its label.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader

from hybridlearn.core.config import plain
from hybridlearn.core.download import ensure_files
from hybridlearn.core.errors import ConfigError, DataError, HybridlearnError
from hybridlearn.core.io import atomic_output
from hybridlearn.core.loaders import EpochBatchSampler, SplitLoaders, TensorBatches, seeded_split, tensor_loader
from hybridlearn.digits.reader import read_page
from hybridlearn.mnist.data import VALUE_RANGES, load_mnist, to_float, to_range

log = logging.getLogger(__name__)

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
PREPROCESS = ("paper", "clean")
LAYOUTS = ("grid", "auto")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------- images


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
    if preprocess == "paper":
        return paper_cell(cell, size, invert)
    if preprocess == "clean":
        x = torch.from_numpy(np.ascontiguousarray(cell))
        x = 1 - x if invert else x
        return mnist_like(x, size, border, despeckle=despeckle)
    raise ConfigError(f"data.preprocess must be one of {', '.join(PREPROCESS)} (got {preprocess!r})")


# ----------------------------------------------------------------------------- manifest


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


def _labels_for(entry: Mapping[str, Any], name: str, rows: int, cols: int, folder: Path) -> list[int]:
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
        labels = _labels_for(entry, name, rows, cols, folder) if rows and cols else []
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
    labels = sheet.labels or _labels_for(sheet.extra["entry"], sheet.name, rows, cols, sheet.extra["folder"])
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
    if preprocess not in PREPROCESS:
        raise ConfigError(f"data.preprocess must be one of {', '.join(PREPROCESS)} (got {preprocess!r})")
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


# ----------------------------------------------------------------------------- datamodule


class MixedBatches(TensorBatches):
    """A batch of the sheets' digits plus `per_batch` MNIST training images drawn at random, so
    fine-tuning keeps seeing the many writers of MNIST while it learns the sheets' few."""

    def __init__(self, x, y, extra_x, extra_y, per_batch: int, seed: int):
        super().__init__(x, y)
        self.extra, self.per_batch = (extra_x, extra_y), per_batch
        self.gen = torch.Generator().manual_seed(seed + 7)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, y = super().__getitem__(idx)
        j = torch.randint(len(self.extra[1]), (self.per_batch,), generator=self.gen)
        return torch.cat([x, self.extra[0][j]]), torch.cat([y, self.extra[1][j]])


class DigitSheetsDataModule(SplitLoaders, L.LightningDataModule):
    """The scanned digit sheets as in-memory tensors with a seeded train/val/test split.

    Split (the paper's): `test_fraction` (0.2) of all digits for test, `val_fraction` (0.1) of the
    rest for validation: 610 -> 439 train / 49 val / 122 test. With `test_writer` set, every digit
    of that writer group is the test set and the others are split into train/val
    (leave-one-writer-out). `mnist_mix` > 0 adds that many MNIST training images to every
    training batch (validation and test stay the sheets' digits).
    """

    def __init__(
        self,
        data_dir: str = "./data",
        manifest: str | None = "builtin",
        extra_manifests: Sequence[str] = (),
        size: int = 32,
        preprocess: str = "paper",
        border: float = 0.08,
        despeckle: float = 0.0,
        value_range: str = "unit",
        batch_size: int = 32,
        eval_batch_size: int = 1024,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        split_seed: int = 42,
        shuffle_seed: int = 0,
        test_writer: str | None = None,
        writer_groups: Mapping[str, str] | None = None,
        drop_last: bool = False,
        download_timeout: float = 30.0,
        mnist_mix: int = 0,
    ):
        super().__init__()
        if isinstance(mnist_mix, bool) or not isinstance(mnist_mix, int) or mnist_mix < 0:
            raise ConfigError(
                f"data.mnist_mix must be an integer >= 0: MNIST images per training batch (got {mnist_mix!r})"
            )
        extra_manifests = list(plain(extra_manifests) or [])
        writer_groups = dict(plain(writer_groups) or {})
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ConfigError(f"data.size must be an integer >= 8 (got {size!r})")
        if preprocess not in PREPROCESS:
            raise ConfigError(f"data.preprocess must be one of {', '.join(PREPROCESS)} (got {preprocess!r})")
        if value_range not in VALUE_RANGES:
            raise ConfigError(f"data.value_range must be one of {', '.join(VALUE_RANGES)} (got {value_range!r})")
        if not 0 <= border < 0.5:
            raise ConfigError(f"data.border must be in [0, 0.5) (got {border})")
        if not 0 <= despeckle < 0.5:
            raise ConfigError(
                f"data.despeckle must be in [0, 0.5): the ink fraction below which a blob is erased (got {despeckle})"
            )
        if not 0 < test_fraction < 1 or not 0 <= val_fraction < 1:
            raise ConfigError(
                f"data.test_fraction must be in (0, 1) and data.val_fraction in [0, 1) "
                f"(got {test_fraction}, {val_fraction})"
            )
        self.save_hyperparameters(ignore=["download_timeout"])
        self.timeout = download_timeout
        self.batch_size, self.eval_batch_size, self.drop_last = batch_size, eval_batch_size, drop_last
        self.digits: DigitSet | None = None
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.indices: dict[str, torch.Tensor] = {}

    def load(self) -> DigitSet:
        hp = self.hparams
        if self.digits is None:
            sheets = resolve_sheets(hp.data_dir, hp.manifest, hp.extra_manifests, self.timeout)
            self.digits = build_digits(sheets, hp.size, hp.preprocess, hp.border, hp.writer_groups, hp.despeckle)
        return self.digits

    def prepare_data(self) -> None:
        hp = self.hparams
        resolve_sheets(hp.data_dir, hp.manifest, hp.extra_manifests, self.timeout)  # fail early

    def split_indices(self, d: DigitSet) -> dict[str, torch.Tensor]:
        hp = self.hparams
        n = len(d.y)
        if hp.test_writer is not None:
            if hp.test_writer not in d.writers:
                raise ConfigError(
                    f"data.test_writer={hp.test_writer!r} is not a writer group; choose one of {', '.join(d.writers)}"
                )
            is_test = torch.tensor([w == hp.test_writer for w in d.writer])
            test, rest = torch.nonzero(is_test).flatten(), torch.nonzero(~is_test).flatten()
        else:
            rest, test = seeded_split(n, [1 - hp.test_fraction, hp.test_fraction], hp.split_seed)
        # The validation split comes out of the training part (Keras' validation_split).
        order = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(hp.split_seed + 1))]
        n_val = int(round(hp.val_fraction * len(rest)))
        return {"train": order[n_val:], "val": order[:n_val] if n_val else order[:0], "test": test}

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        d = self.load()
        x = to_range(d.x, self.hparams.value_range)
        self.indices = self.split_indices(d)
        self.tensors = {k: (x[i], d.y[i]) for k, i in self.indices.items()}
        log.info("digit sheets: %s", ", ".join(f"{k} {len(v[1])}" for k, v in self.tensors.items()))
        if self.hparams.mnist_mix and not hasattr(self, "mnist"):
            raw = load_mnist(self.hparams.data_dir, timeout=self.timeout)
            self.mnist = (to_float(raw["train_x"], self.hparams.value_range), raw["train_y"])

    def _loader(self, split: str, train: bool):
        bs = self.batch_size if train else self.eval_batch_size
        x, y = self.tensors[split]
        if len(y) == 0:
            raise ConfigError(f"the {split} split of the digit sheets is empty; raise data.val_fraction or add sheets")
        if train and self.hparams.mnist_mix:
            seed = self.hparams.shuffle_seed
            ds = MixedBatches(x, y, *self.mnist, self.hparams.mnist_mix, seed)
            sampler = EpochBatchSampler(len(y), bs, True, seed, self.drop_last)
            return DataLoader(ds, sampler=sampler, batch_size=None, generator=torch.Generator().manual_seed(seed))
        return tensor_loader(
            x, y, batch_size=bs, shuffle=train, seed=self.hparams.shuffle_seed, drop_last=train and self.drop_last
        )


# ----------------------------------------------------------------------------- contact sheet


def contact_sheet(
    d: DigitSet, out: str | Path, scale: int = 2, overwrite: bool = True, highlight: Sequence[int] = ()
) -> Path:
    """Every digit with its label, one block per sheet in the sheet's own grid; `highlight` (digit
    indices, e.g. misclassified ones) are framed in red."""
    from PIL import Image, ImageDraw

    s = d.x.shape[-1] * scale
    cw, ch, gap, head = s + 4, s + 14, 16, 16
    blocks = []
    for i, sh in enumerate(d.sheets):
        idx = torch.nonzero(d.sheet == i).flatten()
        blocks.append((sh, idx))
    width = sum(b[0].cols * cw for b in blocks) + gap * (len(blocks) + 1)
    height = max(b[0].rows * ch for b in blocks) + head + gap
    img = Image.new("RGB", (width, height), (40, 40, 40))
    draw = ImageDraw.Draw(img)
    hl = set(int(i) for i in highlight)
    x0 = gap
    for sh, idx in blocks:
        draw.text((x0, 2), f"{sh.name} ({sh.writer})", fill=(255, 255, 0))
        for j in idx.tolist():
            r, c = d.cell[j].tolist()
            px = (d.x[j, 0].clamp(0, 1) * 255).to(torch.uint8).numpy()
            tile = Image.fromarray(px).resize((s, s), Image.NEAREST)
            ox, oy = x0 + c * cw, head + r * ch
            img.paste(tile, (ox + 2, oy + 12))
            draw.text((ox + 2, oy), str(int(d.y[j])), fill=(120, 255, 120))
            if j in hl:
                draw.rectangle((ox + 1, oy + 11, ox + s + 2, oy + s + 12), outline=(255, 0, 0), width=2)
        x0 += sh.cols * cw + gap
    with atomic_output(out, overwrite=overwrite) as tmp:
        img.save(tmp)
    return Path(out)


def main(argv: Sequence[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(prog="python -m hybridlearn.digits.data", description=__doc__.split("\n")[0])
    p.add_argument("--contact-sheet", required=True, metavar="OUT.png", help="write every sliced digit with its label")
    p.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "./data"))
    p.add_argument("--manifest", default="builtin", help="'builtin' (the paper's sheets) or a sheets YAML")
    p.add_argument("--extra-manifest", action="append", default=[], help="more sheets (repeatable)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--preprocess", choices=PREPROCESS, default="paper")
    p.add_argument("--border", type=float, default=0.08)
    p.add_argument(
        "--despeckle", type=float, default=0.0, help="clean: erase blobs with less than this fraction of the ink"
    )
    p.add_argument("--scale", type=int, default=2)
    a = p.parse_args(argv)

    try:
        sheets = resolve_sheets(a.data_dir, a.manifest, a.extra_manifest)
        d = build_digits(sheets, a.size, a.preprocess, a.border, despeckle=a.despeckle)
        out = contact_sheet(d, a.contact_sheet, scale=a.scale)
    except HybridlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = {s.name: len(s.labels) for s in sheets}
    print(f"{len(d.y)} digits ({', '.join(f'{k}: {v}' for k, v in counts.items())}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
