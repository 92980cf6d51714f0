"""NLVR2 data: the question-file reader and the two-image dataset (docs/authors_code.md,
"NLVR2").

Files are JSON lists of
    {"identifier": "train-10171-0-0", "img0": str, "img1": str, "label": 0 | 1,
     "sent": str, "uid": "nlvr2_train_0"}
`label` may be missing on unlabelled splits (hidden); such examples get label -1, which the
loss ignores (`CrossEntropyLoss(ignore_index=-1)`, as the authors).
"""
from __future__ import annotations

from pathlib import Path

from tasks.common.readers import DataFormatError, is_integer, load_splits, read_records
from tasks.common.task_dataset import UNLABELLED, ImageTextDataset

IGNORE_LABEL = UNLABELLED  # -1: CrossEntropyLoss(ignore_index=-1), as the authors


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


class NLVR2Dataset(ImageTextDataset):
    """Two images per example. Sentences are tokenized once at init.

    Items: those of `ImageTextDataset` with `feats` [2,36,D], `boxes` [2,36,4], `target` int64
    (the example's `label`, -1 when unlabelled).
    Keeps `data`, `identifiers`, `uids`, `labels` and `split_name`."""

    def __init__(self, data: list[dict], feature_stores, tokenizer, split_name: str = "",
                 subset: bool = False, num_boxes: int | None = 36):
        super().__init__(data, feature_stores, tokenizer, split_name, subset, num_boxes,
                         image_keys=("img0", "img1"), id_key="identifier", classes=(0, 1))
        self.identifiers = [d["identifier"] for d in self.data]
        self.uids = [d["uid"] for d in self.data]


def load_nlvr2_dataset(data_root, splits, tokenizer, tiny: bool = False, fast: bool = False,
                       cache_dir=None, fp16: bool = False, require_label: bool = False,
                       feat_dim: int | None = None) -> NLVR2Dataset:
    """Build the `NLVR2Dataset` for comma-separated `splits` from a data root; each split
    reads its own `nlvr2_imgfeat/{split}_obj36.tsv`. `require_label` (validation splits) makes
    an unlabelled example an error; `feat_dim` is checked against the stores; an empty split
    is an error."""
    from tasks.common.paths import DataRoot
    root = data_root if isinstance(data_root, DataRoot) else DataRoot(data_root)

    def build(data, stores, name, subset, num_boxes):
        return NLVR2Dataset(data, stores, tokenizer, split_name=name, subset=subset,
                            num_boxes=num_boxes)

    return load_splits(root, "nlvr2", splits, lambda path: load_nlvr2_split(path, require_label),
                       build, tiny=tiny, fast=fast, cache_dir=cache_dir, fp16=fp16,
                       feat_dim=feat_dim, what="examples")
