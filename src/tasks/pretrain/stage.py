"""Stage configuration of a pre-training run (`--stage run/configs/msp/token.json`).

A stage names its tasks, loss weights, text unit, masking, data and recipe. The defaults are
LXMERT's pre-training (MLM, masked objects, ITM and QA on the flattened caption + QA corpus,
20 epochs, lr 1e-4, batch 256). The MSP stages (token, phrase, sentence) are our
reconstruction of a method known only by name; every choice is a field here so it can be
changed without touching code.

Tasks:
  mlm     masked language modelling (word pieces, or SpanBERT spans with `masking: span`)
  obj     masked objects: region features zeroed / replaced / kept, predict obj, attr, feat
  ifrs    image features random shuffle: a region gets another region's feature of the same
          image (its box stays); predict the original feature and labels at those regions
  itm     image-text matching with random negatives
  itm_hs  ITM where part of the negatives are captions of nearest images (needs itm)
  qa      answer the matched QA-source questions (LXMERT's 9,500 answers)
  topic   multi-hot of the text's content word pieces from the pooled output (TITP on
          phrases, TITS on whole captions; on a mismatched ITM pair see mismatched_topic)

Text units:
  sentence  the sentence as written (LXMERT)
  token     its content words alone, each with its own position ("a man riding a horse" ->
            "man riding horse"): MLM then masks the words an image can show, never the
            function words the sentence's grammar gives away
  phrase    a noun chunk of a caption (`phrase_prob` of the examples), else the caption
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

from tasks.common.readers import DataFormatError, read_json

log = logging.getLogger(__name__)

TASKS = ("mlm", "obj", "ifrs", "itm", "itm_hs", "qa", "topic")
LOSS_NAMES = ("mlm", "topic", "matched", "obj", "attr", "feat", "qa")  # LXRTPretraining order
TEXT_UNITS = ("token", "phrase", "sentence")
MASKINGS = ("token", "span")
MISMATCHED_TOPICS = ("image", "text")
# which losses each task switches on (weight 1 unless `loss_weights` says otherwise)
TASK_LOSSES = {"mlm": ("mlm",), "obj": ("obj", "attr", "feat"), "ifrs": ("obj", "attr", "feat"),
               "itm": ("matched",), "itm_hs": ("matched",), "qa": ("qa",), "topic": ("topic",)}

_RATES = ("word_mask_rate", "obj_mask_rate", "ifrs_rate", "itm_negative_rate",
          "hard_negative_fraction", "phrase_prob", "warmup", "span_geometric_p")


# the stage fields that are run settings: a stage file sets them between the defaults and the
# command line (tasks.common.settings), and the run's flags record them
RECIPE_FIELDS = ("batch_size", "lr", "epochs", "warmup", "train", "valid")


class StageConfigError(ValueError):
    pass


@dataclass
class StageConfig:
    name: str = "lxmert"
    tasks: list = field(default_factory=lambda: ["mlm", "obj", "itm", "qa"])
    loss_weights: dict = field(default_factory=dict)   # loss name -> weight (overrides)
    text_unit: str = "sentence"      # token (content words) | phrase | sentence
    masking: str = "token"           # token (BERT pieces) | span (SpanBERT words)
    phrase_prob: float = 0.5         # phrase unit: share of examples that are a noun chunk
    train: str = "mscoco_train,mscoco_nominival,vgnococo"
    valid: str = "mscoco_minival"
    valid_images: int = 5000         # first N images of the validation feature file
    sentence_sources: Optional[list] = None  # sentf sources used (None: all; "captions" /
                                             # "questions": every caption / QA source)
    epochs: int = 20
    lr: float = 1e-4
    batch_size: int = 256
    warmup: float = 0.05
    word_mask_rate: float = 0.15
    obj_mask_rate: float = 0.15
    ifrs_rate: float = 0.15
    itm_negative_rate: float = 0.5
    hard_negative_fraction: float = 0.5
    hard_negative_k: int = 20
    # topic target (TITS) of a mismatched ITM pair: "image", the content words of the
    # image's own sentence that the negative replaced (the topic of the image: the text does
    # not give it away), or "text", the shown sentence's
    mismatched_topic: str = "image"
    # a sentence that reads word for word like one of the image's own captions is no ITM
    # negative (redrawn); LXMERT only redraws sentences of the same image
    negatives_unlike_captions: bool = False
    span_geometric_p: float = 0.2
    span_min: int = 1
    span_max: int = 10
    # task -> the first epoch (counted from 0) that trains it; before it the task's losses
    # get weight 0 in training. Validation scores every task of the stage in every epoch.
    # LXMERT's paper: {"qa": 10} (QA in the last 10 of 20 epochs; its code trains QA in all)
    task_start_epochs: dict = field(default_factory=dict)

    # ---- derived ---------------------------------------------------------------------------
    def has(self, task: str) -> bool:
        return task in self.tasks

    def tasks_of_epoch(self, epoch: Optional[int] = None) -> list:
        """The tasks trained in `epoch` (None: every task of the stage)."""
        return [t for t in self.tasks
                if epoch is None or self.task_start_epochs.get(t, 0) <= epoch]

    def weights(self, epoch: Optional[int] = None) -> list[float]:
        """One weight per loss of LXRTPretraining, in its order; with `epoch`, the losses of
        tasks that start later are 0 (unless a task already started also has them)."""
        on = {loss for task in self.tasks_of_epoch(epoch) for loss in TASK_LOSSES[task]}
        later = {loss for task in self.tasks for loss in TASK_LOSSES[task]} - on
        return [0.0 if name in later else float(self.loss_weights.get(name, 1.0 if name in on
                                                                      else 0.0))
                for name in LOSS_NAMES]

    def to_dict(self) -> dict:
        return asdict(self)

    # ---- validation ------------------------------------------------------------------------
    def validate(self, where: str = "stage config") -> "StageConfig":
        def fail(key, message):
            raise StageConfigError(f"{where}: key {key!r}: {message}")

        if not isinstance(self.tasks, list) or not self.tasks:
            fail("tasks", f"expected a non-empty list of {list(TASKS)}")
        for task in self.tasks:
            if task not in TASKS:
                fail("tasks", f"unknown task {task!r}; known: {list(TASKS)}")
        if self.has("itm_hs") and not self.has("itm"):
            fail("tasks", "itm_hs (hard negatives) needs itm")
        if not isinstance(self.loss_weights, dict):
            fail("loss_weights", "expected an object {loss name: weight}")
        for name, weight in self.loss_weights.items():
            if name not in LOSS_NAMES:
                fail("loss_weights", f"unknown loss {name!r}; known: {list(LOSS_NAMES)}")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) \
                    or not math.isfinite(weight) or weight < 0:
                fail("loss_weights", f"{name}: expected a finite number >= 0, got {weight!r}")
        if self.text_unit not in TEXT_UNITS:
            fail("text_unit", f"expected one of {list(TEXT_UNITS)}, got {self.text_unit!r}")
        if self.mismatched_topic not in MISMATCHED_TOPICS:
            fail("mismatched_topic", f"expected one of {list(MISMATCHED_TOPICS)}, got "
                                     f"{self.mismatched_topic!r}")
        if self.masking not in MASKINGS:
            fail("masking", f"expected one of {list(MASKINGS)}, got {self.masking!r}")
        for key in _RATES:
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                fail(key, f"expected a probability in [0, 1], got {value!r}")
        for key in ("epochs", "batch_size", "hard_negative_k", "span_min", "span_max",
                    "valid_images"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(key, f"expected a positive integer, got {value!r}")
        if not isinstance(self.task_start_epochs, dict):
            fail("task_start_epochs", "expected an object {task: first epoch, from 0}")
        for task, start in self.task_start_epochs.items():
            if task not in self.tasks:
                fail("task_start_epochs", f"{task!r} is not one of the stage's tasks "
                                          f"{self.tasks}")
            if not isinstance(start, int) or isinstance(start, bool) or start < 0:
                fail("task_start_epochs", f"{task}: expected an epoch number >= 0 (counted "
                                          f"from 0), got {start!r}")
        if not isinstance(self.negatives_unlike_captions, bool):
            fail("negatives_unlike_captions",
                 f"expected true or false, got {self.negatives_unlike_captions!r}")
        if self.span_min > self.span_max:
            fail("span_min", f"{self.span_min} is larger than span_max {self.span_max}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) \
                or not math.isfinite(self.lr) or self.lr <= 0:
            fail("lr", f"expected a finite positive number, got {self.lr!r}")
        if not isinstance(self.train, str) or not self.train.strip():
            fail("train", "expected comma-separated corpus names, e.g. 'mscoco_train,vgnococo'")
        if not isinstance(self.valid, str):
            fail("valid", "expected a corpus name ('' for none)")
        if self.sentence_sources is not None and (
                not isinstance(self.sentence_sources, list)
                or not all(isinstance(s, str) for s in self.sentence_sources)):
            fail("sentence_sources", "expected null or a list of source names (mscoco, vg, "
                                     "vqa, gqa, visual7w, or the groups captions, questions)")
        self.check_trainable(where)
        return self

    def idle_tasks(self) -> list[str]:
        """The stage's tasks that can teach nothing: their loss weights are all 0, or the
        rate that makes their labels is 0 (no masked token, masked region, swapped region
        or ITM negative; no hard negative; no phrase)."""
        weights = dict(zip(LOSS_NAMES, self.weights()))
        idle = [t for t in self.tasks if not any(weights[loss] > 0 for loss in TASK_LOSSES[t])]
        rates = {"mlm": "word_mask_rate", "obj": "obj_mask_rate", "ifrs": "ifrs_rate",
                 "itm": "itm_negative_rate", "itm_hs": "hard_negative_fraction"}
        idle += [t for t, rate in rates.items() if self.has(t) and getattr(self, rate) == 0
                 and t not in idle]
        return idle

    def check_trainable(self, where: str = "stage config") -> None:
        """Refuse a stage with no loss to train; warn about each task that is idle."""
        if not any(w > 0 for w in self.weights()):
            raise StageConfigError(f"{where}: key 'loss_weights': every loss of the tasks "
                                   f"{self.tasks} has weight 0; nothing would be trained")
        idle = self.idle_tasks()
        if set(idle) >= set(self.tasks):
            raise StageConfigError(f"{where}: every task ({', '.join(self.tasks)}) has weight "
                                   f"0 or a rate of 0 that leaves it no labels; nothing would "
                                   f"be trained")
        for task in idle:
            log.warning("%s: task %s can teach nothing (its loss weights or its rate are 0)",
                        where, task)
        if self.text_unit == "phrase" and self.phrase_prob == 0:
            log.warning("%s: text_unit 'phrase' with phrase_prob 0: no example is a phrase",
                        where)


def load_stage_config(path) -> StageConfig:
    """Read and validate a stage config JSON; unknown keys are errors naming the file."""
    path = Path(path)
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise StageConfigError(f"stage config not found: {path}") from None
    except DataFormatError as err:
        raise StageConfigError(str(err)) from None
    if not isinstance(raw, dict):
        raise StageConfigError(f"{path}: expected a JSON object of stage fields")
    known = {f.name for f in fields(StageConfig)}
    for key in raw:
        if key.startswith("_"):  # comments
            continue
        if key not in known:
            raise StageConfigError(f"{path}: unknown key {key!r}; known: {sorted(known)}")
    values = {k: v for k, v in raw.items() if not k.startswith("_")}
    values.setdefault("name", path.stem)
    return StageConfig(**values).validate(str(path))


def stage_file_fields(path) -> set:
    """The fields a stage file sets itself (the others keep StageConfig's defaults)."""
    return {key for key in read_json(Path(path)) if not key.startswith("_")}
