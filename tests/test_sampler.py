"""The training sampler: whole shuffled global batches per epoch, split across ranks, exact
mid-epoch resume, and opt-in length bucketing that still visits every example once."""
import numpy as np
import pytest

from tasks.common.batching import trimmed_length
from tasks.common.distributed import DistInfo
from tasks.common.sampler import EpochSampler

SIZE, BATCH = 203, 8
LENGTHS = np.random.default_rng(1).integers(3, 21, SIZE)


def batches_of(sampler, epoch, start=0):
    sampler.set_epoch(epoch, start)
    flat = list(sampler)
    return [flat[i:i + sampler.local_batch] for i in range(0, len(flat), sampler.local_batch)]


def padded_tokens(batches):
    """Text positions computed after padding removal (each batch cut to its longest)."""
    return sum(len(b) * trimmed_length(int(LENGTHS[b].max()), 20) for b in batches)


@pytest.mark.parametrize("buckets", [0, 5])
def test_each_epoch_is_a_set_of_whole_batches_fixed_by_seed_and_epoch(buckets):
    make = lambda: EpochSampler(SIZE, BATCH, DistInfo(), 9595, LENGTHS, buckets)  # noqa: E731
    sampler = make()
    epoch0 = batches_of(sampler, 0)
    flat = [i for b in epoch0 for i in b]
    assert len(epoch0) == SIZE // BATCH and all(len(b) == BATCH for b in epoch0)
    assert len(set(flat)) == len(flat) == (SIZE // BATCH) * BATCH
    assert batches_of(make(), 0) == epoch0  # a fresh sampler: the same epoch
    assert batches_of(sampler, 1) != epoch0
    assert batches_of(sampler, 0, start=7) == epoch0[7:]  # resume skips finished batches


@pytest.mark.parametrize("buckets", [0, 5])
def test_ranks_split_each_global_batch(buckets):
    single = batches_of(EpochSampler(SIZE, BATCH, DistInfo(), 3, LENGTHS, buckets), 2)
    ranks = [batches_of(EpochSampler(SIZE, BATCH, DistInfo(rank=r, world_size=2), 3, LENGTHS,
                                     buckets), 2) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == single


def test_bucketing_keeps_the_examples_and_removes_padding():
    plain = batches_of(EpochSampler(SIZE, BATCH, DistInfo(), 0), 0)
    bucketed = batches_of(EpochSampler(SIZE, BATCH, DistInfo(), 0, LENGTHS, 5), 0)
    # the same examples (bucketing only regroups the epoch's permutation, window by window)
    assert sorted(i for b in bucketed for i in b) == sorted(i for b in plain for i in b)
    spread = [int(LENGTHS[b].max() - LENGTHS[b].min()) for b in bucketed]
    assert np.mean(spread) < 5  # random batches of 8 span about 12 tokens here
    assert padded_tokens(bucketed) < 0.8 * padded_tokens(plain)


def test_bucketing_needs_lengths():
    with pytest.raises(ValueError, match="length"):
        EpochSampler(SIZE, BATCH, DistInfo(), 0, None, 4)
    with pytest.raises(ValueError, match="divisible"):
        EpochSampler(SIZE, 6, DistInfo(world_size=4), 0)


def test_default_workers_share_the_cores_on_a_gpu():
    import torch
    from tasks.common.runtime import default_num_workers
    gpu = torch.device("cuda", 0)
    assert default_num_workers(torch.device("cpu"), 64) == 2
    assert default_num_workers(gpu, 16, 1) == 8      # capped
    assert default_num_workers(gpu, 16, 4) == 3      # 4 cores per process, one for training
    assert default_num_workers(gpu, 4, 8) == 2       # never fewer than 2
