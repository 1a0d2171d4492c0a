"""MNIST from the four original IDX .gz files in `$DATA_DIR/mnist/`, decoded once into tensors."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from hybridlearn.core.download import ensure_files
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.core.loaders import SplitLoaders, seeded_split, tensor_loader
from hybridlearn.mnist.conf import MNIST_FILES, MNIST_MIRRORS, MNIST_TRAIN, VALUE_RANGES

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def read_idx_gz(path: str | Path) -> np.ndarray:
    """Decode one gzipped IDX file (magic 0x801 labels / 0x803 images) to a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def load_mnist(
    data_dir: str | Path,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    timeout: float | None = None,
) -> dict[str, torch.Tensor]:
    """Return uint8 images [N, 28, 28] and int64 labels for train and test."""
    folder = Path(data_dir).expanduser() / "mnist"
    urls = {name: [m.rstrip("/") + "/" + name for m in mirrors] for name in MNIST_FILES}
    paths = ensure_files(folder, MNIST_FILES, urls, what="MNIST", timeout=timeout)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        out[f"{split}_x"] = torch.from_numpy(read_idx_gz(paths[f"{prefix}-images-idx3-ubyte.gz"]).copy())
        out[f"{split}_y"] = torch.from_numpy(read_idx_gz(paths[f"{prefix}-labels-idx1-ubyte.gz"]).astype(np.int64))
    return out


def to_range(x: torch.Tensor, value_range: str, inplace: bool = False) -> torch.Tensor:
    """Float images in [0, 1] -> `value_range`: unit [0, 1] | tanh [-1, 1] (for GAN generators
    with a tanh output) | standard (MNIST mean/std). `inplace` overwrites `x` (fresh tensors)."""
    if value_range not in VALUE_RANGES:
        raise ConfigError(f"data.value_range must be one of {', '.join(VALUE_RANGES)} (got {value_range!r})")
    if value_range == "unit":
        return x
    x = x if inplace else x.clone()
    return x.mul_(2).sub_(1) if value_range == "tanh" else x.sub_(MNIST_MEAN).div_(MNIST_STD)


def background_value(value_range: str) -> float:
    """The value of a black (no ink) pixel in `value_range`."""
    return float(to_range(torch.zeros(()), value_range))


def to_float(images: torch.Tensor, value_range: str) -> torch.Tensor:
    """uint8 [N, H, W] -> float [N, 1, H, W] in the requested range."""
    return to_range(images.unsqueeze(1).float().div_(255.0), value_range, inplace=True)


class MNISTDataModule(SplitLoaders, L.LightningDataModule):
    """MNIST with a seeded train/val split of the 60k training images; the 10k test set is kept apart.

    `train_subset` / `test_subset` take the first N images (after the seeded split) so tests and
    debug runs stay fast on a CPU.
    """

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        eval_batch_size: int,
        val_size: int,
        value_range: str,
        train_subset: int | None,
        test_subset: int | None,
        split_seed: int,
        shuffle_seed: int | None,
        mirrors: Sequence[str],
        download_timeout: float | None,  # total seconds for all downloads (None: $HYBRIDLEARN_DOWNLOAD_TIMEOUT or 60)
        drop_last: bool,
    ):
        """Settings and their ranges: hybridlearn.mnist.conf.MNISTDataConfig (`data=mnist`)."""
        super().__init__()
        self.save_hyperparameters(ignore=["mirrors", "download_timeout"])
        self.data_dir, self.mirrors, self.timeout = (
            data_dir,
            list(mirrors),
            download_timeout,
        )
        self.batch_size, self.eval_batch_size, self.drop_last = (
            batch_size,
            eval_batch_size,
            drop_last,
        )
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.fold: tuple[list[int], list[int]] | None = None  # (train, test) indices of the CV pool

    def data_signature(self) -> dict[str, Any]:
        return {"input": (1, 28, 28), "classes": 10}

    # k-fold cross-validation (core.cv): the pool is the training images this module would use (the
    # 60k, or train_subset + its validation share); the 10k test set stays apart, unused
    def cv_groups(self, group_by: str | None) -> list[int]:
        if group_by is not None:
            raise ConfigError(f"cv.group_by={group_by}: MNIST's images have no groups; leave cv.group_by=null")
        return list(range(sum(len(v[0]) for k, v in self._split().items() if k in ("train", "val"))))

    def use_fold(self, train: Sequence[int], test: Sequence[int]) -> None:
        """Fit on `train` (a share val_size/60000 of it, seeded by split_seed, validates), test on `test`."""
        self.fold = (list(train), list(test))
        self.tensors = {}

    def prepare_data(self) -> None:
        # Fails before training starts: missing or corrupt files, with what to do.
        load_mnist(self.data_dir, self.mirrors, self.timeout) if not self.tensors else None

    def _split(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """train / val (the seeded split of the 60k training images, cut to train_subset) and test."""
        raw = load_mnist(self.data_dir, self.mirrors, self.timeout)
        hp = self.hparams
        x, y = to_float(raw["train_x"], hp.value_range), raw["train_y"]
        val_frac = hp.val_size / len(x)
        train_idx, val_idx = seeded_split(len(x), [1 - val_frac, val_frac], hp.split_seed)
        if hp.train_subset:
            train_idx = train_idx[: hp.train_subset]
            val_idx = val_idx[: max(1, hp.train_subset // 10)]
        test_x, test_y = to_float(raw["test_x"], hp.value_range), raw["test_y"]
        if hp.test_subset:
            test_x, test_y = test_x[: hp.test_subset], test_y[: hp.test_subset]
        return {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]), "test": (test_x, test_y)}

    def setup(self, stage: str | None = None) -> None:
        if self.tensors:
            return
        split = self._split()
        if self.fold is None:
            self.tensors = split
            return
        x = torch.cat([split["train"][0], split["val"][0]])
        y = torch.cat([split["train"][1], split["val"][1]])
        train, test = self.fold
        share = self.hparams.val_size / MNIST_TRAIN
        fit_idx, val_idx = seeded_split(len(train), [1 - share, share], self.hparams.split_seed)
        train_t = torch.as_tensor(train)
        self.tensors = {
            "train": (x[train_t[fit_idx]], y[train_t[fit_idx]]),
            "val": (x[train_t[val_idx]], y[train_t[val_idx]]),
            "test": (x[torch.as_tensor(test)], y[torch.as_tensor(test)]),
        }

    def _loader(self, split: str, train: bool):
        seed = self.hparams.shuffle_seed
        bs = self.batch_size if train else self.eval_batch_size
        return tensor_loader(
            *self.tensors[split],
            batch_size=bs,
            shuffle=train,
            seed=seed,
            drop_last=train and self.drop_last,
        )
