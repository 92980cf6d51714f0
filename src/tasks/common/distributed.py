"""torchrun/DDP setup and the few collective helpers the trainer needs.

A process started by torchrun has RANK/WORLD_SIZE/LOCAL_RANK in its environment; anything else
runs as a single process. Rank 0 alone writes files and logs."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                    int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_objects(info: DistInfo, obj):
    """Every rank's `obj`, in rank order (a list with one entry when not distributed)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(info: DistInfo, value):
    """Sum a stat tensor over ranks (identity in one process); float64 stays float64, any
    other type is summed as float32."""
    if not info.enabled or not torch.is_tensor(value):
        return value
    value = value.clone() if value.dtype == torch.float64 else value.clone().float()
    dist.all_reduce(value)
    return value


@contextlib.contextmanager
def rank_zero_first():
    """Run the block on rank 0 first and on the other ranks after it: rank 0 builds the caches
    (converted files, indices) that the others then read instead of racing to write them.
    One process: just the block."""
    active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    first = not active or dist.get_rank() == 0
    if not first:
        dist.barrier()  # wait for rank 0 to finish the block
    yield
    if active and first:
        dist.barrier()  # release the others
