"""The base of the datasets a task hands to the trainer, and the hooks the trainer calls on
them. Every hook is optional: the defaults here do nothing.

- `tokens`: the dataset's text tokenized once, a dict of arrays or tensors [N, L] by name
  (`input_ids`, `token_position`, `input_mask`, ...). With it the trainer knows each example's
  text length (`batching.text_lengths`): --lengthBuckets groups training batches by length
  and evaluation runs longest first. None: no lengths, both are skipped.
- `set_epoch(epoch)`: called before each training epoch's loader is built, also on a --resume
  in the middle of an epoch (e.g. retrieval draws its negatives from (seed, epoch, index)).
- `worker_init_fn(worker_id)`: called at the start of each DataLoader worker process of the
  training loader (e.g. to open files per process).
- `fingerprint()`: a digest of the examples, saved in resume.pth; --resume stops when the
  training set changed between stop and resume."""
from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
from torch.utils.data import Dataset


class TaskDataset(Dataset):
    tokens: Optional[dict] = None

    def set_epoch(self, epoch: int) -> None:
        """Prepare for training epoch `epoch` (default: nothing changes between epochs)."""

    def worker_init_fn(self, worker_id: int) -> None:
        """Per-worker setup of the training loader (default: none)."""

    def fingerprint(self) -> Optional[str]:
        """sha1 of the examples (default: of the tokenized text, in order; None without)."""
        ids = (self.tokens or {}).get("input_ids")
        if ids is None:
            return None
        array = ids.numpy() if hasattr(ids, "numpy") else np.asarray(ids)
        return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()
