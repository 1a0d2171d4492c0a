"""In-memory batch loaders: whole batches are sliced from resident tensors (no per-sample work),
and the shuffle order is a function of (seed, epoch) so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochBatchSampler(Sampler[torch.Tensor]):
    """Yields index tensors of one batch each. Lightning calls `set_epoch` every epoch."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False):
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        stop = self.n - self.n % self.batch_size if self.drop_last else self.n
        for i in range(0, stop, self.batch_size):
            yield order[i : i + self.batch_size]

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)


class TensorBatches(Dataset):
    """`ds[index_tensor]` returns the whole batch at once."""

    def __init__(self, *tensors: torch.Tensor):
        if len({len(t) for t in tensors}) != 1:
            raise ValueError("all tensors must have the same first dimension")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t[idx] for t in self.tensors)


def tensor_loader(
    *tensors: torch.Tensor,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    ds = TensorBatches(*tensors)
    sampler = EpochBatchSampler(len(ds), batch_size, shuffle, seed, drop_last)
    # batch_size=None: the sampler already yields whole batches.
    # A private generator: creating the iterator draws a base seed from it, not from the global
    # RNG, so resuming (which creates the iterator at a different moment) leaves the global
    # stream, i.e. dropout masks and noise, exactly as in an uninterrupted run.
    return DataLoader(
        ds,
        sampler=sampler,
        batch_size=None,
        num_workers=0,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Uniform random split of range(n) into parts with the given fractions (last takes the rest)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [int(round(f * n)) for f in fractions[:-1]]
    sizes.append(n - sum(sizes))
    return list(torch.split(order, sizes))


class SplitLoaders:
    """Mixin for a LightningDataModule: the four dataloaders from one `_loader(split, train)`
    (predict uses the test split). Put it before LightningDataModule in the bases."""

    def _loader(self, split: str, train: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)
