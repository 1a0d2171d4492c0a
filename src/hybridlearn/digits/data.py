"""The paper's custom handwritten digits as a LightningDataModule: the scanned sheets of the
manifest (hybridlearn.digits.manifest) cut into digits (hybridlearn.digits.digitset), split
into train/val/test.

`python -m hybridlearn.digits.contact --contact-sheet out.png` draws every sliced cell with its label.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from hybridlearn.core.config import plain
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.loaders import EpochBatchSampler, SplitLoaders, TensorBatches, seeded_split, tensor_loader
from hybridlearn.digits.digitset import DigitSet, build_digits
from hybridlearn.digits.manifest import resolve_sheets
from hybridlearn.mnist.data import load_mnist, to_float, to_range

log = logging.getLogger(__name__)


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
        data_dir: str,
        manifest: str,
        extra_manifests: Sequence[str],
        size: int,
        preprocess: str,
        border: float,
        despeckle: float,
        value_range: str,
        batch_size: int,
        eval_batch_size: int,
        test_fraction: float,
        val_fraction: float,
        split_seed: int,
        shuffle_seed: int,
        test_writer: str | None,
        writer_groups: Mapping[str, str],
        drop_last: bool,
        download_timeout: float | None,
        mnist_mix: int,
    ):
        """Settings and their ranges: hybridlearn.digits.conf.DigitSheetsDataConfig (`data=digits`)."""
        super().__init__()
        extra_manifests = list(plain(extra_manifests))
        writer_groups = dict(plain(writer_groups))
        self.save_hyperparameters(ignore=["download_timeout"])
        self.timeout = download_timeout
        self.batch_size, self.eval_batch_size, self.drop_last = batch_size, eval_batch_size, drop_last
        self.digits: DigitSet | None = None
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.indices: dict[str, torch.Tensor] = {}
        self.fold: tuple[list[int], list[int]] | None = None  # (train, test) of a cross-validation

    def data_signature(self) -> dict[str, Any]:
        return {"input": (1, self.hparams.size, self.hparams.size), "classes": 10}

    # k-fold cross-validation (core.cv) over every digit of the sheets; cv.group_by=writer keeps a
    # writer's digits in one fold (cv.folds = the number of writers: leave-one-writer-out)
    def cv_groups(self, group_by: str | None) -> list[Any]:
        d = self.load()
        if group_by is None:
            return list(range(len(d.y)))
        if group_by != "writer":
            raise ConfigError(f"cv.group_by={group_by}: the digit sheets group by writer only (cv.group_by=writer)")
        return list(d.writer)

    def use_fold(self, train: Sequence[int], test: Sequence[int]) -> None:
        """Fit on `train` (its val_fraction validates), test on `test`."""
        self.fold = (list(train), list(test))
        self.tensors = {}

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
        if self.fold is not None:
            rest, test = torch.as_tensor(self.fold[0]), torch.as_tensor(self.fold[1])
        elif hp.test_writer is not None:
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


if __name__ == "__main__":  # the contact sheet's old command: say where it went
    print("error: the contact sheet is `python -m hybridlearn.digits.contact --contact-sheet OUT.png`", file=sys.stderr)
    sys.exit(2)
