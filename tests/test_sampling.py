"""Per-epoch sharding across DDP ranks: every index exactly once, equal step counts, exact resumption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss_lightning.data.crops import cube_symmetries
from lss_lightning.data.dataset import CropGeometry, FieldCropDataset
from lss_lightning.data.normalisation import FieldLayout
from lss_lightning.data.sampling import BlockSampler, ShardedBatchSampler, batch_sizes


def _epoch(n, batch, world, epoch, seed=3):
    """Each rank's batches of one epoch."""
    per_rank = []
    for rank in range(world):
        sampler = ShardedBatchSampler(n, batch, rank, world, seed=seed)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
        assert len(per_rank[-1]) == len(sampler)
    return per_rank


@pytest.mark.parametrize(
    ("n", "batch", "world"), [(9, 2, 2), (16, 4, 2), (17, 4, 3), (10, 3, 4), (5, 8, 2), (1, 1, 1)]
)
def test_every_index_once_per_epoch_and_equal_steps_on_every_rank(n, batch, world):
    for epoch in (0, 1):
        per_rank = _epoch(n, batch, world, epoch)
        items = [item for batches in per_rank for b in batches for item in b]
        assert sorted(i for _, i in items) == list(range(n))  # nothing repeated, nothing dropped
        assert {e for e, _ in items} == {epoch}
        assert len({len(batches) for batches in per_rank}) == 1  # DDP: the same number of steps
        assert all(1 <= len(b) <= batch for batches in per_rank for b in batches)


def test_order_is_shared_by_ranks_and_changes_with_the_epoch():
    a, b = ShardedBatchSampler(64, 4, 0, 2, seed=1), ShardedBatchSampler(64, 4, 1, 2, seed=1)
    assert np.array_equal(a.order(), b.order())
    first = a.order()
    a.set_epoch(1)
    assert not np.array_equal(first, a.order())


def test_batch_sizes_keep_full_batches_first():
    assert batch_sizes(10, 3, 4) == [4, 4, 2]
    assert batch_sizes(8, 3, 4) == [4, 2, 2]  # one item would be left for the last batch: share
    with pytest.raises(ValueError, match="batch_size >= 2"):
        batch_sizes(2, 3, 1)


def test_resumed_epoch_reads_only_the_remaining_batches():
    full = ShardedBatchSampler(40, 4, 1, 2, seed=5)
    full.set_epoch(3)
    expected = list(full)
    resumed = ShardedBatchSampler(40, 4, 1, 2, seed=5)
    resumed.resume(epoch=3, batches_done=2)
    assert list(resumed) == expected[2:]
    assert len(list(resumed)) == len(expected)  # only the resumed epoch starts late
    resumed.resume(epoch=3, batches_done=len(expected))  # an end-of-epoch checkpoint: the next epoch
    assert resumed.epoch == 4 and len(list(resumed)) == len(expected)
    resumed.resume(epoch=4, batches_done=2, epoch_length=2)  # the trainer takes 2 batches an epoch
    assert resumed.epoch == 5 and len(list(resumed)) == len(expected)


def test_blocks_cover_every_index_once():
    n, world = 11, 3
    blocks = [list(BlockSampler(n, rank, world)) for rank in range(world)]
    assert sorted(i for b in blocks for i in b) == list(range(n))
    with pytest.raises(ValueError, match="every process needs one"):
        BlockSampler(2, 0, 3)


def test_crop_of_an_epoch_is_the_same_in_any_process(tiny_store):
    """(epoch, index) fixes a training crop's corner and symmetry, whoever reads it."""

    def dataset():
        return FieldCropDataset(
            tiny_store.root,
            tiny_store.simulation_ids[:2],
            [FieldLayout("density", "scalar", 1)],
            [FieldLayout("velocity", "vector", 3)],
            CropGeometry(8, 6),
            random_crops=5,
            symmetries=cube_symmetries(),
            seed=7,
        )

    a, b = dataset(), dataset()
    torch.manual_seed(0)
    x = a[(2, 7)]
    torch.manual_seed(1)  # torch's generator plays no part
    y = b[(2, 7)]
    assert int(x["index"]) == 7 and int(x["sim"]) == 1
    assert torch.equal(x["corner"], y["corner"]) and torch.equal(x["input"], y["input"])
    corners = {tuple(a[(e, 7)]["corner"].tolist()) for e in range(6)}
    assert len(corners) > 1  # a new draw each epoch


@pytest.mark.parametrize(
    ("before", "after"), [((4, 1), (3, 1)), ((6, 1), (2, 1)), ((5, 2), (3, 2)), ((4, 2), (4, 1))]
)
def test_resuming_with_another_batch_size_reads_every_crop_exactly_once(before, after):
    """A run stopped after 3 batches of (batch size, processes) ``before`` and resumed with ``after``: the
    crops read before and after the stop are every crop of the epoch, once (the sampler once counted
    batches, so a changed batch size skipped or repeated crops)."""
    n, done = 61, 3
    (b0, w0), (b1, w1) = before, after
    read = []
    for rank in range(w0):
        first = ShardedBatchSampler(n, b0, rank, w0, seed=9)
        first.set_epoch(2)
        read += [j for batch in list(first)[:done] for _, j in batch]
    for rank in range(w1):
        resumed = ShardedBatchSampler(n, b1, rank, w1, seed=9)
        resumed.resume(2, done, batch_size=b0, world_size=w0)
        batches = list(resumed)
        assert len(batches) <= len(resumed) - done  # no more than the trainer still runs this epoch
        assert all(0 < len(batch) <= b1 for batch in batches)
        assert all(epoch == 2 for batch in batches for epoch, _ in batch)
        read += [j for batch in batches for _, j in batch]
    assert sorted(read) == list(range(n))


def test_a_larger_batch_size_that_cannot_finish_the_epoch_is_refused_naming_the_old_one():
    """After 3 batches of 4 of 61 crops, 49 are left; batches of 8 need 7 steps but the trainer, which
    counts 8 batches per epoch now, runs only 5 more: resuming mid-epoch that way would skip crops."""
    resumed = ShardedBatchSampler(61, 8, seed=1)
    resumed.resume(0, 3, batch_size=4)
    with pytest.raises(ValueError, match=r"resume with data.batch_size=4"):
        list(resumed)
