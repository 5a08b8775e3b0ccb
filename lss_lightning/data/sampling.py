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
is the epoch, the number of batches already trained on, and the batch size and number of processes that
cut them; a run resumed mid-epoch (after preemption) reads the rest of that epoch, not the epoch again
from the start. With the same batch size and processes it skips the batches done; with another batch size
(or number of processes) it works out which crops were read (every rank's share is known from the seed) and
deals the rest out again, so every crop of the epoch is still read exactly once (a larger batch size ends
that epoch in fewer steps); where the rest cannot be dealt out, it stops with the batch size to resume with.

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
        self._cut_before: tuple[int, int] | None = None  # (batch size, processes) of a resumed epoch
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

    def resume(
        self,
        epoch: int,
        batches_done: int,
        epoch_length: int | None = None,
        batch_size: int | None = None,
        world_size: int | None = None,
    ) -> None:
        """Continue epoch ``epoch`` after its first ``batches_done`` batches, or start the next one if the
        epoch was over (``epoch_length``: batches the trainer takes per epoch, default all); ``batch_size``
        and ``world_size``: those that cut the batches done (default: this sampler's)."""
        finished = batches_done >= min(self.batches, epoch_length or self.batches)
        self.set_epoch(epoch + 1 if finished else epoch)
        self.start_batch = 0 if finished else int(batches_done)
        before = (int(batch_size or self.batch_size), int(world_size or self.world_size))
        self._cut_before = None if finished or before == (self.batch_size, self.world_size) else before

    def shard(self) -> np.ndarray:
        return self.order()[self.rank :: self.world_size]

    def __len__(self) -> int:
        return self.batches

    def _rest_after(self, done: int, batch_size: int, world_size: int) -> list[list[int]]:
        """This rank's batches of the rest of the epoch after ``done`` batches cut with another batch size
        or number of processes: the crops not read yet, dealt out again into the batches still expected."""
        order = self.order()
        largest_share = -(-self.n // world_size)
        old_batches = -(-largest_share // batch_size)
        read = set()
        for r in range(world_size):
            shard = order[r::world_size]
            read.update(shard[: sum(batch_sizes(len(shard), old_batches, batch_size)[:done])].tolist())
        rest = np.array([j for j in order if j not in read], dtype=np.int64)
        expected = self.batches - done  # what the trainer still runs this epoch at most
        shares = [rest[r :: self.world_size] for r in range(self.world_size)]
        # the same number of batches on every rank (DDP), each at most batch_size and none empty; fewer than
        # the trainer expects just end the epoch early (a larger batch size needs fewer)
        batches = max(-(-len(s) // self.batch_size) for s in shares)
        if not 1 <= batches <= min(expected, *(len(s) for s in shares)):
            raise ValueError(
                f"resuming epoch {self.epoch} after {done} batches of {batch_size} crops on {world_size} "
                f"process(es): the {len(rest)} crops left cannot be dealt out in batches of at most "
                f"{self.batch_size} (data.batch_size) on {self.world_size} process(es) within the {expected} "
                f"batches the epoch has left; resume with data.batch_size={batch_size} (and as many "
                "processes) or ckpt_path=null"
            )
        return [b.tolist() for b in np.array_split(shares[self.rank], batches)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        shard = self.shard()
        start, skip = 0, self.start_batch
        self.start_batch = 0  # only the epoch being resumed starts late
        if skip and self._cut_before is not None:
            batches, self._cut_before = self._rest_after(skip, *self._cut_before), None
            for batch in batches:
                yield [(self.epoch, int(j)) for j in batch]
            return
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
        sampler = self.batch_sampler
        return {
            "epoch": sampler.epoch,
            "batches_done": int(done),
            "epoch_length": int(length),
            "batch_size": sampler.batch_size,
            "world_size": sampler.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(
            int(state["epoch"]),
            int(state["batches_done"]),
            state.get("epoch_length"),
            batch_size=state.get("batch_size"),
            world_size=state.get("world_size"),
        )
