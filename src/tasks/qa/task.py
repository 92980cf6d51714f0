"""What VQA and GQA (and the easy-VQA main job) share: the soft-score task on the training loop.

A `QASpec` holds the few things that differ between them (task name, result file format, which
`--test` split names mean what, loss options); `QATask` does the rest: model, weights, datasets,
BCE x answers loss, soft-score evaluator and a checked result writer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch.nn.functional as F

from lxrt.loading import load_lxmert_qa
from tasks.common.readers import split_list
from tasks.common.run_record import answers_record
from tasks.common.task import EvalResult, TaskBase
from tasks.qa.data import AnswerTable, load_qa_dataset
from tasks.qa.model import QAModel


@dataclass
class QASpec:
    task: str                                  # 'vqa', 'gqa' or 'easyvqa' (data layout)
    make_entry: Callable[[object, str], dict]  # (question_id, answer) -> result-file entry
    check_id: Callable[[object], bool]         # the id type the test server wants
    test_aliases: dict                         # --test spelling -> split name


def vqa_entry(question_id, answer: str) -> dict:
    return {"answer": answer, "question_id": int(question_id)}


def gqa_entry(question_id, answer: str) -> dict:
    return {"prediction": answer, "questionId": str(question_id)}


VQA_SPEC = QASpec("vqa", vqa_entry, lambda q: isinstance(q, int), {})
EASYVQA_SPEC = QASpec("easyvqa", vqa_entry, lambda q: isinstance(q, int), {})
# The authors' README says `--test test` for GQA, which their code ignores; it means `submit`.
GQA_SPEC = QASpec("gqa", gqa_entry, lambda q: isinstance(q, str), {"test": "submit"})


def soft_score(data: list, answers: list) -> float:
    """The authors' VQA/GQA score: mean over questions of the predicted answer's soft score
    in the datum's `label` dict (0 for answers not in it)."""
    if len(data) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(data)} questions")
    return sum(d["label"].get(a, 0.0) for d, a in zip(data, answers)) / max(len(data), 1)


class QATask(TaskBase):
    hits_stat = "soft_hits"  # soft scores of the argmax answers (the resume state's name)

    def __init__(self, args, spec: QASpec):
        super().__init__(args, spec.task)
        self.spec = spec
        self.test_aliases = spec.test_aliases
        self.answers = AnswerTable.of(self.root, spec.task)

    # ---- model and weights ----------------------------------------------------------------

    def build_model(self):
        return QAModel(self.config, self.answers.num_answers)

    def load_head(self, model, path) -> None:
        load_lxmert_qa(model, path, self.answers.label2ans, self.root.path("pretrain", "answers"),
                       self.config)

    def labels(self) -> list:
        return self.answers.label2ans

    def task_info(self) -> dict:
        """For tools.predict: the answer table and the splits' features (whose
        `.extractor.npz` record, when present, says how to describe a new image)."""
        features = []
        named = [self.args.train, self.args.valid, self.args.test]
        for split in split_list(",".join(self.split_name(s) for s in named if s)):
            try:
                features.append(str(self.root.path(self.name, "features", split).resolve()))
            except (FileNotFoundError, ValueError):
                pass
        return {"num_answers": self.answers.num_answers,
                **answers_record(self.answers.label2ans),  # the model's labels, by name
                "ans2label": str(self.answers.ans2label_path.resolve()),
                "label2ans": str(self.answers.label2ans_path.resolve()),
                "feature_files": sorted(set(features))}

    # ---- data -----------------------------------------------------------------------------

    def load_dataset(self, splits, tiny, fast, require_label):
        return load_qa_dataset(
            self.root, self.name, splits, self.tokenizer, tiny=tiny, fast=fast,
            cache_dir=self.args.feature_cache, fp16=self.args.fp16_features,
            answer_table=self.answers, require_label=require_label,
            feat_dim=self.config.visual_feat_dim)

    # ---- loss and metrics -----------------------------------------------------------------

    def compute_loss(self, model, batch):
        logits = self.logits(model, batch)
        target = batch["target"]
        num_answers = logits.shape[1]
        if getattr(self.args, "mce_loss", False):
            # the authors' --mceLoss: CE on argmax(target); an all-zero target becomes class 0
            loss = F.cross_entropy(logits.float(), target.argmax(1)) * num_answers
        else:
            loss = F.binary_cross_entropy_with_logits(logits.float(), target) * num_answers
        hits = target.gather(1, logits.argmax(1, keepdim=True)).sum()
        return loss, {"soft_hits": hits}

    def evaluate(self, ctx, model, split: str) -> EvalResult:
        split = self.split_name(split)
        dataset, labels = self.predict_labels(ctx, model, split)
        answers = [self.answers.answer(int(i)) for i in labels]
        labelled = [d for d in dataset.data if "label" in d]
        metrics = {"split": split, "questions": len(dataset)}
        score = float("nan")
        if len(labelled) == len(dataset.data) and labelled:
            score = soft_score(dataset.data, answers)
            metrics["accuracy"] = score * 100
        predictions = list(zip(dataset.question_ids, answers))
        return EvalResult(score, metrics, predictions)

    # ---- result files ---------------------------------------------------------------------

    def write_results(self, ctx, result: EvalResult, split: str) -> Optional[Path]:
        split = self.split_name(split)
        entries = [self.spec.make_entry(q, a) for q, a in result.predictions]
        self.check_results(entries, split)
        return self.write_result_file(ctx, f"{split}_predict.json",
                                      json.dumps(entries, indent=4, sort_keys=True), len(entries))

    def check_results(self, entries: list, split: str) -> None:
        """One entry per question of the split, ids of the type the server expects, answers
        from the answer table: the checks the test servers fail on silently."""
        dataset = self.dataset(split)
        id_key = "question_id" if "question_id" in entries[0] else "questionId"
        ids = [e[id_key] for e in entries]
        if len(set(ids)) != len(ids) or len(ids) != len(dataset.question_ids):
            raise RuntimeError(f"{split}: {len(ids)} predictions ({len(set(ids))} distinct) for "
                               f"{len(dataset.question_ids)} questions")
        bad = [q for q in ids if not self.spec.check_id(q)]
        if bad:
            raise RuntimeError(f"{split}: question ids of the wrong type for the test server, "
                               f"e.g. {bad[0]!r}")
        expected = {self.spec.make_entry(q, "")[id_key] for q in dataset.question_ids}
        if set(ids) != expected:
            raise RuntimeError(f"{split}: predicted ids differ from the split's question ids")
