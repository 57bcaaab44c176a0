"""Whole batches out of in-memory uint8 images, resumable mid-epoch and split across ranks.

`BatchIndexSampler` yields one index tensor per batch, its order derived from (seed, epoch)
alone; `ResumableLoader` saves how many batches of the epoch are done, so a run resumed
anywhere sees the batches an uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_densenet.datasets import ArrayDataset


class InMemoryImages(Dataset):
    """uint8 images and int64 labels, indexed a whole batch at a time.

    `dataset[index]` takes a 1-D index tensor (or a slice) and returns
    `(images[index], labels[index])`: one gather per batch, not one call per image; with
    `with_index`, `(images[index], labels[index], index)`, for augmentation that follows
    each image from epoch to epoch (alternating flips).
    """

    def __init__(
        self, data: ArrayDataset, indices: np.ndarray | None = None, with_index: bool = False
    ) -> None:
        images, labels = data.images, data.labels
        if indices is not None:
            images, labels = images[indices], labels[indices]
        self.images = (
            torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        )
        self.labels = torch.from_numpy(np.ascontiguousarray(labels))
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Tensor | slice) -> tuple[Tensor, ...]:
        if self.with_index:
            return self.images[index], self.labels[index], torch.as_tensor(index)
        return self.images[index], self.labels[index]


def as_is(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return batch  # the default would turn the (images, labels) tuple into a list


class BatchIndexSampler(Sampler[Tensor]):
    """Yields index tensors of `batch_size`; with `shuffle`, a new order every epoch.

    The order of epoch `e` depends only on (`seed`, `e`). Lightning calls `set_epoch`
    before each epoch; without it, each pass over the sampler counts as the next epoch.

    With `world_size` > 1 (DDP) each process takes its share of every epoch's batches and
    all processes get the same number of batches (a process waiting for a batch its peers
    do not have would hang): training (`drop_last`) deals out whole batches of the one
    shared order round-robin, so shares are disjoint and a process trains on `batch_size`
    images per step; evaluation splits each group of `world_size * batch_size` images into
    `world_size` near-equal parts, so every image is counted exactly once, with no padding.

    `resume(epoch, batches_done)` makes the next pass over `epoch` start after its first
    `batches_done` batches (how `ResumableLoader` continues an epoch from a checkpoint).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None
        self.pass_epoch, self.pass_start = 0, 0  # of the pass in progress

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        self._resume = (epoch, batches_done)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_items // self.batch_size // self.world_size
        if self.world_size == 1:
            return -(-self.num_items // self.batch_size)
        return -(-self.num_items // (self.batch_size * self.world_size))

    def __iter__(self) -> Iterator[Tensor]:
        epoch, start = self.epoch, 0
        self.epoch += 1
        if self._resume is not None:
            if self._resume[0] == epoch:
                start = self._resume[1]
            self._resume = None
        self.pass_epoch, self.pass_start = epoch, start
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, "shuffle"))
            order = torch.randperm(self.num_items, generator=generator)
        else:
            order = torch.arange(self.num_items)
        for i in range(start, len(self)):
            yield self._batch(order, i)

    def _batch(self, order: Tensor, i: int) -> Tensor:
        bs, world = self.batch_size, self.world_size
        if self.drop_last:  # global batch i * world + rank of the shared order
            first = (i * world + self.rank) * bs
            return order[first : first + bs]
        if world == 1:
            return order[i * bs : (i + 1) * bs]
        # Group i of len(self) near-equal groups (each at most world * bs images), split in
        # `world` near-equal parts: no part is empty while there are world images per group.
        group = torch.tensor_split(order, len(self))[i]
        return torch.tensor_split(group, world)[self.rank]


# Not torchdata's StatefulDataLoader: tried, it resumes this sampler mid-epoch on its own, but
# Lightning 2.6 never calls its load_state_dict here (estimated_stepping_batches builds it before
# the restore, pytorch-lightning#20550): killed at step 15 and resumed, the weights differed.
class ResumableLoader(DataLoader):
    """The training DataLoader, whose place within an epoch goes into checkpoints.

    Lightning saves `state_dict()` of a training loader that has one and restores it with
    `load_state_dict()` before the resumed epoch starts (the data module's state carries it
    too, see `ImageDataModule.state_dict`), so a run resumed mid-epoch goes on with the next
    batch of the same order. `epoch` and `batch_index` name the batch most
    recently handed to the trainer (counted here, not in the sampler, which worker
    processes would run ahead of the trainer).
    """

    epoch: int | None = None
    batch_index: int = -1

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.sampler
        assert isinstance(sampler, BatchIndexSampler)
        for i, batch in enumerate(super().__iter__()):
            # The sampler's pass has started once the first batch exists.
            self.epoch, self.batch_index = sampler.pass_epoch, sampler.pass_start + i
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_done": self.batch_index + 1}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("epoch") is not None:
            sampler = self.sampler
            assert isinstance(sampler, BatchIndexSampler)
            sampler.resume(int(state_dict["epoch"]), int(state_dict["batches_done"]))


def epoch_seed(seed: int, epoch: int, stream: str, *more: int) -> int:
    # Independent, well-mixed seeds per (seed, epoch, purpose[, batch, rank]); plain
    # seed + epoch would make epoch 1 of seed 0 replay epoch 0 of seed 1.
    entropy = [seed, epoch, int.from_bytes(stream.encode(), "little"), *more]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)
