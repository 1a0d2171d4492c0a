"""Geographical Original of Music (UCI data set 315): 1059 tracks, MARSYAS audio features, latitude
and longitude of the music's country of origin. UCI publishes two files (`data.features`):

- default:   `default_features_1059_tracks.txt`, 68 features (the paper's);
- chromatic: `default_plus_chromatic_features_1059_tracks.txt`, 116 features (the 68 + chroma).

`load_gom` parses a file strictly (one-line `DataError` naming file, row and column for any bad
cell), `prepare_gom` splits it (or takes a cross-validation fold) and min-max scales it (scaling
fitted on the training split only) into a `GomData`, shared by the Lightning `GomDataModule` and the
vectorized grid trainer so both see identical tensors.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from hybridlearn.core.download import ensure_files, md5sum
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.io import atomic_output
from hybridlearn.core.loaders import SplitLoaders, seeded_split, tensor_loader
from hybridlearn.gom.conf import FEATURE_COLUMNS

log = logging.getLogger(__name__)

GOM_ZIP = "geographical+original+of+music.zip"
GOM_ZIP_URLS = ("https://archive.ics.uci.edu/static/public/315/geographical+original+of+music.zip",)
# Fewer rows than this in a split make the selection meaningless (and broke the k-NN baseline and
# the energies with a ZeroDivisionError); the real file has 635/212/212.
MIN_SPLIT_ROWS = 10
Fold = tuple[Sequence[int], Sequence[int]]  # (train rows, test rows) of a cross-validation fold


@dataclass(frozen=True)
class FeatureSet:
    """One of UCI's GOM files: `n_features` feature columns, then latitude and longitude."""

    file: str
    n_features: int
    md5: str | None  # None: not pinned (checked by shape only: 1059 rows of n_features + 2 columns)
    urls: tuple[str, ...] = ()  # direct copies tried before the UCI zip


FEATURE_SETS = {
    "default": FeatureSet(
        "default_features_1059_tracks.txt",
        FEATURE_COLUMNS["default"],
        "20e6d4572e36638530e981bfd85b7dbc",
        # The authors' course repository holds the exact file (same md5); UCI only serves a zip.
        (
            "https://raw.githubusercontent.com/scardenol/ai_2023/main/2.%20Hybrid%20supervised/Autoencoders/data/"
            "Geographical%20Original%20of%20Music/default_features_1059_tracks.txt",
        ),
    ),
    # In the UCI zip only (extracted from it when missing).
    "chromatic": FeatureSet(
        "default_plus_chromatic_features_1059_tracks.txt",
        FEATURE_COLUMNS["chromatic"],
        "95ab9b156caba3208915dc13c0d106d8",
    ),
}
GOM_TRACKS = 1059
GOM_FILE = FEATURE_SETS["default"].file
GOM_FEATURES = FEATURE_SETS["default"].n_features
GOM_COLUMNS = GOM_FEATURES + 2


# --------------------------------------------------------------------------------------------- files
def ensure_gom(data_dir: str | Path, features: str = "default") -> Path:
    """Path of `<data_dir>/gom/<the feature set's file>`, downloading it when missing (a direct copy,
    else the UCI zip, from which the one file is extracted and checked)."""
    fs = FEATURE_SETS[features]
    folder = Path(data_dir).expanduser() / "gom"
    path = folder / fs.file
    if path.exists():
        path = ensure_files(folder, {fs.file: fs.md5}, what="GOM data")[fs.file]
        _check_canonical_shape(path, fs)
        return path
    try:
        return ensure_files(folder, {fs.file: fs.md5}, {fs.file: fs.urls}, what="GOM data")[fs.file]
    except DataError as first:
        try:  # UCI publishes a zip: fetch it, extract the one file we need, check its md5
            zpath = ensure_files(folder, {GOM_ZIP: None}, {GOM_ZIP: GOM_ZIP_URLS}, what="GOM zip")[GOM_ZIP]
            with zipfile.ZipFile(zpath) as zf:
                member = next((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == fs.file), None)
                if member is None:
                    raise DataError(f"{zpath}: no {fs.file} inside the zip; delete it and retry")
                with atomic_output(path) as tmp:
                    tmp.write_bytes(zf.read(member))
                    if fs.md5 is not None and (got := md5sum(tmp)) != fs.md5:
                        raise DataError(f"{zpath}:{member}: md5 {got} != expected {fs.md5}")
            _check_canonical_shape(path, fs)
            return path
        except (DataError, OSError, zipfile.BadZipFile) as second:
            raise DataError(f"{first} (UCI zip: {second})") from None


def _check_canonical_shape(path: Path, fs: FeatureSet) -> None:
    """A UCI file without a pinned md5 must at least have every track (columns: checked by load_gom)."""
    if fs.md5 is None:
        with open(path, "rb") as f:
            rows = sum(1 for line in f if line.strip())
        if rows != GOM_TRACKS:
            raise DataError(
                f"{path}: {rows} rows, expected {GOM_TRACKS} (truncated or not the UCI file); "
                "delete it to download it again"
            )


def load_gom(path: str | Path, n_columns: int = GOM_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Parse the comma-separated file into (features [n, n_columns - 2], targets [n, 2] = lat, lon),
    float64.

    Every problem is a one-line DataError naming the file, the 1-based row and the 1-based column.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != n_columns:
            raise DataError(
                f"{path}: row {i}: expected {n_columns} comma-separated columns "
                f"({n_columns - 2} features, latitude, longitude), found {len(cells)}"
            )
        vals = []
        for j, c in enumerate(cells, start=1):
            try:
                v = float(c)
            except ValueError:
                raise DataError(f"{path}: row {i}, column {j} (1-based): not a number ({c.strip()[:30]!r})") from None
            if not math.isfinite(v):
                raise DataError(f"{path}: row {i}, column {j} (1-based): {c.strip()!r} is not a finite number")
            vals.append(v)
        rows.append(vals)
    if not rows:
        raise DataError(f"{path}: no data rows")
    a = np.asarray(rows, dtype=np.float64)
    lat, lon = a[:, -2], a[:, -1]
    bad = np.flatnonzero((np.abs(lat) > 90) | (np.abs(lon) > 180))
    if bad.size:
        r = int(bad[0])
        col = n_columns if abs(lat[r]) <= 90 else n_columns - 1
        raise DataError(
            f"{path}: row {r + 1}, column {col} (1-based): latitude/longitude out of range ({lat[r]}, {lon[r]})"
        )
    return a[:, : n_columns - 2], a[:, n_columns - 2 :]


# ------------------------------------------------------------------------------------------ scaling
@dataclass
class MinMax:
    """x_scaled = (x - lo) / (hi - lo), per column (paper eq. 1)."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, joint: bool = False) -> MinMax:
        lo, hi = x.min(0), x.max(0)
        if joint:  # authors' quirk: one min and one max over all columns
            lo, hi = np.full_like(lo, x.min()), np.full_like(hi, x.max())
        return cls(lo, hi)

    @property
    def span(self) -> np.ndarray:
        s = self.hi - self.lo
        return np.where(s > 0, s, 1.0)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.lo) / self.span

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return x * self.span + self.lo


def split_indices(
    n: int, seed: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), fold: Fold | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) row indices: one uniform random split with `fractions` (seeded), or for a
    cross-validation fold (train rows, test rows; core.cv) its test rows and its train rows split into
    train and inner validation in the ratio fractions[0]:fractions[1] (seeded by seed + 1)."""
    if fold is not None:
        rest, test = (np.asarray(f, dtype=np.int64) for f in fold)
        perm = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed + 1)).numpy()
        n_tr = int(round(fractions[0] / (fractions[0] + fractions[1]) * len(rest)))
        return rest[perm[:n_tr]], rest[perm[n_tr:]], test
    parts = seeded_split(n, list(fractions), seed)
    return tuple(p.numpy() for p in parts)  # type: ignore[return-value]


@dataclass(frozen=True)
class GomData:
    """The GOM data as every GOM model sees it: one split (seeded 60/20/20, or one CV fold), scaled
    with the training rows' min/max (paper eq. 1). n = rows of the split, F = n_features.

    x_train, x_val, x_test:    [n, F] scaled features, dtype data.dtype
    y_train, y_val, y_test:    [n, 2] scaled (latitude, longitude), dtype data.dtype
    yd_train, yd_val, yd_test: [n, 2] (latitude, longitude) in degrees, float64
    idx_train, idx_val, idx_test: [n] 0-based row numbers in `file` (numpy int64)
    x_scaler, y_scaler: the MinMax fitted on the training rows (numpy float64;
        `y_scaler.inverse(scaled)` gives degrees)
    """

    x_train: torch.Tensor
    x_val: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor
    y_val: torch.Tensor
    y_test: torch.Tensor
    yd_train: torch.Tensor
    yd_val: torch.Tensor
    yd_test: torch.Tensor
    idx_train: np.ndarray
    idx_val: np.ndarray
    idx_test: np.ndarray
    x_scaler: MinMax
    y_scaler: MinMax
    file: str
    features: str
    n_features: int

    def split(self, part: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, yd) of `part` = train | val | test."""
        return getattr(self, f"x_{part}"), getattr(self, f"y_{part}"), getattr(self, f"yd_{part}")


def check_rows(file: str | Path, sizes: Sequence[int], cv: bool) -> None:
    """One line when a split is too small to train, select and test on (a short data.file)."""
    if min(sizes) < MIN_SPLIT_ROWS:
        how = "this cross-validation fold" if cv else "data.split"
        raise DataError(
            f"{file}: {sum(sizes)} data rows give train/val/test splits of {'/'.join(map(str, sizes))} rows with "
            f"{how}; GOM needs at least {MIN_SPLIT_ROWS} rows in every split: use a file with more rows"
            + (" or fewer folds (cv.folds)" if cv else "")
        )


def load_features(data_dir: str | Path, features: str, path: str | Path | None) -> tuple[Path, np.ndarray, np.ndarray]:
    """(file, features, targets) of the feature set `features`, or of the file `path` in its format."""
    if path is not None and not Path(path).is_file():
        raise DataError(f"{path}: no such file (data.file must be a GOM-format text file)")
    file = Path(path) if path is not None else ensure_gom(data_dir, features)
    return (file, *load_gom(file, FEATURE_SETS[features].n_features + 2))


def prepare_gom(
    data_dir: str | Path,
    seed: int = 0,
    split: Sequence[float] = (0.6, 0.2, 0.2),
    n_features: int | None = None,
    target_scaling: str = "per_column",
    fold: Fold | None = None,
    dtype: torch.dtype = torch.float32,
    path: str | Path | None = None,
    features: str = "default",
) -> GomData:
    """Load, split and scale the feature set `features` (or the file `path` in its format), using its
    first `n_features` feature columns (None: all); `fold`: a cross-validation fold (split_indices).
    The arguments are data=gom's settings, checked there."""
    n_features = FEATURE_SETS[features].n_features if n_features is None else n_features
    file, x, y = load_features(data_dir, features, path)
    x = x[:, :n_features]  # authors' quirk n_features=67 drops the last feature column
    tr, va, te = split_indices(len(x), seed, split, fold)
    check_rows(file, (len(tr), len(va), len(te)), fold is not None)
    xs = MinMax.fit(x[tr])
    ys = MinMax.fit(y[tr], joint=target_scaling == "joint")
    parts = {}
    for name, idx in (("train", tr), ("val", va), ("test", te)):
        parts[f"idx_{name}"] = idx
        parts[f"x_{name}"] = torch.as_tensor(xs.transform(x[idx]), dtype=dtype)
        parts[f"y_{name}"] = torch.as_tensor(ys.transform(y[idx]), dtype=dtype)
        parts[f"yd_{name}"] = torch.as_tensor(y[idx], dtype=torch.float64)
    return GomData(**parts, x_scaler=xs, y_scaler=ys, file=str(file), features=features, n_features=n_features)


# ------------------------------------------------------------------------------------------- module
class GomDataModule(SplitLoaders, L.LightningDataModule):
    """Batches (x, y, y_degrees) of the scaled GOM data; `self.data` (a GomData) after setup().
    The settings (data=gom) are declared in gom.conf.GomDataConfig. In a k-fold cross-validation
    (core.cv, `cv.folds`) the pool is every track of the file; a fold's training rows are split into
    train and inner validation in the ratio data.split[0]:data.split[1]."""

    def __init__(
        self,
        data_dir: str,
        seed: int,
        features: str,
        n_features: int,
        split: Sequence[float],
        target_scaling: str,
        batch_size: int | None,
        shuffle: bool,
        dtype: str,
        file: str | None,
    ):
        super().__init__()
        split = [float(f) for f in split]  # plain floats: checkpoints load with weights_only=True
        self.save_hyperparameters()
        self.n_features = n_features
        self.data: GomData | None = None
        self.fold: Fold | None = None

    def data_signature(self) -> dict[str, Any]:
        return {"input": (self.n_features,)}

    def cv_groups(self, group_by: str | None) -> list[int]:
        if group_by is not None:
            raise ConfigError(f"cv.group_by={group_by}: GOM's tracks have no groups; leave cv.group_by=null")
        h = self.hparams
        return list(range(len(load_features(h.data_dir, h.features, h.file)[1])))

    def use_fold(self, train: Sequence[int], test: Sequence[int]) -> None:
        """Fit on `train` (its inner validation split carved as data.split says), test on `test`."""
        self.fold = (list(train), list(test))
        self.data = None

    def prepare_data(self) -> None:
        if self.hparams.file is None:
            ensure_gom(self.hparams.data_dir, self.hparams.features)

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            h = self.hparams
            self.data = prepare_gom(
                h.data_dir,
                h.seed,
                list(h.split),
                h.n_features,
                h.target_scaling,
                self.fold,
                getattr(torch, h.dtype),
                path=h.file,
                features=h.features,
            )

    def _loader(self, part: str, train: bool):
        assert self.data is not None, "call setup() first"
        x, y, yd = self.data.split(part)
        bs = self.hparams.batch_size if train and self.hparams.batch_size else len(x)
        return tensor_loader(
            x, y, yd, batch_size=bs, shuffle=train and self.hparams.shuffle and bs < len(x), seed=self.hparams.seed
        )
