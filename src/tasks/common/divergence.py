"""Stopping on a non-finite (NaN / inf) training loss without a host sync per step."""
from __future__ import annotations

from typing import Optional

import torch

from tasks.common import distributed

# How often (in steps) the training loop reads its non-finite-loss flag: one host sync per
# NONFINITE_CHECK_EVERY steps instead of one per step. After a NaN/inf loss the weights are
# poisoned by that step's update, but every checkpoint write is preceded by a check, so they
# are never saved; at most NONFINITE_CHECK_EVERY - 1 steps of compute are wasted.
NONFINITE_CHECK_EVERY = 20


class NonFiniteLoss(SystemExit):
    """Training stopped because a loss was NaN or infinite (exit status 1)."""


class NonFiniteLossWatch:
    """Remembers, on the device and without a host sync, the first batch of an epoch whose
    loss was not finite and that batch's dataset indices (`index` key); `check` reads it."""

    def __init__(self, device: torch.device):
        self.first_batch = torch.full((), -1, dtype=torch.long, device=device)
        self.indices: Optional[torch.Tensor] = None

    def update(self, loss: torch.Tensor, batch_number: int, indices) -> None:
        new = (self.first_batch < 0) & ~torch.isfinite(loss.detach()).all()
        self.first_batch = torch.where(new, batch_number, self.first_batch)
        if torch.is_tensor(indices):
            indices = indices.reshape(-1)
            if self.indices is None:
                self.indices = torch.full_like(indices, -1)
            if self.indices.shape == indices.shape:  # (drop_last: every batch has one size)
                self.indices = torch.where(new, indices, self.indices)

    def check(self, dist: distributed.DistInfo, epoch: int, epoch_start_step: int) -> None:
        """Raise NonFiniteLoss (on every rank) if any rank has seen a non-finite loss."""
        bad = (self.first_batch >= 0).float()
        if distributed.sum_over_ranks(dist, bad).item() == 0:
            return
        mine = None
        if self.first_batch.item() >= 0:
            batch = int(self.first_batch.item())
            indices = self.indices.tolist() if self.indices is not None else None
            mine = (dist.rank, batch, indices)
        found = [x for x in distributed.gather_objects(dist, mine) if x is not None]
        rank, batch, indices = min(found, key=lambda x: x[1])
        where = f" on rank {rank}" if dist.enabled else ""
        raise NonFiniteLoss(
            f"training stopped: the loss is not finite (NaN or inf) at epoch {epoch}, step "
            f"{epoch_start_step + batch + 1} (batch {batch} of the epoch){where}; dataset "
            f"indices of that batch: {indices}. Check those examples' inputs (features, "
            f"boxes, targets) and the learning rate. No checkpoint was written from the "
            f"diverged weights: BEST.pth, LAST.pth and resume.pth hold the last good state.")
