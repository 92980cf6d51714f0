"""What VQA and GQA (and the VQA-like easy-VQA) share on the data side: the question-file reader,
the answer table and the soft-score dataset (the --tiny/--fast/minival image limits are in
`tasks.common.readers`).

Question files are JSON lists of data (docs/authors_code.md, "VQA" and "GQA"):
    {"img_id": str, "question_id": int (VQA) | str (GQA), "sent": str,
     "label": {answer: score}   # absent on unlabelled splits (VQA test, GQA submit)
     ...}                       # other keys (answer_type, question_type) are kept as they are
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from tasks.common.task_dataset import TaskDataset
from tasks.common.readers import (DataFormatError, ImageLookup, check_feature_dim,
                                  check_not_empty, feature_topk, filter_by_features,
                                  is_integer, is_number, open_stores, read_json, read_records,
                                  split_list, stores_num_boxes, tokenize_texts)

log = logging.getLogger(__name__)

UNKNOWN_ANSWER_MODES = ("count", "ignore", "raise")


# ---------------------------------------------------------------------------------- reading
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
        if int_ids and not is_integer(qid):
            raise DataFormatError(f"{where}: key 'question_id' must be an integer (the VQA "
                                  f"test server wants int ids), got {str(qid)[:60]!r}")
        if not (is_integer(qid) or isinstance(qid, str)):
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
                if not is_number(score) or not math.isfinite(score) or score < 0:
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
        self.images = ImageLookup(feature_stores, num_boxes)
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
            log.warning("split %s: %d answer labels are not in the %d-answer table and "
                           "were left out of the targets (e.g. %s)", split_name,
                           self.num_unknown_answers, self.num_answers,
                           ", ".join(repr(a) for a in unknown_examples))

        self.tokens = tokenize_texts(tokenizer, [d["sent"] for d in self.data])
        log.info("split %s: %d questions", split_name, len(self.data))

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
