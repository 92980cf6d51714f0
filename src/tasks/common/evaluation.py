"""What a task's evaluation gets from the trainer: an `EvalContext`.

The trainer owns the device, precision, DDP, the output folder and the loader settings; a task's
`evaluate` and `write_results` see only this small context. Its two loops cover every
evaluation: `predict` returns per-item outputs in dataset order (gathered from every rank), and
`sum_batches` returns statistics summed over every batch of every rank (pre-training's losses
and accuracies). A task with its own scoring loop (retrieval's caption x image matrix) uses
the fields: `device`, `autocast`, `dist`, `progress`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager

import torch

from tasks.common import distributed


@dataclass(frozen=True)
class EvalContext:
    device: torch.device
    autocast: Callable[[], ContextManager]  # the run's precision, as a context manager
    dist: distributed.DistInfo
    is_main: bool        # this process writes files (rank 0)
    progress: bool       # this process draws progress bars
    output: Path         # the run's folder
    # (model, dataset, step, desc) -> (this rank's dataset indices, `step`'s output per batch):
    # the trainer's evaluation loop (sharding, loader, device, no_grad, autocast)
    run_batches: Callable

    def predict(self, model, dataset, step: Callable, desc: str = "eval") -> dict:
        """Run `step(model, batch) -> dict of [B, ...] tensors` over `dataset` (sharded across
        ranks) and return the outputs concatenated on the CPU in dataset order."""
        indices, outputs = self.run_batches(model, dataset, step, desc)
        local = {}
        for key in (outputs[0] if outputs else {}):
            parts = torch.cat([out[key].detach() for out in outputs])
            local[key] = (parts.float() if parts.is_floating_point() else parts).cpu()
        gathered = distributed.gather_objects(self.dist, (indices, local))
        order = torch.tensor([i for idx, _ in gathered for i in idx], dtype=torch.long)
        merged = {k: torch.cat([part[k] for _, part in gathered]) for k in local}
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        return {k: v[inverse] for k, v in merged.items()}

    def sum_batches(self, model, dataset, step: Callable, desc: str = "eval") -> dict:
        """Run `step(model, batch) -> dict of tensors` (a batch's sums: losses, hits, counts)
        over `dataset` and return each summed over all batches of all ranks (float64)."""
        _, outputs = self.run_batches(model, dataset, step, desc)
        totals = {}
        for out in outputs:
            for key, value in out.items():
                value = value.detach().double()
                totals[key] = value if key not in totals else totals[key] + value
        return {k: distributed.sum_over_ranks(self.dist, v) for k, v in totals.items()}
