"""Batch helpers the trainer applies on the host before the device copy.

Padding removal: text is padded to 20 tokens, but most questions and captions are shorter.
Padded positions are masked out of every attention (their weight is exactly 0 in fp32) and no
output reads them, so cutting each batch to its longest real sentence changes nothing but the
work done. The length is rounded up to a multiple of `multiple` so a compiled model sees only a
few shapes."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from tasks.common.readers import TEXT_KEYS


def trimmed_length(longest: int, full: int, multiple: int = 4) -> int:
    """The text length to keep: the longest real sentence rounded up to `multiple`."""
    return min(full, max(multiple, -(-longest // multiple) * multiple))


def trim_text_padding(batch: dict, multiple: int = 4) -> dict:
    mask = batch.get("input_mask")
    if mask is None or mask.dim() != 2 or mask.device.type != "cpu":
        return batch
    full = mask.shape[1]
    longest = int(mask.sum(1).max()) if mask.numel() else full
    length = trimmed_length(longest, full, multiple)
    if length == full:
        return batch
    return {k: v[:, :length] if k in TEXT_KEYS and hasattr(v, "dim") and v.dim() == 2 else v
            for k, v in batch.items()}


def text_lengths(dataset) -> Optional[np.ndarray]:
    """Real tokens per example of anything holding its text tokenized once in `tokens` (see
    `task_dataset.TaskDataset`; also a retrieval split), else None."""
    tokens = getattr(dataset, "tokens", None)
    if not isinstance(tokens, dict) or "input_mask" not in tokens:
        return None
    return np.asarray(tokens["input_mask"]).sum(1)


def longest_first(indices: list[int], lengths: np.ndarray) -> list[int]:
    """`indices` reordered by text length, longest first (stable). Evaluation batches then
    hold sentences of nearly equal length, so trimming removes almost all padding; the first
    batch is the largest, so running out of memory shows at once."""
    idx = np.asarray(indices, dtype=np.int64)
    return idx[np.argsort(-lengths[idx], kind="stable")].tolist()


def split_batch(batch: dict, parts: int) -> list[dict]:
    """`batch` cut along its first dimension into `parts` equal micro-batches (--gradAccum;
    the trainer checks that `parts` divides the batch). Values without a first dimension of
    the batch's size (e.g. a scalar) go to every part unchanged."""
    if parts == 1:
        return [batch]
    size = len(batch["index"]) if "index" in batch else \
        next(len(v) for v in batch.values() if torch.is_tensor(v) and v.dim())
    step = size // parts

    def piece(value, k):
        sized = (torch.is_tensor(value) and value.dim() and len(value) == size) or \
            (isinstance(value, (list, tuple)) and len(value) == size)
        return value[k * step:(k + 1) * step] if sized else value
    return [{key: piece(v, k) for key, v in batch.items()} for k in range(parts)]
