"""Geographical Original of Music (UCI data set 315): 1059 tracks, 68 MARSYAS audio features,
latitude and longitude of the music's country of origin.

`load_gom` parses the file strictly (one-line `DataError` naming file, row and column for any bad
cell), `prepare_gom` splits and min-max scales it (scaling fitted on the training split only) and is
shared by the Lightning `GomDataModule` and the vectorized grid trainer so both see identical tensors.
"""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch

from hybridlearn.core.download import ensure_files, md5sum
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.io import atomic_output
from hybridlearn.core.loaders import SplitLoaders, seeded_split, tensor_loader

log = logging.getLogger(__name__)

GOM_FILE = "default_features_1059_tracks.txt"
GOM_MD5 = "20e6d4572e36638530e981bfd85b7dbc"
GOM_COLUMNS = 70  # 68 features + latitude + longitude
GOM_FEATURES = 68
GOM_URLS = [
    # The authors' course repository holds the exact file (same md5); UCI only serves a zip.
    "https://raw.githubusercontent.com/scardenol/ai_2023/main/2.%20Hybrid%20supervised/Autoencoders/data/"
    "Geographical%20Original%20of%20Music/default_features_1059_tracks.txt",
]
GOM_ZIP = "geographical+original+of+music.zip"
GOM_ZIP_URLS = ["https://archive.ics.uci.edu/static/public/315/geographical+original+of+music.zip"]


# --------------------------------------------------------------------------------------------- files
def ensure_gom(data_dir: str | Path) -> Path:
    """Path of `<data_dir>/gom/default_features_1059_tracks.txt`, downloading it when missing."""
    folder = Path(data_dir).expanduser() / "gom"
    path = folder / GOM_FILE
    if path.exists():
        return ensure_files(folder, {GOM_FILE: GOM_MD5}, what="GOM data")[GOM_FILE]
    try:
        return ensure_files(folder, {GOM_FILE: GOM_MD5}, {GOM_FILE: GOM_URLS}, what="GOM data")[GOM_FILE]
    except DataError as first:
        try:  # UCI publishes a zip: fetch it, extract the one file we need, check its md5
            zpath = ensure_files(folder, {GOM_ZIP: None}, {GOM_ZIP: GOM_ZIP_URLS}, what="GOM zip")[GOM_ZIP]

            with zipfile.ZipFile(zpath) as zf:
                member = next((n for n in zf.namelist() if n.endswith(GOM_FILE)), None)
                if member is None:
                    raise DataError(f"{zpath}: no {GOM_FILE} inside the zip; delete it and retry")
                with atomic_output(path) as tmp:
                    tmp.write_bytes(zf.read(member))
                    if (got := md5sum(tmp)) != GOM_MD5:
                        raise DataError(f"{zpath}:{member}: md5 {got} != expected {GOM_MD5}")
            return path
        except (DataError, OSError, zipfile.BadZipFile) as second:
            raise DataError(f"{first} (UCI zip: {second})") from None


def load_gom(path: str | Path, n_columns: int = GOM_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Parse the comma-separated file into (features [n, 68], targets [n, 2] = lat, lon), float64.

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
                f"(68 features, latitude, longitude), found {len(cells)}"
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
        raise DataError(f"{path}: row {r + 1}, column {col} (1-based): latitude/longitude out of range ({lat[r]}, {lon[r]})")
    return a[:, : n_columns - 2], a[:, n_columns - 2 :]


# ------------------------------------------------------------------------------------------ scaling
@dataclass
class MinMax:
    """x_scaled = (x - lo) / (hi - lo), per column (paper eq. 1)."""

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, joint: bool = False) -> "MinMax":
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


def kfold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint folds covering range(n) after one seeded shuffle (sizes differ by at most 1)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return [np.sort(f) for f in np.array_split(order, k)]


def split_indices(
    n: int, seed: int, fractions: Sequence[float] = (0.6, 0.2, 0.2), cv_folds: int = 0, fold: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) row indices.

    cv_folds == 0: one uniform random split with `fractions` (seeded).
    cv_folds == k: test = fold `fold` of a seeded k-fold partition; the other rows are split into
    train/val in the ratio fractions[0]:fractions[1].
    """
    if cv_folds:
        folds = kfold_indices(n, cv_folds, seed)
        test = folds[fold]
        rest = np.concatenate([f for i, f in enumerate(folds) if i != fold])
        f_tr = fractions[0] / (fractions[0] + fractions[1])
        perm = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed + 1 + fold)).numpy()
        n_tr = int(round(f_tr * len(rest)))
        return rest[perm[:n_tr]], rest[perm[n_tr:]], test
    parts = seeded_split(n, list(fractions), seed)
    return tuple(p.numpy() for p in parts)  # type: ignore[return-value]


def check_split(fractions: Sequence[float], cv_folds: int, fold: int) -> None:
    if len(fractions) != 3 or any(not isinstance(f, (int, float)) or f <= 0 for f in fractions):
        raise ConfigError(f"data.split must be three positive fractions train,val,test (got {list(fractions)})")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"data.split must sum to 1 (got {list(fractions)} = {sum(fractions)})")
    if not isinstance(cv_folds, int) or cv_folds < 0 or cv_folds == 1:
        raise ConfigError(f"data.cv_folds must be 0 (no cross-validation) or an integer >= 2 (got {cv_folds!r})")
    if cv_folds and not (isinstance(fold, int) and 0 <= fold < cv_folds):
        raise ConfigError(f"data.fold must be an integer in [0, {cv_folds - 1}] (got {fold!r})")


def prepare_gom(
    data_dir: str | Path,
    seed: int = 0,
    split: Sequence[float] = (0.6, 0.2, 0.2),
    n_features: int = GOM_FEATURES,
    target_scaling: str = "per_column",
    cv_folds: int = 0,
    fold: int = 0,
    dtype: torch.dtype = torch.float32,
    path: str | Path | None = None,
) -> dict[str, Any]:
    """Load, split and scale. Returns tensors x_/y_{train,val,test} (scaled), raw degree targets
    yd_{train,val,test}, index arrays and the fitted scalers (numpy, float64)."""
    check_split(split, cv_folds, fold)
    if not isinstance(n_features, int) or not 1 <= n_features <= GOM_FEATURES:
        raise ConfigError(f"data.n_features must be an integer in [1, {GOM_FEATURES}] (got {n_features!r})")
    if target_scaling not in ("per_column", "joint"):
        raise ConfigError(f"data.target_scaling must be per_column or joint (got {target_scaling!r})")
    if path is not None and not Path(path).is_file():
        raise DataError(f"{path}: no such file (data.file must be a GOM-format text file)")
    file = Path(path) if path is not None else ensure_gom(data_dir)
    x, y = load_gom(file)
    x = x[:, :n_features]  # authors' quirk n_features=67 drops the last feature column
    tr, va, te = split_indices(len(x), seed, split, cv_folds, fold)
    xs = MinMax.fit(x[tr])
    ys = MinMax.fit(y[tr], joint=target_scaling == "joint")
    out: dict[str, Any] = {"x_scaler": xs, "y_scaler": ys, "file": str(file), "n_features": n_features}
    for name, idx in (("train", tr), ("val", va), ("test", te)):
        out[f"idx_{name}"] = idx
        out[f"x_{name}"] = torch.as_tensor(xs.transform(x[idx]), dtype=dtype)
        out[f"y_{name}"] = torch.as_tensor(ys.transform(y[idx]), dtype=dtype)
        out[f"yd_{name}"] = torch.as_tensor(y[idx], dtype=torch.float64)
    return out


# ------------------------------------------------------------------------------------------- module
class GomDataModule(SplitLoaders, L.LightningDataModule):
    """Batches (x, y, y_degrees) of the scaled GOM data.

    batch_size: null = full batch (the paper's gradient descent); an int = minibatches (hybrid).
    target_scaling: per_column (paper) | joint (authors' code: one min/max for lat and lon).
    n_features: 68 (paper) | 67 (authors' code read only columns 0-66).
    cv_folds/fold: k-fold cross-validation (test = one fold), 0 = the 60/20/20 split.
    file: a GOM-format file to use instead of $DATA_DIR/gom/default_features_1059_tracks.txt
        (no md5 check; 70 comma-separated numeric columns).
    """

    def __init__(
        self,
        data_dir: str = "./data",
        seed: int = 0,
        split: Sequence[float] = (0.6, 0.2, 0.2),
        n_features: int = GOM_FEATURES,
        target_scaling: str = "per_column",
        batch_size: int | None = None,
        shuffle: bool = True,
        cv_folds: int = 0,
        fold: int = 0,
        dtype: str = "float32",
        file: str | None = None,
    ):
        super().__init__()
        split = [float(f) for f in split]  # plain floats: checkpoints load with weights_only=True
        self.save_hyperparameters()
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"data.dtype must be float32 or float64 (got {dtype!r})")
        check_split(list(split), cv_folds, fold)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"data.batch_size must be null (full batch) or a positive integer (got {batch_size!r})")
        self.n_features = n_features
        self.d: dict[str, Any] | None = None

    def prepare_data(self) -> None:
        if self.hparams.file is None:
            ensure_gom(self.hparams.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.d is None:
            h = self.hparams
            self.d = prepare_gom(
                h.data_dir, h.seed, list(h.split), h.n_features, h.target_scaling, h.cv_folds, h.fold,
                getattr(torch, h.dtype), path=h.file,
            )

    def _loader(self, part: str, train: bool):
        assert self.d is not None, "call setup() first"
        x, y, yd = self.d[f"x_{part}"], self.d[f"y_{part}"], self.d[f"yd_{part}"]
        bs = self.hparams.batch_size if train and self.hparams.batch_size else len(x)
        return tensor_loader(x, y, yd, batch_size=bs, shuffle=train and self.hparams.shuffle and bs < len(x),
                             seed=self.hparams.seed)
