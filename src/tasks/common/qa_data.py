"""What VQA and GQA (and the VQA-like easy-VQA) share on the data side: the question-file reader,
the answer table, the soft-score dataset and the --tiny/--fast/minival image limits.

Question files are JSON lists of data (reference.md §3.1-3.2):
    {"img_id": str, "question_id": int (VQA) | str (GQA), "sent": str,
     "label": {answer: score}   # absent on unlabelled splits (VQA test, GQA submit)
     ...}                       # other keys (answer_type, question_type) are kept as they are
"""
from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from lxrt.jsonfile import read_json as _read_json
from tasks.common.task_dataset import TaskDataset

logger = logging.getLogger(__name__)

# --tiny / --fast image counts (vqa_data.py:18-19 uses 200 for VQA; GQA and NLVR2 keep 512)
TINY_IMG_NUM = {"vqa": 200, "gqa": 512, "nlvr2": 512, "easyvqa": 200}
FAST_IMG_NUM = 5000
MINIVAL_TOPK = 5000  # VQA minival reads only the first 5000 TSV lines (vqa_data.py:102)

UNKNOWN_ANSWER_MODES = ("count", "ignore", "raise")


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names file, index and key."""


class MissingFeaturesError(LookupError):
    """A question's image has no features in the loaded feature files."""


def read_json(path: str | Path):
    """A data file's JSON (UTF-8, a byte-order mark allowed); errors name the file."""
    try:
        return _read_json(path, error=DataFormatError)
    except FileNotFoundError:
        raise FileNotFoundError(f"data file not found: {path}") from None


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def feature_topk(split: str, tiny: bool = False, fast: bool = False,
                 task: str = "vqa") -> int | None:
    """How many TSV lines to read for `split`: `--tiny` (200 images for VQA, 512 for GQA and
    NLVR2), `--fast` (5000), VQA `minival` (the first 5000 lines); None = all lines. GQA
    `testdev` is always read whole.
    A non-None result means the user asked for a subset: questions whose image was not loaded
    are then dropped instead of raising."""
    if task not in TINY_IMG_NUM:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TINY_IMG_NUM)}")
    if task == "gqa" and split == "testdev":
        if tiny or fast:  # as the authors: every testdev image, so its score is comparable
            logger.info("GQA testdev: all images are loaded (--tiny/--fast do not cut it)")
        return None
    if tiny:
        return TINY_IMG_NUM[task]
    if fast:
        return FAST_IMG_NUM
    if task == "vqa" and split == "minival":
        return MINIVAL_TOPK
    return None


def vqa_feature_topk(split: str, tiny: bool = False, fast: bool = False) -> int | None:
    return feature_topk(split, tiny, fast, task="vqa")


def gqa_feature_topk(split: str, tiny: bool = False, fast: bool = False) -> int | None:
    return feature_topk(split, tiny, fast, task="gqa")


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


def load_qa_split(path: str | Path, require_label: bool = False,
                  int_ids: bool = False) -> list[dict]:
    """Read and validate one question file. Each datum needs `img_id` (str), `question_id`
    (int, or with `int_ids` False a string), `sent` (str) and, when present (required with
    `require_label`, as in a validation split), `label`, a dict answer(str) -> finite score
    >= 0. Errors name the file, the index, the question id and the key."""
    data = read_records(path, "questions", ("img_id", "question_id", "sent"))
    for i, datum in enumerate(data):
        where = f"{path}: item {i}"
        if not isinstance(datum["img_id"], str) or not datum["img_id"]:
            raise DataFormatError(f"{where}: key 'img_id' must be a non-empty string, "
                                  f"got {datum['img_id']!r}")
        qid = datum["question_id"]
        if int_ids and not _is_int(qid):
            raise DataFormatError(f"{where}: key 'question_id' must be an integer (the VQA "
                                  f"test server wants int ids), got {str(qid)[:60]!r}")
        if not (_is_int(qid) or isinstance(qid, str)):
            raise DataFormatError(f"{where}: key 'question_id' must be an int or a string, "
                                  f"got {qid!r}")
        where = f"{path}: item {i} (question_id {qid!r})"
        if not isinstance(datum["sent"], str):
            raise DataFormatError(f"{where}: key 'sent' must be a string, "
                                  f"got {type(datum['sent']).__name__}")
        if "label" in datum:
            label = datum["label"]
            if not isinstance(label, dict):
                raise DataFormatError(f"{where}: key 'label' must be an object "
                                      f"answer -> score, got {type(label).__name__}")
            for ans, score in label.items():
                if not _is_number(score) or not math.isfinite(score) or score < 0:
                    raise DataFormatError(f"{where}: key 'label' answer {ans!r} has score "
                                          f"{score!r}; expected a finite number >= 0")
        elif require_label:
            raise DataFormatError(f"{where}: missing key 'label' (a validation split must be "
                                  f"labelled: every question needs its answer scores)")
    return data


class AnswerTable:
    """The task's answer vocabulary: `trainval_ans2label.json` (dict answer -> int) and
    `trainval_label2ans.json` (list). The row order is that of the authors' answer heads."""

    def __init__(self, ans2label_path: str | Path, label2ans_path: str | Path):
        self.ans2label_path = Path(ans2label_path)
        self.label2ans_path = Path(label2ans_path)
        ans2label = read_json(ans2label_path)
        label2ans = read_json(label2ans_path)
        if not isinstance(ans2label, dict):
            raise DataFormatError(f"{ans2label_path}: expected an object answer -> label")
        if not isinstance(label2ans, list):
            raise DataFormatError(f"{label2ans_path}: expected a list of answers")
        if len(ans2label) != len(label2ans):
            raise DataFormatError(
                f"answer tables disagree: {ans2label_path} has {len(ans2label)} answers, "
                f"{label2ans_path} has {len(label2ans)}")
        for i, ans in enumerate(label2ans):
            if not isinstance(ans, str):
                raise DataFormatError(f"{label2ans_path}: item {i} is not a string: {ans!r}")
            if ans2label.get(ans) != i:
                raise DataFormatError(
                    f"answer tables disagree at label {i}: {label2ans_path} says {ans!r}, "
                    f"{ans2label_path} maps {ans!r} to {ans2label.get(ans)!r}")
        self.ans2label: dict[str, int] = ans2label
        self.label2ans: list[str] = label2ans

    @property
    def num_answers(self) -> int:
        return len(self.label2ans)

    def __len__(self) -> int:
        return len(self.label2ans)

    def __contains__(self, ans) -> bool:
        return ans in self.ans2label

    def label(self, ans: str) -> int:
        return self.ans2label[ans]

    def answer(self, label: int) -> str:
        return self.label2ans[label]


# ---------------------------------------------------------------------------------- datasets
def _as_store_list(feature_stores) -> list:
    if feature_stores is None:
        return []
    if isinstance(feature_stores, Mapping) or hasattr(feature_stores, "img_ids"):
        return [feature_stores]
    return list(feature_stores)


class _ImageLookup:
    """Finds an img_id in one of several feature stores (e.g. train2014 + val2014)."""

    def __init__(self, feature_stores, num_boxes: int | None = 36):
        self.stores = _as_store_list(feature_stores)
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
        logger.info("split %s: dropped %d of %d examples whose images were not loaded "
                    "(subset of the features requested)", split_name, dropped, len(data))
    return kept


def _tokenize(tokenizer, sents: list[str]) -> dict[str, np.ndarray]:
    batch = tokenizer.encode_batch(list(sents))
    out = {}
    for name in ("input_ids", "token_position", "input_mask"):
        arr = batch[name] if isinstance(batch, Mapping) else getattr(batch, name)
        arr = np.ascontiguousarray(np.asarray(arr), dtype=np.int64)
        if arr.ndim != 2 or arr.shape[0] != len(sents):
            raise ValueError(f"tokenizer returned {name} of shape {arr.shape} for "
                             f"{len(sents)} sentences")
        out[name] = arr
    return out


class QADataset(TaskDataset):
    """Soft-score VQA/GQA dataset.

    All sentences are tokenized once here (never in `__getitem__` or the model). Targets are
    soft scores: `target[ans2label[a]] = score` for every answer of the datum's `label`.
    An answer outside the table is handled by `unknown_answer`: "count" (default: counted in
    `num_unknown_answers`, logged once), "ignore" (GQA's behaviour, silent) or "raise" (the
    authors' VQA behaviour, KeyError). Features are looked up in `__getitem__` from the lazily
    opened stores, which is safe in DataLoader workers.

    Items: dict `index` int64, `input_ids`/`token_position`/`input_mask` [L] int64,
    `feats` [36,D] float32, `boxes` [36,4] float32, `target` [A] float32 (zeros if unlabelled).
    """

    def __init__(self, data: list[dict], feature_stores, tokenizer, answer_table: AnswerTable,
                 split_name: str = "", subset: bool = False, unknown_answer: str = "count",
                 num_boxes: int | None = 36):
        if unknown_answer not in UNKNOWN_ANSWER_MODES:
            raise ValueError(f"unknown_answer must be one of {UNKNOWN_ANSWER_MODES}, "
                             f"got {unknown_answer!r}")
        self.split_name = split_name
        self.answer_table = answer_table
        self.num_answers = answer_table.num_answers
        self.images = _ImageLookup(feature_stores, num_boxes)
        self.data = filter_by_features(list(data), self.images.__contains__, ("img_id",),
                                       split_name, subset, "question_id")
        self.question_ids = [d["question_id"] for d in self.data]
        self.img_ids = [d["img_id"] for d in self.data]

        # sparse soft-score targets
        self.num_unknown_answers = 0
        unknown_examples: list[str] = []
        self._target_idx: list[np.ndarray] = []
        self._target_val: list[np.ndarray] = []
        ans2label = answer_table.ans2label
        for datum in self.data:
            idx, val = [], []
            for ans, score in datum.get("label", {}).items():
                label = ans2label.get(ans)
                if label is None:
                    if unknown_answer == "raise":
                        raise KeyError(f"split {split_name!r}: question "
                                       f"{datum['question_id']!r} has answer {ans!r}, "
                                       f"which is not in {answer_table.ans2label_path}")
                    self.num_unknown_answers += 1
                    if len(unknown_examples) < 5 and ans not in unknown_examples:
                        unknown_examples.append(ans)
                    continue
                idx.append(label)
                val.append(score)
            self._target_idx.append(np.asarray(idx, dtype=np.int64))
            self._target_val.append(np.asarray(val, dtype=np.float32))
        if self.num_unknown_answers and unknown_answer == "count":
            logger.warning("split %s: %d answer labels are not in the %d-answer table and "
                           "were left out of the targets (e.g. %s)", split_name,
                           self.num_unknown_answers, self.num_answers,
                           ", ".join(repr(a) for a in unknown_examples))

        self.tokens = _tokenize(tokenizer, [d["sent"] for d in self.data])
        logger.info("split %s: %d questions", split_name, len(self.data))

    def __len__(self) -> int:
        return len(self.data)

    def target(self, index: int) -> np.ndarray:
        target = np.zeros(self.num_answers, dtype=np.float32)
        target[self._target_idx[index]] = self._target_val[index]
        return target

    def __getitem__(self, index: int) -> dict:
        feats, boxes = self.images.get(self.img_ids[index])
        item = {"index": torch.tensor(index, dtype=torch.int64)}
        for name, arr in self.tokens.items():
            item[name] = torch.from_numpy(arr[index])
        item["feats"] = torch.from_numpy(feats)
        item["boxes"] = torch.from_numpy(boxes)
        item["target"] = torch.from_numpy(self.target(index))
        return item


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


def load_qa_dataset(data_root, task: str, splits, tokenizer, tiny: bool = False,
                    fast: bool = False, cache_dir=None, fp16: bool = False,
                    unknown_answer: str | None = None,
                    answer_table: AnswerTable | None = None, require_label: bool = False,
                    feat_dim: int | None = None) -> QADataset:
    """Build the `QADataset` of `task` ('vqa', 'gqa', 'easyvqa') for comma-separated `splits`
    from a data root: question files, answer table, feature stores and subset limits.
    `unknown_answer` defaults to "count" for VQA-like tasks and "ignore" for GQA.
    `require_label` (validation splits) makes an unlabelled question an error; `feat_dim`
    (the model's visual_feat_dim) is checked against the stores. An empty split is an error."""
    from tasks.common.paths import DataRoot
    root = data_root if isinstance(data_root, DataRoot) else DataRoot(data_root)
    names = split_list(splits)
    if not names:
        raise ValueError("no split given")
    if answer_table is None:
        answer_table = AnswerTable(*root.answer_tables(task))
    if unknown_answer is None:
        unknown_answer = "ignore" if task == "gqa" else "count"
    data, paths_topk, files = [], [], []
    subset = False
    for split in names:
        files.append(root.qa_json(task, split))
        data.extend(load_qa_split(files[-1], require_label, int_ids=task != "gqa"))
        topk = feature_topk(split, tiny, fast, task=task)
        subset = subset or topk is not None
        paths_topk.append((root.qa_features(task, split), topk))
    stores = open_stores(paths_topk, cache_dir=cache_dir, fp16=fp16)
    check_feature_dim(stores, feat_dim)
    dataset = QADataset(data, stores, tokenizer, answer_table, split_name=",".join(names),
                        subset=subset, unknown_answer=unknown_answer,
                        num_boxes=stores_num_boxes(stores))
    check_not_empty(dataset, files, subset and bool(data))
    return dataset
