"""NLVR2 data: the question-file reader and the two-image dataset (docs/authors_code.md,
"NLVR2").

Files are JSON lists of
    {"identifier": "train-10171-0-0", "img0": str, "img1": str, "label": 0 | 1,
     "sent": str, "uid": "nlvr2_train_0"}
`label` may be missing on unlabelled splits (hidden); such examples get label -1, which the
loss ignores (`CrossEntropyLoss(ignore_index=-1)`, as the authors).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tasks.common import readers
from tasks.common.task_dataset import TaskDataset
from tasks.common.readers import (DataFormatError, ImageLookup, check_feature_dim,
                                  check_not_empty, filter_by_features, is_integer, open_stores,
                                  read_records, split_list, stores_num_boxes, tokenize_texts)

log = logging.getLogger(__name__)

IGNORE_LABEL = -1


def load_nlvr2_split(path: str | Path, require_label: bool = False) -> list[dict]:
    """Read and validate one NLVR2 file; errors name the file, the index and the key."""
    keys = ("identifier", "img0", "img1", "sent", "uid")
    data = read_records(path, "examples", keys)
    for i, datum in enumerate(data):
        where = f"{path}: item {i}"
        for key in keys:
            if not isinstance(datum[key], str):
                raise DataFormatError(f"{where}: key {key!r} must be a string, "
                                      f"got {datum[key]!r}")
        for key in ("identifier", "img0", "img1"):
            if not datum[key]:
                raise DataFormatError(f"{where}: key {key!r} is empty")
        if "label" in datum:
            if not is_integer(datum["label"]) or datum["label"] not in (0, 1):
                raise DataFormatError(f"{where}: key 'label' must be 0 or 1, "
                                      f"got {datum['label']!r}")
        elif require_label:
            raise DataFormatError(f"{where} (identifier {datum['identifier']!r}): missing key "
                                  f"'label' (a validation split must be labelled)")
    return data


class NLVR2Dataset(TaskDataset):
    """Two images per example. Sentences are tokenized once at init.

    Items: dict `index` int64, `input_ids`/`token_position`/`input_mask` [L] int64,
    `feats` [2,36,D] float32, `boxes` [2,36,4] float32, `target` int64 (the example's `label`,
    -1 when unlabelled).
    Keeps `data`, `identifiers`, `uids`, `labels` and `split_name`."""

    def __init__(self, data: list[dict], feature_stores, tokenizer, split_name: str = "",
                 subset: bool = False, num_boxes: int | None = 36):
        self.split_name = split_name
        self.images = ImageLookup(feature_stores, num_boxes)
        self.data = filter_by_features(list(data), self.images.__contains__, ("img0", "img1"),
                                       split_name, subset, "identifier")
        self.identifiers = [d["identifier"] for d in self.data]
        self.uids = [d["uid"] for d in self.data]
        self.labels = np.asarray([d.get("label", IGNORE_LABEL) for d in self.data],
                                 dtype=np.int64)
        self.tokens = tokenize_texts(tokenizer, [d["sent"] for d in self.data])
        log.info("split %s: %d examples", split_name, len(self.data))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        datum = self.data[index]
        f0, b0 = self.images.get(datum["img0"])
        f1, b1 = self.images.get(datum["img1"])
        item = {"index": torch.tensor(index, dtype=torch.int64)}
        for name, arr in self.tokens.items():
            item[name] = torch.from_numpy(arr[index])
        item["feats"] = torch.from_numpy(np.stack([f0, f1]))
        item["boxes"] = torch.from_numpy(np.stack([b0, b1]))
        item["target"] = torch.tensor(self.labels[index], dtype=torch.int64)
        return item


def load_nlvr2_dataset(data_root, splits, tokenizer, tiny: bool = False, fast: bool = False,
                       cache_dir=None, fp16: bool = False, require_label: bool = False,
                       feat_dim: int | None = None) -> NLVR2Dataset:
    """Build the `NLVR2Dataset` for comma-separated `splits` from a data root; each split
    reads its own `nlvr2_imgfeat/{split}_obj36.tsv`. `require_label` (validation splits) makes
    an unlabelled example an error; `feat_dim` is checked against the stores; an empty split
    is an error."""
    from tasks.common.paths import DataRoot
    root = data_root if isinstance(data_root, DataRoot) else DataRoot(data_root)
    names = split_list(splits)
    if not names:
        raise ValueError("no split given")
    data, paths_topk, files, subset = [], [], [], False
    for split in names:
        files.append(root.nlvr2_json(split))
        data.extend(load_nlvr2_split(files[-1], require_label))
        topk = readers.feature_topk(split, tiny, fast, task="nlvr2")
        subset = subset or topk is not None
        paths_topk.append((root.nlvr2_features(split), topk))
    stores = open_stores(paths_topk, cache_dir=cache_dir, fp16=fp16)
    check_feature_dim(stores, feat_dim)
    dataset = NLVR2Dataset(data, stores, tokenizer, split_name=",".join(names), subset=subset,
                           num_boxes=stores_num_boxes(stores))
    check_not_empty(dataset, files, subset and bool(data), what="examples")
    return dataset
