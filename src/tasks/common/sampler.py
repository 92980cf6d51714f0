"""The training sampler: whole shuffled global batches per epoch, split across ranks, with an
exact mid-epoch restart and opt-in length bucketing."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Sampler

from tasks.common.batching import text_lengths
from tasks.common.distributed import DistInfo

log = logging.getLogger(__name__)


class EpochSampler(Sampler):
    """Shuffled indices, a new permutation per epoch from (seed, epoch), trimmed to whole global
    batches (drop_last), each global batch split across ranks. One process sees exactly what a
    shuffled DataLoader(drop_last=True) would; N processes share each global batch, so the
    schedule and the effective batch do not change with the number of GPUs. `start_batch`
    skips batches already done (exact mid-epoch resume).

    Length bucketing (opt-in, `bucket_batches` > 0 with per-example text `lengths`): each window
    of `bucket_batches` consecutive global batches of the permutation is sorted by length and cut
    into batches again, and the order of all batches is shuffled. Every example is still seen
    once per epoch; a batch then holds sentences of nearly equal length, so padding removal cuts
    it to about its own length instead of the longest of 32 random sentences."""

    def __init__(self, size: int, global_batch: int, info: DistInfo, seed: int,
                 lengths: Optional[np.ndarray] = None, bucket_batches: int = 0):
        if global_batch % info.world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by the "
                             f"{info.world_size} processes")
        if bucket_batches and (lengths is None or len(lengths) != size):
            raise ValueError("length bucketing needs one text length per example")
        self.size, self.global_batch, self.info, self.seed = size, global_batch, info, seed
        self.lengths = None if lengths is None else torch.as_tensor(np.asarray(lengths))
        self.bucket_batches = bucket_batches
        self.local_batch = global_batch // info.world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def num_batches(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def global_batches(self) -> torch.Tensor:
        """This epoch's global batches [num_batches, global_batch] of example indices."""
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        order = order[: self.num_batches * self.global_batch]
        if not self.bucket_batches:
            return order.view(self.num_batches, self.global_batch)
        window = self.bucket_batches * self.global_batch
        chunks = []
        for start in range(0, len(order), window):
            part = order[start:start + window]
            chunks.append(part[torch.sort(self.lengths[part], stable=True).indices])
        batches = torch.cat(chunks).view(self.num_batches, self.global_batch)
        return batches[torch.randperm(self.num_batches, generator=generator)]

    def __iter__(self):
        order = self.global_batches().view(self.num_batches, self.info.world_size,
                                           self.local_batch)
        return iter(order[self.start_batch:, self.info.rank].reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.num_batches - self.start_batch) * self.local_batch


def training_sampler(dataset, global_batch: int, info: DistInfo, seed: int,
                     length_buckets: int = 0) -> EpochSampler:
    """The EpochSampler of a training set; `length_buckets` > 0 buckets by text length when the
    dataset has pre-tokenized text (`tokens`), else it is ignored with a warning."""
    lengths = text_lengths(dataset) if length_buckets else None
    if length_buckets and lengths is None:
        log.warning("--lengthBuckets ignored: %s has no pre-tokenized text lengths",
                    type(dataset).__name__)
        length_buckets = 0
    elif length_buckets:
        log.info("length-bucketed batches: each window of %d batches sorted by text length",
                 length_buckets)
    sampler = EpochSampler(len(dataset), global_batch, info, seed, lengths, length_buckets)
    if sampler.num_batches == 0:
        raise SystemExit(f"training set has {len(dataset)} examples, fewer than one batch "
                         f"of {global_batch}")
    return sampler
