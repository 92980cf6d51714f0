"""BertAdam, reproducing the authors' optimiser (docs/authors_code.md,
"BertAdam").

Semantics (identical to the authors' ``BertAdam``), for every parameter ``p`` whose
``grad`` is not None::

    m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g*g
    update = m / (sqrt(v) + e) + wd * p        # no bias correction; decay on ALL params
    x = step / t_total                         # per-parameter step BEFORE increment
    lr_t = lr * schedule(x, warmup)            # -> lr is exactly 0 at the first update
    p -= lr_t * update ;  step += 1

- A parameter whose ``grad`` is None is skipped entirely (no decay) and its step counter
  lags behind the others; it then gets its own lr factor.
- ``t_total == -1`` means a constant lr.
- Gradient clipping is NOT done here (the tasks call ``clip_grad_norm_(params, 5.)``).

Implementation: instead of the authors' loop of small per-parameter kernels, the parameters
of one param group are bucketed by (step count, device, dtype) and each bucket is updated
with a handful of vectorised ``torch._foreach_*`` calls. In the common case (every parameter
got a grad every step) a group is a single bucket. The arithmetic per element is the same
sequence of operations as the authors' code.

State per parameter: ``step`` (python int), ``exp_avg``, ``exp_avg_sq`` (same dtype/device
as the parameter), so ``state_dict()``/``load_state_dict()`` resume exactly.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch.optim import Optimizer

__all__ = [
    "BertAdam",
    "SCHEDULES",
    "warmup_constant",
    "warmup_cosine",
    "warmup_linear",
]


def warmup_cosine(x, warmup=0.002):
    """Linear warmup, then cosine. (The authors' version calls ``torch.cos`` on a float and
    crashes; it is never used. This one uses ``math.cos``.)"""
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


def warmup_constant(x, warmup=0.002):
    """Linear warmup over ``warmup`` (fraction of t_total), then 1."""
    if x < warmup:
        return x / warmup
    return 1.0


def warmup_linear(x, warmup=0.002):
    """Triangular schedule: linear warmup to 1 at ``warmup``, then linear decay to 0 at
    ``x == 1`` and 0 afterwards. Written exactly like the authors' (so e.g.
    ``warmup_linear(1.0, 0.1) == -0.0`` and ``warmup_linear(1.1, 0.1) == 0`` (int))."""
    if x < warmup:
        return x / warmup
    return max((x - 1.0) / (warmup - 1.0), 0)


SCHEDULES = {
    "warmup_cosine": warmup_cosine,
    "warmup_constant": warmup_constant,
    "warmup_linear": warmup_linear,
}


class BertAdam(Optimizer):
    """The authors' BertAdam (Adam without bias correction, decoupled-style weight decay
    on all parameters, warmup/linear-decay schedule driven by per-parameter step counts).

    Args:
        params: iterable of parameters or param-group dicts.
        lr: base learning rate.
        warmup: fraction of ``t_total`` used for warmup; -1 means no warmup.
        t_total: total number of steps for the schedule; -1 means constant lr.
        schedule: one of ``SCHEDULES``.
        b1, b2: Adam betas. e: epsilon (added to ``sqrt(v)``).
        weight_decay: decay coefficient (applied only when > 0, to every parameter).
        max_grad_norm: accepted for signature compatibility; unused (as in the authors' code).
    """

    def __init__(self, params, lr, warmup=0.1, t_total=-1, schedule="warmup_linear",
                 b1=0.9, b2=0.999, e=1e-6, weight_decay=0.01, max_grad_norm=1.0):
        if not lr >= 0.0:
            raise ValueError("Invalid learning rate: {} - should be >= 0.0".format(lr))
        if schedule not in SCHEDULES:
            raise ValueError("Invalid schedule parameter: {}".format(schedule))
        if not 0.0 <= warmup < 1.0 and not warmup == -1:
            raise ValueError("Invalid warmup: {} - should be in [0.0, 1.0[ or -1".format(warmup))
        if not 0.0 <= b1 < 1.0:
            raise ValueError("Invalid b1 parameter: {} - should be in [0.0, 1.0[".format(b1))
        if not 0.0 <= b2 < 1.0:
            raise ValueError("Invalid b2 parameter: {} - should be in [0.0, 1.0[".format(b2))
        if not e >= 0.0:
            raise ValueError("Invalid epsilon value: {} - should be >= 0.0".format(e))
        defaults = dict(lr=lr, schedule=schedule, warmup=warmup, t_total=t_total,
                        b1=b1, b2=b2, e=e, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ schedule
    @staticmethod
    def _scheduled_lr(group, step):
        """lr used for a parameter whose step counter (before increment) is ``step``."""
        if group["t_total"] != -1:
            schedule_fct = SCHEDULES[group["schedule"]]
            return group["lr"] * schedule_fct(step / group["t_total"], group["warmup"])
        return group["lr"]

    def get_lr(self):
        """Current lr of every parameter (the lr its NEXT update would use), like the authors'.
        Returns ``[0]`` as soon as one parameter has no state yet (before its first update)."""
        lr = []
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if len(state) == 0:
                    return [0]
                lr.append(self._scheduled_lr(group, state["step"]))
        return lr

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            # (step, device, dtype) -> (params, grads, exp_avgs, exp_avg_sqs)
            buckets = defaultdict(lambda: ([], [], [], []))
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                ps, gs, ms, vs = buckets[(int(state["step"]), p.device, p.dtype)]
                ps.append(p)
                gs.append(grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])

            b1, b2, eps, wd = group["b1"], group["b2"], group["e"], group["weight_decay"]
            for (step, _, _), (ps, gs, ms, vs) in buckets.items():
                lr_scheduled = self._scheduled_lr(group, step)
                # m = b1*m + (1-b1)*g ;  v = b2*v + (1-b2)*g*g
                torch._foreach_mul_(ms, b1)
                torch._foreach_add_(ms, gs, alpha=1 - b1)
                torch._foreach_mul_(vs, b2)
                torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
                # update = m / (sqrt(v) + e)
                denom = torch._foreach_sqrt(vs)
                torch._foreach_add_(denom, eps)
                updates = torch._foreach_div(ms, denom)
                del denom
                # update += wd * p   (all parameters)
                if wd > 0.0:
                    torch._foreach_add_(updates, ps, alpha=wd)
                # p -= lr_t * update
                torch._foreach_mul_(updates, lr_scheduled)
                torch._foreach_sub_(ps, updates)
                del updates
                for p in ps:
                    self.state[p]["step"] += 1

        return loss
