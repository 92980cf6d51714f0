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
  training set changed between stop and resume.

`ImageTextDataset` is the dataset most tasks need: one sentence about one or more images per
example, the sentences tokenized once, the features read per item from the stores."""
from __future__ import annotations

import hashlib
import logging
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.common.readers import ImageLookup, filter_by_features, tokenize_texts

log = logging.getLogger(__name__)


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


UNLABELLED = -1  # the class of an unlabelled example: ignored by the loss and the metrics


class ImageTextDataset(TaskDataset):
    """Examples of one sentence (`text_key`) about the images named by `image_keys`. Examples
    whose images have no features are an error, or dropped when `subset` (--tiny/--fast read
    part of the feature files); `id_key` names an example in that error. With `classes`, the
    example's `label_key` value is its class (`labels`, UNLABELLED when it has none) and its
    training target; otherwise a subclass gives `target(index)`.

    Items: dict `index` int64, `input_ids`/`token_position`/`input_mask` [L] int64, `feats`
    [O, D] float32 ([N, O, D] for N images), `boxes` [O, 4] ([N, O, 4]), `target`."""

    def __init__(self, data: list[dict], feature_stores, tokenizer, split_name: str = "",
                 subset: bool = False, num_boxes: Optional[int] = 36,
                 image_keys: Sequence[str] = ("img_id",), text_key: str = "sent",
                 id_key: str = "question_id", what: str = "examples",
                 label_key: str = "label", classes: Optional[Sequence] = None):
        self.split_name = split_name
        self.image_keys = tuple(image_keys)
        self.images = ImageLookup(feature_stores, num_boxes)
        self.data = filter_by_features(list(data), self.images.__contains__, self.image_keys,
                                       split_name, subset, id_key)
        self.tokens = tokenize_texts(tokenizer, [d[text_key] for d in self.data])
        if classes is not None:
            self.labels = np.array([list(classes).index(d[label_key])
                                    if d.get(label_key) is not None else UNLABELLED
                                    for d in self.data], dtype=np.int64)
        log.info("split %s: %d %s", split_name, len(self.data), what)

    def __len__(self) -> int:
        return len(self.data)

    def target(self, index: int):
        """The training target of example `index` (an array or a number): its class."""
        return self.labels[index]

    def __getitem__(self, index: int) -> dict:
        datum = self.data[index]
        item = {"index": torch.tensor(index, dtype=torch.int64)}
        for name, arr in self.tokens.items():
            item[name] = torch.from_numpy(arr[index])
        found = [self.images.get(datum[key]) for key in self.image_keys]
        if len(found) == 1:
            feats, boxes = found[0]
        else:
            feats, boxes = np.stack([f for f, _ in found]), np.stack([b for _, b in found])
        item["feats"] = torch.from_numpy(feats)
        item["boxes"] = torch.from_numpy(boxes)
        item["target"] = torch.as_tensor(self.target(index))
        return item
