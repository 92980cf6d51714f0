"""Precision policy: fp32 (the authors'), bf16 autocast, or fp16 autocast with a grad scaler.
Parameters and optimizer state stay fp32 in every mode."""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(device: torch.device, precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str):
    """A GradScaler for fp16 (its small exponent range needs loss scaling); None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
