"""Which items each DDP rank reads in an epoch: every index exactly once, nothing padded or dropped.

Written by hand because torch's ``DistributedSampler`` either pads the last round with repeated
indices (``drop_last=False``: repeated training crops, and validation metrics that count some crops
twice) or drops the remainder (``drop_last=True``: crops never seen). The data module therefore builds
these samplers itself and the trainer runs with ``use_distributed_sampler=false``.

Training (``ShardedBatchSampler``): one permutation of range(n) per epoch, the same on every rank (numpy
generator seeded with (seed, epoch)); position j of the permutation goes to rank j % world_size; each
rank cuts its share into the same number of batches, S = ceil(ceil(n / W) / batch_size): full batches
first, then what is left (the last two batches share it when only one item would remain for the last),
so every rank takes the same number of optimizer steps, which DDP requires. Items are (epoch, index)
pairs, so the dataset can draw crop ``index`` of epoch ``epoch`` from a seed of its own, whichever rank
or worker process reads it.

Resuming (``ResumableLoader``): the training loader's state, which Lightning keeps in every checkpoint,
is the epoch and the number of batches already trained on; a run resumed mid-epoch (after preemption)
reads the rest of that epoch's batches, not the epoch again from the start.

Validation and test (``BlockSampler``): rank r reads block r of range(n) in order (blocks differ in size
by at most one item). Ranks may take different numbers of batches, which is fine outside training:
Lightning and torchmetrics reduce epoch metrics once, weighting each rank by its number of items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import DataLoader, Sampler


def batch_sizes(items: int, batches: int, batch_size: int) -> list[int]:
    """Sizes of ``batches`` batches holding ``items`` items: full batches, then the rest (see above)."""
    last = items - batch_size * (batches - 1)
    if last >= 1:
        return [batch_size] * (batches - 1) + [last]
    if batch_size < 2 or batches < 2:
        raise ValueError(
            f"{items} items cannot fill {batches} batches of at most {batch_size}; "
            "use data.batch_size >= 2 or a number of training crops divisible by the number of processes"
        )
    return [batch_size] * (batches - 2) + [(batch_size + 1) // 2, batch_size // 2]


class ShardedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of (epoch, index) for one rank; see the module docstring.

    n: items per epoch; batch_size: per rank; rank, world_size: this process among all; seed: of the
    permutations (must be equal on every rank); shuffle: False keeps the order 0..n-1 (tests).
    ``start_batch``: batches of the next epoch to skip (set when resuming an epoch half done).
    """

    def __init__(
        self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ):
        if n < world_size:
            raise ValueError(
                f"{n} training crops cannot be shared by {world_size} processes; "
                "raise data.train_crops_per_sim or use fewer processes"
            )
        self.n, self.batch_size = int(n), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.shuffle = int(seed), shuffle
        self.epoch = 0
        self.start_batch = 0
        largest_share = -(-self.n // self.world_size)  # ceil(n / W)
        self.batches = -(-largest_share // self.batch_size)
        self.sampler = self  # Lightning calls batch_sampler.sampler.set_epoch(epoch) before each epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        """This epoch's permutation of range(n), identical on every rank."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def resume(self, epoch: int, batches_done: int, epoch_length: int | None = None) -> None:
        """Continue epoch ``epoch`` after its first ``batches_done`` batches, or start the next one if the
        epoch was over (``epoch_length``: batches the trainer takes per epoch, default all)."""
        finished = batches_done >= min(self.batches, epoch_length or self.batches)
        self.set_epoch(epoch + 1 if finished else epoch)
        self.start_batch = 0 if finished else int(batches_done)

    def shard(self) -> np.ndarray:
        return self.order()[self.rank :: self.world_size]

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        shard = self.shard()
        start, skip = 0, self.start_batch
        self.start_batch = 0  # only the epoch being resumed starts late
        for i, size in enumerate(batch_sizes(len(shard), self.batches, self.batch_size)):
            if i >= skip:
                yield [(self.epoch, int(j)) for j in shard[start : start + size]]
            start += size


class BlockSampler(Sampler[int]):
    """Indices of block ``rank`` of range(n) split into ``world_size`` near-equal blocks, in order."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        if n < world_size:
            raise ValueError(
                f"{n} validation crops cannot be shared by {world_size} processes: every process needs one; "
                "use more validation simulations (data.split) or fewer processes"
            )
        self.indices = np.array_split(np.arange(n), world_size)[rank]

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self.indices)


class ResumableLoader(DataLoader):
    """A training DataLoader over a ``ShardedBatchSampler`` whose state resumes an epoch where it stopped.

    ``progress``: returns (batches of the current epoch training has completed, batches it takes per
    epoch), read when Lightning saves a checkpoint. Lightning calls ``state_dict`` / ``load_state_dict``.
    """

    def __init__(self, *args, progress: Callable[[], tuple[int, int]], **kwargs):
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict[str, int]:
        done, length = self._progress()
        return {"epoch": self.batch_sampler.epoch, "batches_done": int(done), "epoch_length": int(length)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(int(state["epoch"]), int(state["batches_done"]), state.get("epoch_length"))
