"""What a task is to the trainer (`Task`), and the skeleton a task starts from (`TaskBase`).

`Task` is the interface: the trainer calls these methods and nothing else. `TaskBase` holds
what every LXMERT-S task does the same way, so that a task folder holds only what differs:
the data root, model config and tokenizer from the flags; a cached `dataset(splits)` with the
--tiny/--fast rules (the --test split is never cut) and labels required on the validation
split; `train_dataset` (the validation split is loaded and checked before training); the weight
flags in the authors' order; run info; the logits and argmax of a batch; and the rank-0 write
of a checked result file. A subclass sets `name` (its registry entry) and gives
`load_dataset`, `build_model`, `compute_loss`, `evaluate` and `write_results`.

`ClassifierTask` adds what a task whose examples each have one of `class_names` needs: the
generic classifier head, cross-entropy, and accuracy overall and per class.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch.nn.functional as F
from torch import nn

from lxrt.tokenization import LXRTTokenizer, find_vocab_file
from tasks.common.args import subset_flags, warn_if_loaded_whole
from tasks.common.checkpoints import atomic_write_text
from tasks.common.classifier import ClassifierModel
from tasks.common.evaluation import EvalContext
from tasks.common.model_setup import (MAX_SEQ_LENGTH, build_config, load_task_weights,
                                      model_run_info)
from tasks.common.paths import DataRoot
from tasks.common.readers import load_splits
from tasks.common.task_dataset import UNLABELLED, TaskDataset

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    score: float                       # the number model selection uses (Task.score_is_loss)
    metrics: dict = field(default_factory=dict)
    predictions: object = None         # whatever the task's writer needs
    epoch: Optional[int] = None        # set on the result `Trainer.fit` returns (the best)


@dataclass(frozen=True)
class CheckpointFiles:
    """The weight files the trainer writes in the output folder for a task: `best` on a
    strictly better validation score, `last` after every epoch, and, when set, `per_epoch`
    after every epoch too: a format string with `{number}`, the epoch counted from 1 (the
    first epoch writes Epoch01 as LXMERT; `{epoch}`, counted from 0, is metrics.jsonl's)."""
    best: str = "BEST.pth"
    last: str = "LAST.pth"
    per_epoch: Optional[str] = None


class Task:
    """What a task supplies. Evaluation and result writing receive an `EvalContext` (device,
    precision, ranks, output folder and the evaluation loops), never the trainer."""
    name = "task"
    checkpoint_files = CheckpointFiles()
    score_is_loss = False  # True: evaluate's score is a loss, lower is better

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def load_weights(self, model: nn.Module) -> None:
        """Pre-trained (--loadLXMERT / --loadLXMERTQA) or fine-tuned (--load) weights."""

    def train_dataset(self) -> Optional[TaskDataset]:
        """The training set: a `TaskDataset`, whose hooks (text `tokens`, `set_epoch`,
        `worker_init_fn`) the trainer calls."""
        return None

    def compute_loss(self, model: nn.Module, batch: dict):
        """-> (loss, stats) where stats maps names to summable 0-d tensors (e.g. hits)."""
        raise NotImplementedError

    def train_score(self, stats: dict, samples: int) -> Optional[float]:
        """The epoch's training score from its `compute_loss` stats summed over all batches
        and ranks, and the number of examples trained on; None: report the loss only."""
        return None

    def epoch_metrics(self, stats: dict, samples: int) -> dict:
        """More training figures of the epoch (e.g. one loss per pre-training task), from the
        same summed stats as `train_score`; added to metrics.jsonl (`train`) and the log."""
        return {}

    def checkpoint_state(self, model: nn.Module) -> dict:
        """What the checkpoint files hold (default: the model's own state dict)."""
        return model.state_dict()

    def evaluate(self, ctx: EvalContext, model: nn.Module, split: str) -> EvalResult:
        raise NotImplementedError

    def write_results(self, ctx: EvalContext, result: EvalResult, split: str) -> None:
        """Write the test-server / prediction file for `split` (rank 0 only)."""

    def run_inputs(self) -> dict:
        """Plain data naming inputs that flags do not show (e.g. the content of a config file
        a flag names): saved in resume.pth, and a --resume that finds them changed stops."""
        return {}

    def run_info(self) -> dict:
        """What a predictor needs besides the weights (task, model sizes, answer table,
        feature files), recorded in run_info.json under "task_info"."""
        return {}


class TaskBase(Task):
    """The shared skeleton of a task on the LXMERT-S encoder (see the module docstring)."""
    test_aliases: dict = {}   # a --test spelling -> the split it means (GQA: test -> submit)
    hits_stat = "hits"        # the `compute_loss` stat that counts right answers
    # (model, path): --loadLXMERTQA's transfer of a pre-trained head; None: the flag is refused
    load_head: Optional[Callable] = None

    def __init__(self, args, name: Optional[str] = None):
        self.args = args
        if name is not None:
            self.name = name
        self.root = DataRoot(args.data_root)
        self.config = build_config(args)
        self.tokenizer = LXRTTokenizer(find_vocab_file(self.root.root), MAX_SEQ_LENGTH)
        self._datasets: dict = {}

    # ---- data -------------------------------------------------------------------------------

    def split_name(self, split: str) -> str:
        return self.test_aliases.get(split, split)

    def load_dataset(self, splits: str, tiny: bool, fast: bool, require_label: bool):
        """The dataset of comma-separated `splits`, --tiny/--fast as given; `require_label`:
        every example must be labelled (a validation split)."""
        raise NotImplementedError

    def load_splits(self, splits: str, read: Callable, build: Callable, tiny: bool,
                    fast: bool, **kwargs):
        """`readers.load_splits` for this task, with the run's data root, feature cache and
        model feature size."""
        args = self.args
        return load_splits(self.root, self.name, splits, read, build, tiny=tiny, fast=fast,
                           cache_dir=args.feature_cache, fp16=args.fp16_features,
                           feat_dim=self.config.visual_feat_dim, **kwargs)

    def dataset(self, splits: str):
        """The dataset of `splits`, built once per (splits, --tiny, --fast)."""
        args = self.args
        test = self.split_name(args.test) if args.test else None
        tiny, fast = subset_flags(args, splits, test)
        key = (splits, tiny, fast)  # the test split is never served from a cut copy
        if key not in self._datasets:
            warn_if_loaded_whole(args, splits, tiny, fast)
            # a validation split needs every label (else its score is NaN and no BEST.pth)
            validating = not args.test and splits == self.split_name(args.valid or "")
            self._datasets[key] = self.load_dataset(splits, tiny, fast, validating)
        return self._datasets[key]

    def train_dataset(self):
        train = self.dataset(self.args.train)
        if self.args.valid:  # load and check it now, not after the first epoch
            self.dataset(self.split_name(self.args.valid))
        return train

    # ---- model, weights and run info ----------------------------------------------------------

    def labels(self) -> Optional[list]:
        """What the model's outputs mean, when a model folder given to --load must agree
        (VQA/GQA: the answer table); None: not checked."""
        return None

    def load_weights(self, model) -> None:
        load_task_weights(self.args, model, self.config, self.load_head, labels=self.labels())

    def task_info(self) -> dict:
        """What this task's predictor needs besides the model sizes and vocabulary."""
        return {}

    def run_info(self) -> dict:
        return {**model_run_info(self.name, self.config, self.tokenizer), **self.task_info()}

    # ---- steps --------------------------------------------------------------------------------

    def train_score(self, stats: dict, samples: int) -> Optional[float]:
        """Right answers per example trained on (the `hits_stat` of `compute_loss`)."""
        hits = stats.get(self.hits_stat)
        return None if hits is None else hits.item() / max(samples, 1)

    @staticmethod
    def logits(model, batch: dict):
        return model(batch["input_ids"], batch["token_position"], batch["input_mask"],
                     batch["feats"], batch["boxes"])

    def predict_step(self, model, batch: dict) -> dict:
        return {"label": self.logits(model, batch).argmax(1)}

    def predict_labels(self, ctx: EvalContext, model, split: str):
        """(the split's dataset, its predicted class per example in dataset order)."""
        dataset = self.dataset(split)
        out = ctx.predict(model, dataset, self.predict_step, desc=f"predict {split}")
        return dataset, out["label"].numpy()

    # ---- result files -------------------------------------------------------------------------

    def write_result_file(self, ctx: EvalContext, name: str, text: str, count: int) -> Path:
        """Write a (checked) result file of `count` predictions into the run folder, on rank 0
        only and atomically; returns its path."""
        path = Path(ctx.output) / name
        if ctx.is_main:
            atomic_write_text(path, text)
            log.info("wrote %s: %d predictions, %d bytes", path, count, path.stat().st_size)
        return path

    def write_json_lines(self, ctx: EvalContext, name: str, records: list) -> Path:
        """A result file of one JSON object per line (`write_result_file`)."""
        text = "".join(json.dumps(record) + "\n" for record in records)
        return self.write_result_file(ctx, name, text, len(records))


def class_accuracies(predictions, labels, class_names) -> dict:
    """`examples`, `labelled`, and in percent the `accuracy` over the labelled examples
    (label != UNLABELLED) and `accuracy_<class>` over each class's examples (its recall)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    labelled = labels != UNLABELLED
    out = {"examples": int(len(labels)), "labelled": int(labelled.sum())}
    if labelled.any():
        out["accuracy"] = 100 * float((predictions[labelled] == labels[labelled]).mean())
    for k, name in enumerate(class_names):
        if (labels == k).any():
            out[f"accuracy_{name}"] = 100 * float((predictions[labels == k] == k).mean())
    return out


class ClassifierTask(TaskBase):
    """A task whose examples each have one of `class_names` (datasets with `labels`, as
    `ImageTextDataset(classes=...)`): `ClassifierModel` over `num_images` images per example,
    cross-entropy (unlabelled examples ignored), accuracy overall and per class; the
    validation score is the accuracy."""
    class_names: tuple = ()
    num_images = 1

    def build_model(self):
        return ClassifierModel(self.config, len(self.class_names), self.num_images)

    def task_info(self) -> dict:
        return {"class_names": list(self.class_names), "num_images": self.num_images}

    def compute_loss(self, model, batch):
        logits = self.logits(model, batch)
        target = batch["target"]
        loss = F.cross_entropy(logits.float(), target, ignore_index=UNLABELLED)
        return loss, {"hits": (logits.argmax(1) == target).sum()}

    def evaluate(self, ctx: EvalContext, model, split: str) -> EvalResult:
        dataset, predictions = self.predict_labels(ctx, model, split)
        metrics = class_accuracies(predictions, dataset.labels, self.class_names)
        score = metrics["accuracy"] / 100 if "accuracy" in metrics else float("nan")
        return EvalResult(score, {"split": split, **metrics}, predictions)
