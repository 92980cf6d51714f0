"""Readers and checks that several tasks share: JSON data files, the image lookup over feature
stores, sentence tokenization, the --tiny/--fast subset limits and the checks that run when a
split is built. Every error names the file, the item and the key.
"""
from __future__ import annotations

import json
import logging
import numbers
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from lxrt.jsonfile import read_json as _read_json_file
from tasks.common import registry

log = logging.getLogger(__name__)

# the token arrays every dataset item and every tokenized split holds
TEXT_KEYS = ("input_ids", "token_position", "input_mask")


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names file, index and key."""


class MissingFeaturesError(LookupError):
    """A question's image has no features in the loaded feature files."""


def read_json(path: str | Path):
    """A data file's JSON (UTF-8, a byte-order mark allowed); errors name the file."""
    try:
        return _read_json_file(path, error=DataFormatError)
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None


def is_integer(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def feature_topk(split: str, tiny: bool = False, fast: bool = False, *,
                 task: str) -> int | None:
    """How many TSV lines to read for `split` of `task`, as its registry entry declares:
    --tiny (`tiny_images`: 200 images for VQA, 512 for GQA and NLVR2), --fast
    (`fast_images`: 5000), a split always cut (`split_images`: VQA minival, the first 5000
    lines, vqa_data.py:102); None = all lines. A split of `whole_splits` (GQA testdev) is
    always read whole. A non-None result means the user asked for a subset: questions whose
    image was not loaded are then dropped instead of raising."""
    entry = registry.get(task)
    if split in entry.whole_splits:
        if tiny or fast:  # as the authors: every image, so its score is comparable
            log.info("%s %s: all images are loaded (--tiny/--fast do not cut it)", task, split)
        return None
    if tiny:
        return entry.tiny_images
    if fast:
        return entry.fast_images
    return entry.split_images.get(split)


# ---------------------------------------------------------------------------------- reading
def read_records(path: str | Path, what: str, required: Sequence[str]) -> list[dict]:
    """A JSON list of objects that each have the `required` keys; errors name the file, the
    item index and the key."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of {what}, "
                              f"got {type(data).__name__}")
    for i, datum in enumerate(data):
        if not isinstance(datum, dict):
            raise DataFormatError(f"{path}: item {i}: expected an object, "
                                  f"got {type(datum).__name__}")
        for key in required:
            if key not in datum:
                raise DataFormatError(f"{path}: item {i}: missing key {key!r}")
    return data


def json_objects(path: str | Path, lines: Sequence[str], what: str,
                 error: type = DataFormatError) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a JSON-lines file; a line that is not
    JSON or not an object raises `error` naming the file and the line (`what`: what each
    object is, for the message)."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise error(f"{path}: line {n}: not valid JSON ({err})") from None
        if not isinstance(record, dict):
            raise error(f"{path}: line {n}: expected a JSON object ({what}), "
                        f"got {type(record).__name__}")
        yield n, record


def read_json_lines(path: str | Path, what: str, required: Sequence[str]) -> list[dict]:
    """A JSON-lines file of objects that each have the `required` keys (blank lines are
    skipped); errors name the file, the line and the key."""
    path, data = Path(path), []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None
    for n, record in json_objects(path, lines, f"one of the {what}"):
        missing = [key for key in required if key not in record]
        if missing:
            raise DataFormatError(f"{path}: line {n}: missing key {missing[0]!r}")
        data.append(record)
    return data



# ---------------------------------------------------------------------------- feature stores
def as_store_list(feature_stores) -> list:
    if feature_stores is None:
        return []
    if isinstance(feature_stores, Mapping) or hasattr(feature_stores, "img_ids"):
        return [feature_stores]
    return list(feature_stores)


class ImageLookup:
    """Finds an img_id in one of several feature stores (e.g. train2014 + val2014)."""

    def __init__(self, feature_stores, num_boxes: int | None = 36):
        self.stores = as_store_list(feature_stores)
        self.num_boxes = num_boxes
        self._where: dict[str, int] = {}

    def store_of(self, img_id: str) -> int | None:
        where = self._where.get(img_id)
        if where is not None:
            return where
        for k, store in enumerate(self.stores):
            if img_id in store:
                self._where[img_id] = k
                return k
        return None

    def __contains__(self, img_id) -> bool:
        return self.store_of(img_id) is not None

    def get(self, img_id: str) -> tuple[np.ndarray, np.ndarray]:
        k = self.store_of(img_id)
        if k is None:
            raise MissingFeaturesError(f"img_id {img_id!r} has no features")
        feats, boxes = self.stores[k][img_id]
        feats = np.asarray(feats, dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float32)
        if self.num_boxes is not None and (feats.shape[0] != self.num_boxes
                                           or boxes.shape != (self.num_boxes, 4)):
            raise ValueError(f"img_id {img_id!r}: features {feats.shape} / boxes {boxes.shape}, "
                             f"expected {self.num_boxes} boxes")
        return feats, boxes


def filter_by_features(data: list[dict], has_image, img_keys: Sequence[str], split_name: str,
                       subset: bool, id_key: str) -> list[dict]:
    """Keep the data whose images all have features. With `subset` (the user asked for
    --tiny/--fast/minival) the others are dropped with a logged count; otherwise a missing
    image is an error naming the img_id and the split."""
    kept, dropped = [], 0
    for datum in data:
        missing = next((datum[k] for k in img_keys if not has_image(datum[k])), None)
        if missing is None:
            kept.append(datum)
        elif subset:
            dropped += 1
        else:
            raise MissingFeaturesError(
                f"split {split_name!r}: img_id {missing!r} (used by {id_key} "
                f"{datum.get(id_key)!r}) is in none of the loaded feature files; "
                f"check that the feature TSVs match the question files")
    if dropped:
        log.info("split %s: dropped %d of %d examples whose images were not loaded "
                    "(subset of the features requested)", split_name, dropped, len(data))
    return kept


def tokenize_texts(tokenizer, sents: list[str]) -> dict[str, np.ndarray]:
    """`TEXT_KEYS` -> int64 [len(sents), L] arrays: every sentence tokenized once, when the
    dataset is built (never in `__getitem__` or the model)."""
    batch = tokenizer.encode_batch(list(sents))
    out = {}
    for name in TEXT_KEYS:
        arr = batch[name] if isinstance(batch, Mapping) else getattr(batch, name)
        arr = np.ascontiguousarray(np.asarray(arr), dtype=np.int64)
        if arr.ndim != 2 or arr.shape[0] != len(sents):
            raise ValueError(f"tokenizer returned {name} of shape {arr.shape} for "
                             f"{len(sents)} sentences")
        out[name] = arr
    return out



# ---------------------------------------------------------------------------------- building
def split_list(splits) -> list[str]:
    """'train,nominival' -> ['train', 'nominival'] (empty names dropped)."""
    if isinstance(splits, str):
        splits = splits.split(",")
    return [s.strip() for s in splits if s and s.strip()]


def open_stores(paths_topk: list[tuple[Path, int | None]], cache_dir=None, fp16=False):
    """Open one feature store per distinct TSV path; where several splits read the same file
    with different limits, the largest limit (None = all) wins."""
    from tasks.common.features import open_feature_store
    merged: dict[str, int | None] = {}
    order: list[str] = []
    for path, topk in paths_topk:
        key = str(path)
        if key not in merged:
            merged[key] = topk
            order.append(key)
        else:
            old = merged[key]
            merged[key] = None if (old is None or topk is None) else max(old, topk)
    return [open_feature_store(k, cache_dir=cache_dir, fp16=fp16, topk=merged[k])
            for k in order]


def stores_num_boxes(stores, default: int = 36) -> int | None:
    """The box count every store shares (36 for LXMERT features; grid features may differ),
    else `default`."""
    counts = {getattr(s, "num_boxes", default) for s in stores}
    return counts.pop() if len(counts) == 1 and None not in counts else default


def check_feature_dim(stores, expected: int | None) -> None:
    """Every store's feature size must be the model's `visual_feat_dim`; checked when the
    data is built, before the first training step fails on a shape mismatch."""
    if expected is None:
        return
    for store in stores:
        dim = getattr(store, "feat_dim", None)
        if dim is not None and dim != expected:
            where = getattr(store, "store_dir", "a feature store")
            raise DataFormatError(
                f"feature store {where} holds {dim}-d features but the model config expects "
                f"visual_feat_dim = {expected}; use matching features or a model config "
                f"(--modelConfig) with visual_feat_dim {dim}")


def check_not_empty(dataset, files, subset: bool, what: str = "questions") -> None:
    """An empty split is an error before training (else: a crash or a NaN score only after
    a full epoch); the message says whether the file(s) or the feature subset emptied it."""
    if len(dataset.data):
        return
    names = ", ".join(str(f) for f in files)
    if subset:
        why = (f"none of its {what} has an image among the features loaded (--tiny/--fast/"
               f"minival read only the first rows of the feature file)")
    else:
        why = f"the file(s) {names} hold no {what}"
    raise DataFormatError(f"split {dataset.split_name!r} is empty: {why}")


def load_splits(root, task: str, splits, read, build, *, tiny: bool = False,
                fast: bool = False, cache_dir=None, fp16: bool = False,
                feat_dim: int | None = None, feature_files=None, what: str = "questions"):
    """The dataset of comma-separated `splits` of `task` under the data root `root`: each
    split's `examples` file is read with `read(path) -> list of records`, its feature files
    (`feature_files(split) -> paths`, default its `features` file) opened with the task's
    --tiny/--fast limits, the feature size checked against the model's (`feat_dim`), and
    `build(records, stores, split_name, subset, num_boxes)` makes the dataset. An empty
    result is an error that says why."""
    names = split_list(splits)
    if not names:
        raise ValueError("no split given")
    data, paths_topk, files, subset = [], [], [], False
    for split in names:
        files.append(root.path(task, "examples", split))
        data.extend(read(files[-1]))
        topk = feature_topk(split, tiny, fast, task=task)
        subset = subset or topk is not None
        paths = feature_files(split) if feature_files else [root.path(task, "features", split)]
        paths_topk += [(path, topk) for path in paths]
    stores = open_stores(paths_topk, cache_dir=cache_dir, fp16=fp16)
    check_feature_dim(stores, feat_dim)
    dataset = build(data, stores, ",".join(names), subset, stores_num_boxes(stores))
    check_not_empty(dataset, files, subset and bool(data), what=what)
    return dataset
