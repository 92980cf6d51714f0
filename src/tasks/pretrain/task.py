"""Pre-training on the shared trainer: loss weights per stage, per-task figures, the
validation loss as the score (lower is better), and checkpoints in the authors' layout
(`EpochNN_LXRT.pth`, `BEST_EVAL_LOSS_LXRT.pth`, `LAST_LXRT.pth`) written by the trainer."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Optional

import numpy as np
import torch

from lxrt.loading import read_pretraining_answers
from tasks.common.distributed import rank_zero_first
from tasks.common.model_setup import MAX_SEQ_LENGTH
from tasks.common.readers import DataFormatError, check_feature_dim
from tasks.common.task import CheckpointFiles, EvalResult, TaskBase
from tasks.pretrain import neighbors
from tasks.pretrain.data import (PretrainDataset, Vocab, load_corpus, phrase_table,
                                 select_sentences)
from tasks.pretrain.entry import PRETRAIN
from tasks.pretrain.model import (authors_state_dict, build_pretraining_model, load_encoder,
                                  load_full)
from tasks.pretrain.stage import LOSS_NAMES, RECIPE_FIELDS, StageConfig

log = logging.getLogger(__name__)

ACCURACIES = ("mlm", "itm", "obj", "qa")


def build_labels(batch: dict, topic_width: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The label dict of `LXRTPretraining.losses`, which of its 7 losses this batch has
    labels for, and the text positions the MLM head scores (the labelled ones: the MLM labels
    are given for those only). A cross-entropy with no labelled item is NaN (and so is its
    gradient, even at weight 0), so such a loss gets one stand-in label and weight 0 for
    this batch."""
    ids = batch["input_ids"]
    mlm = batch["masked_lm_labels"][:, : ids.shape[1]].clone()  # text may have been trimmed
    ans = batch["ans"].clone()
    has_mlm, has_qa = (mlm != -1).any(), (ans != -1).any()
    mlm[0, 0] = torch.where(has_mlm, mlm[0, 0], ids[0, 0])
    ans[0] = torch.where(has_qa, ans[0], torch.zeros_like(ans[0]))
    topic_ids = batch["topic_ids"]
    multi_hot = torch.zeros(ids.shape[0], topic_width, device=ids.device)
    multi_hot.scatter_(1, topic_ids.clamp(min=0), (topic_ids >= 0).float())
    multi_hot[:, 0] = 0.0  # id 0 ([PAD]) is never a content piece; padding scattered there
    positions = mlm != -1
    labels = {"masked_lm_labels": mlm[positions], "topic_multi_hot": multi_hot,
              "matched_label": batch["matched_label"], "obj": batch["obj"],
              "obj_conf": batch["obj_conf"], "attr": batch["attr"],
              "attr_conf": batch["attr_conf"], "feat": batch["feat"],
              "feat_mask": batch["feat_mask"], "ans": ans}
    one = torch.ones((), device=ids.device)
    present = torch.stack([has_mlm.float(), one, one, one, one, one, has_qa.float()])
    return labels, present, positions


def hits_and_counts(out, batch: dict, mlm_positions: torch.Tensor) -> dict:
    """Correct predictions and labelled items for the MLM, ITM, object and QA accuracies
    (`out.mlm_scores` holds the rows of `mlm_positions` only)."""
    with torch.no_grad():
        mlm = batch["masked_lm_labels"][:, : mlm_positions.shape[1]][mlm_positions]
        keep = mlm != -1  # False at a stand-in label (a batch without MLM labels)
        region = batch["feat_mask"] > 0
        ans = batch["ans"]
        pairs = {
            "mlm": ((out.mlm_scores.argmax(-1) == mlm) & keep, keep),
            "itm": (out.itm_logits.argmax(-1) == batch["matched_label"],
                    torch.ones_like(batch["matched_label"], dtype=torch.bool)),
            "obj": ((out.obj_predictions["obj"].argmax(-1) == batch["obj"]) & region, region),
            "qa": ((out.answer_scores.argmax(-1) == ans) & (ans != -1), ans != -1),
        }
        return {k: (h.sum().float(), n.sum().float()) for k, (h, n) in pairs.items()}


def labelled_items(batch: dict, mlm_positions: torch.Tensor) -> torch.Tensor:
    """How many items each of the 7 losses averages over in this batch, in LOSS_NAMES order:
    the masked pieces (MLM), the examples (topic), the labelled pairs (ITM), the regions
    (obj, attr, feat: their means run over every region, weighted inside), the answered
    questions (QA). A loss's batch mean times this count is its sum over the items."""
    mlm = batch["masked_lm_labels"][:, : mlm_positions.shape[1]][mlm_positions]
    examples = torch.tensor(float(batch["input_ids"].shape[0]), device=mlm.device)
    regions = examples * batch["feat_mask"].shape[1]
    return torch.stack([(mlm != -1).sum().float(), examples,
                        (batch["matched_label"] != -1).sum().float(), regions, regions, regions,
                        (batch["ans"] != -1).sum().float()])


def check_split(data, sentences: np.ndarray, stage: StageConfig, names: str,
                topk: Optional[int]) -> None:
    """A split the stage can use: some sentence of the selected sources with an image among
    the features read, and with ITM sentences of two images at least (a negative is a
    sentence of another image). Raised when the split is built, before the first step."""
    corpus = data.corpus
    read = (f"only the first {topk} images of each feature file are read, as --imageLimit, "
            f"--tiny, --fast or, for a validation split, the stage's valid_images say" if topk
            else "every image of the feature files is read")
    files = ", ".join(str(s.store_dir) for s in data.stores)
    where = f"pre-training split {names!r}"
    if corpus.num_images == 0:
        raise DataFormatError(f"{where} is empty: none of its images has features in "
                              f"{files}; {read}")
    if len(sentences) == 0:
        raise DataFormatError(f"{where} has no sentence of the stage's sentence_sources "
                              f"{stage.sentence_sources} (it has {corpus.sources})")
    images = len(np.unique(corpus.sent_image[sentences]))
    if stage.has("itm") and images < 2:
        raise DataFormatError(f"{where}: ITM needs sentences of at least two images (a negative "
                              f"is a sentence of another image); it has {images} image with "
                              f"features in {files}; {read}")


class PretrainTask(TaskBase):
    name = "pretrain"
    # the authors' file names and layout: --loadLXMERT OUTPUT/BEST_EVAL_LOSS fine-tunes from it
    checkpoint_files = CheckpointFiles(best="BEST_EVAL_LOSS_LXRT.pth", last="LAST_LXRT.pth",
                                       per_epoch="Epoch{number:02d}_LXRT.pth")  # Epoch01..
    score_is_loss = True  # the validation loss selects BEST_EVAL_LOSS

    def __init__(self, args, stage: StageConfig):
        super().__init__(args)
        self.stage = stage
        self.vocab = Vocab.of(self.tokenizer)
        self.answers = read_pretraining_answers(self.root.path("pretrain", "answers"))
        self.weights = torch.tensor(stage.weights())
        self._valid: Optional[PretrainDataset] = None
        self._train: Optional[PretrainDataset] = None

    # ---- model ---------------------------------------------------------------------------
    def build_model(self):
        return build_pretraining_model(self.config, len(self.answers))

    def load_weights(self, model) -> None:
        if self.args.init:
            load_full(model, self.args.init)
        elif self.args.load_lxmert:
            load_encoder(model, self.args.load_lxmert)
        else:
            log.info("pre-training from scratch (random initialisation)")

    # ---- data ----------------------------------------------------------------------------
    def _topk(self) -> Optional[int]:
        """Images read per feature file: --imageLimit N, --tiny, --fast, else all."""
        args = self.args
        if args.image_limit:
            return args.image_limit
        if args.tiny:
            return PRETRAIN.tiny_images
        return PRETRAIN.fast_images if args.fast else None

    def _dataset(self, names: str, topk: Optional[int], fixed_epoch=None) -> PretrainDataset:
        args, stage = self.args, self.stage
        with rank_zero_first():  # rank 0 builds the caches, the others then read them
            data = load_corpus(self.root, names, self.tokenizer, self.answers, topk,
                               cache_dir=args.pretrain_cache, feature_cache=args.feature_cache,
                               fp16=args.fp16_features)
            sentences = select_sentences(data.corpus, stage.sentence_sources)
            check_split(data, sentences, stage, names, topk)
            check_feature_dim(data.stores, self.config.visual_feat_dim)
            nearest = phrases = None
            if stage.has("itm_hs"):
                path = data.cache_dir / f"neighbors-{data.key}-k{stage.hard_negative_k}.npy"
                nearest = neighbors.load_or_compute(path, data.corpus, data.stores,
                                                    stage.hard_negative_k)
            if stage.text_unit == "phrase":
                phrases = phrase_table(data, sentences, self.vocab)
        return PretrainDataset(data, stage, self.vocab, args.seed, sentences, MAX_SEQ_LENGTH,
                               nearest, phrases, fixed_epoch)

    def train_dataset(self):
        """The training set; the validation split is built and checked with it, so an
        unusable one stops the run before the first step (multi-GPU launchers: in
        --prepareOnly, which calls this too)."""
        self._train = self._dataset(self.args.train, self._topk())
        if self.args.valid:
            self.valid_dataset()
        return self._train

    def valid_dataset(self) -> PretrainDataset:
        if self._valid is None:  # the same masks every epoch: losses comparable over epochs
            topk = min(self.stage.valid_images, self._topk() or self.stage.valid_images)
            self._valid = self._dataset(self.args.valid, topk, fixed_epoch=0)
            if self._train is not None:  # replacement features from training images
                self._valid.feature_pool = self._train
        return self._valid

    # ---- loss ----------------------------------------------------------------------------
    def training_epoch(self) -> int:
        """The epoch in training (the trainer sets it on the training set)."""
        return self._train.epoch if self._train is not None else 0

    def forward(self, model, batch: dict, weights: torch.Tensor):
        labels, present, positions = build_labels(batch, self.config.topic_size)
        out = model(batch["input_ids"], batch["token_position"], batch["input_mask"],
                    batch["feats"], batch["boxes"], labels=labels, mlm_positions=positions)
        losses = out.losses[0].float()
        weights = weights.to(losses.device) * present
        return out, losses, present, positions, (losses * weights).sum()

    def compute_loss(self, model, batch):
        """The training loss: the stage's tasks that have started (`task_start_epochs`)."""
        weights = torch.tensor(self.stage.weights(self.training_epoch()))
        out, losses, present, positions, loss = self.forward(model, batch, weights)
        stats = {f"loss_{n}": losses[k].detach() * present[k] for k, n in enumerate(LOSS_NAMES)}
        stats.update({f"batches_{n}": present[k] for k, n in enumerate(LOSS_NAMES)})
        for name, (hits, count) in hits_and_counts(out, batch, positions).items():
            stats[f"hits_{name}"], stats[f"count_{name}"] = hits, count
        return loss, stats

    def _summary(self, stats: dict) -> dict:
        """Mean loss per trained task over the batches that had its labels, and accuracies."""
        out = {}
        weights = self.stage.weights(self.training_epoch())
        for k, name in enumerate(LOSS_NAMES):
            n = float(stats[f"batches_{name}"])
            if weights[k] > 0 and n:  # left out when no batch had its labels
                out[f"{name}_loss"] = float(stats[f"loss_{name}"]) / n
        for name in ACCURACIES:
            n = float(stats[f"count_{name}"])
            if n and self._scored(name, self.training_epoch()):
                out[f"{name}_acc"] = float(stats[f"hits_{name}"]) / n
        return out

    def _scored(self, name: str, epoch=None) -> bool:
        """Whether accuracy `name` belongs to a task of the stage (started by `epoch`)."""
        tasks = self.stage.tasks_of_epoch(epoch)
        if name in ("mlm", "itm", "qa"):
            return name in tasks
        return "obj" in tasks or "ifrs" in tasks

    def epoch_metrics(self, stats: dict, samples: int) -> dict:
        return self._summary(stats)

    # ---- validation ----------------------------------------------------------------------
    def evaluate(self, ctx, model, split: str) -> EvalResult:
        """The validation loss: each loss averaged over every item it labels in the whole
        split (masked pieces for MLM, answered questions for QA, examples for ITM and the
        topic, regions for the visual losses), then summed with the stage's weights, every
        task of the stage included (also one that starts later in training). That is
        LXMERT's loss with the split as one batch; it does not depend on the evaluation batch
        size or the number of processes (LXMERT averages its batch losses, which does)."""
        dataset = self.valid_dataset() if split == self.args.valid else \
            self._dataset(split, min(self.stage.valid_images, self._topk() or 10 ** 9), 0)

        def step(m, batch):
            out, losses, present, positions, _ = self.forward(m, batch, self.weights)
            items = labelled_items(batch, positions) * present
            counts = hits_and_counts(out, batch, positions)
            return {"loss_sums": losses * items, "items": items,
                    **{f"hits_{k}": h for k, (h, _) in counts.items()},
                    **{f"count_{k}": n for k, (_, n) in counts.items()}}

        totals = ctx.sum_batches(model, dataset, step, desc=f"valid {split}")
        sums, items = totals["loss_sums"], totals["items"]
        means = torch.where(items > 0, sums / items.clamp(min=1), torch.zeros_like(sums))
        valid_loss = float((means * self.weights.double()).sum())
        metrics = {"loss": valid_loss}
        for i, name in enumerate(LOSS_NAMES):
            if self.weights[i] > 0 and items[i] > 0:
                metrics[f"{name}_loss"] = float(means[i])
        for name in ACCURACIES:
            hits, count = float(totals[f"hits_{name}"]), float(totals[f"count_{name}"])
            if count and self._scored(name):
                metrics[f"{name}_acc"] = hits / count
        log.info("valid %s: loss %.4f %s", split, valid_loss,
                 " ".join(f"{a} {b:.4f}" for a, b in metrics.items() if a != "loss"))
        return EvalResult(score=valid_loss, metrics=metrics)

    # ---- checkpoints ---------------------------------------------------------------------
    def run_inputs(self) -> dict:
        """The stage's content (its file may be edited in place between stop and resume),
        apart from its recipe fields, which the run's flags record."""
        content = {k: v for k, v in self.stage.to_dict().items() if k not in RECIPE_FIELDS}
        stage = json.dumps(content, sort_keys=True).encode("utf-8")
        return {"stage_sha1": hashlib.sha1(stage).hexdigest()}

    def task_info(self) -> dict:
        """The stage as run (its config's fields after --tasks/--visualLosses, the recipe
        fields holding the run's values), beside the model sizes and vocabulary."""
        return {"stage": self.stage.to_dict()}

    def checkpoint_state(self, model) -> dict:
        return authors_state_dict(model, self.config)
