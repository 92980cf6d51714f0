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

from tasks.common.readers import (DataFormatError, is_integer, is_number, load_splits,
                                  read_json, read_records)
from tasks.common.registry import DataFile
from tasks.common.task_dataset import ImageTextDataset

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


def answer_table_files(label: str, dirs: tuple, source: str, shipped: str | None = None,
                       lxmert_layout: bool = True) -> dict:
    """The registry declarations (kinds `ans2label`, `label2ans`) of a VQA-like task's answer
    table, `trainval_{kind}.json` in `dirs`; `shipped`: the folder of this repository's data/
    holding a copy."""
    return {kind: DataFile(f"{label} answer table {{name}}", f"trainval_{kind}.json", dirs,
                           source, lxmert_layout,
                           f"{shipped}/trainval_{kind}.json" if shipped else None)
            for kind in ("ans2label", "label2ans")}


class AnswerTable:
    """The task's answer vocabulary: `trainval_ans2label.json` (dict answer -> int) and
    `trainval_label2ans.json` (list). The row order is that of the authors' answer heads."""

    @classmethod
    def of(cls, root, task: str) -> "AnswerTable":
        """The answer table `task` declares, found under the data root `root`."""
        return cls(root.path(task, "ans2label"), root.path(task, "label2ans"))

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
class QADataset(ImageTextDataset):
    """Soft-score VQA/GQA dataset.

    All sentences are tokenized once here (never in `__getitem__` or the model). Targets are
    soft scores: `target[ans2label[a]] = score` for every answer of the datum's `label`.
    An answer outside the table is handled by `unknown_answer`: "count" (default: counted in
    `num_unknown_answers`, logged once), "ignore" (GQA's behaviour, silent) or "raise" (the
    authors' VQA behaviour, KeyError). Features are looked up in `__getitem__` from the lazily
    opened stores, which is safe in DataLoader workers.

    Items: those of `ImageTextDataset`, `target` [A] float32 (zeros if unlabelled).
    """

    def __init__(self, data: list[dict], feature_stores, tokenizer, answer_table: AnswerTable,
                 split_name: str = "", subset: bool = False, unknown_answer: str = "count",
                 num_boxes: int | None = 36):
        if unknown_answer not in UNKNOWN_ANSWER_MODES:
            raise ValueError(f"unknown_answer must be one of {UNKNOWN_ANSWER_MODES}, "
                             f"got {unknown_answer!r}")
        super().__init__(data, feature_stores, tokenizer, split_name, subset, num_boxes,
                         what="questions")
        self.answer_table = answer_table
        self.num_answers = answer_table.num_answers
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

    def target(self, index: int) -> np.ndarray:
        target = np.zeros(self.num_answers, dtype=np.float32)
        target[self._target_idx[index]] = self._target_val[index]
        return target


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
    if answer_table is None:
        answer_table = AnswerTable.of(root, task)
    if unknown_answer is None:
        unknown_answer = "ignore" if task == "gqa" else "count"

    def build(data, stores, name, subset, num_boxes):
        return QADataset(data, stores, tokenizer, answer_table, split_name=name, subset=subset,
                         unknown_answer=unknown_answer, num_boxes=num_boxes)

    return load_splits(root, task, splits,
                       lambda path: load_qa_split(path, require_label, int_ids=task != "gqa"),
                       build, tiny=tiny, fast=fast, cache_dir=cache_dir, fp16=fp16,
                       feat_dim=feat_dim)
