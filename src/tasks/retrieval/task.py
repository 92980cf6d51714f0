"""Flickr30k image/text retrieval on the shared training loop.

Model: `RetrievalModel` (LXMERT-S encoder + `seq_relationship_new`, raw logits).
Weights: --loadLXMERTQA P copies the encoder and the pre-trained ITM head
(`cls.seq_relationship` -> `seq_relationship_new`); --loadLXMERT P the encoder only (the
authors' IR script ignored it); --load X a fine-tuned model (X.pth).
Training: the authors' 4 pairs per caption, loss `BCELoss(softmax(logits), one_hot) * 2`
(= 2 x CE, BCELoss's log clamp included), computed in fp32.
Evaluation: the exact all-captions x all-images evaluator of `evaluate.py`; the validation
score is the mean of R@1/5/10 (in [0, 1]) of the protocols of --direction (image: IR;
text: standard TR; both: IR and standard TR) under --scoreFunction.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from lxrt.loading import load_itm_head
from tasks.common.args import subset_flags, warn_if_loaded_whole
from tasks.common.precision import autocast as make_autocast
from tasks.common.readers import TEXT_KEYS
from tasks.common.task import EvalResult, TaskBase
from tasks.retrieval.data import (PAIRS_PER_CAPTION, RetrievalTrainDataset, SplitLoader,
                                  check_split_disjoint)
from tasks.retrieval.evaluate import (DIRECTION_PROTOCOLS, DeviceSplit, EvalOptions,
                                      default_pairs_per_forward, eval_log_lines, evaluate_split,
                                      format_metrics, mean_recall, write_outputs)
from tasks.retrieval.model import RetrievalModel

log = logging.getLogger(__name__)


def pair_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The authors' `nn.BCELoss()(softmax(logits), one_hot(target)) * 2`, in fp32."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs = torch.softmax(logits.float(), dim=-1)
        onehot = F.one_hot(target, 2).float()
        return F.binary_cross_entropy(probs, onehot) * 2


class RetrievalTask(TaskBase):
    name = "retrieval"

    def __init__(self, args):
        super().__init__(args)
        self.splits = self._split_loader(args.tiny, args.fast)
        self._whole_splits = None  # the --test split's loader when --tiny/--fast cut the others
        self._device_splits: dict = {}

    def _split_loader(self, tiny: bool, fast: bool) -> SplitLoader:
        args = self.args
        hold_out = bool(args.train) and args.valid == "minival"
        return SplitLoader(self.root, self.tokenizer, valid_images=args.valid_images,
                           tiny=tiny, fast=fast, cache_dir=args.feature_cache,
                           fp16=args.fp16_features, hold_out_minival=hold_out,
                           feat_dim=self.config.visual_feat_dim)

    def split(self, name: str):
        """The split `name`; the --test split is loaded whole even under --tiny/--fast."""
        tiny, fast = subset_flags(self.args, name)
        if (tiny, fast) == (self.args.tiny, self.args.fast):
            return self.splits.split(name)
        if self._whole_splits is None:
            warn_if_loaded_whole(self.args, name, tiny, fast)
            self._whole_splits = self._split_loader(tiny, fast)
        return self._whole_splits.split(name)

    # ---- model and weights ----------------------------------------------------------------

    def build_model(self):
        return RetrievalModel(self.config)

    def load_head(self, model, path) -> None:
        load_itm_head(model, path, self.config)

    # ---- data -----------------------------------------------------------------------------

    def train_dataset(self):
        args = self.args
        if args.train != "train":
            raise SystemExit(f"--train {args.train!r}: retrieval trains on the Flickr30k "
                             f"'train' split only")
        split = self.splits.split("train")
        if args.valid:
            valid = self.splits.split(args.valid)  # fail before training, not after epoch 1
            if args.valid in ("test",):
                log.warning("--valid %s: model selection (BEST.pth) on the test images, as the "
                            "authors' --valid valid; use --valid minival for a held-out "
                            "subset of the train images", args.valid)
            else:
                check_split_disjoint(split, valid)
        hard = self.splits.hard_negatives()
        return RetrievalTrainDataset(split, hard, args.seed)

    # ---- loss -----------------------------------------------------------------------------

    def compute_loss(self, model, batch):
        length = batch["input_ids"].shape[-1]
        n_box, dim = batch["feats"].shape[-2:]
        logits = self.logits(model, {  # one row per pair
            **{k: batch[k].reshape(-1, length) for k in TEXT_KEYS},
            "feats": batch["feats"].reshape(-1, n_box, dim),
            "boxes": batch["boxes"].reshape(-1, n_box, 4)})
        target = batch["target"].reshape(-1)  # sample-major: 4 pairs of caption 0, then 1, ...
        loss = pair_loss(logits, target)
        hits = (logits.argmax(1) == target).sum()
        return loss, {"pair_hits": hits}

    def train_score(self, stats, samples):
        return stats["pair_hits"].item() / max(samples * PAIRS_PER_CAPTION, 1)

    # ---- evaluation -----------------------------------------------------------------------

    def pairs_per_forward(self, device) -> int:
        return self.args.pairs_per_forward or default_pairs_per_forward(device)

    def eval_options(self, ctx, split: str) -> EvalOptions:
        """The flags of one evaluation of `split` in the context `ctx`; --evalPrecision
        overrides the run's precision."""
        args = self.args
        autocast = ctx.autocast
        if args.eval_precision:
            autocast = functools.partial(make_autocast, ctx.device, args.eval_precision)
        return EvalOptions(
            device=ctx.device, pairs_per_forward=self.pairs_per_forward(ctx.device),
            score_function=args.score_function, direction=args.direction,
            rank_method=args.rank_method, precision=args.eval_precision or args.precision,
            autocast=autocast, dist=ctx.dist, progress=ctx.progress,
            authors_scoring=self.authors_scoring_runs(split), seed=args.seed)

    def authors_scoring_runs(self, split: str) -> int:
        """--authorsScoring applies to the --test split; validation stays in eval mode, so
        model selection is deterministic."""
        runs = getattr(self.args, "authors_scoring", 0) or 0
        return runs if split == self.args.test else 0

    def evaluate(self, ctx, model, split: str) -> EvalResult:
        args = self.args
        data_split = self.split(split)
        key = (split, str(ctx.device))
        if key not in self._device_splits:
            self._device_splits[key] = DeviceSplit(data_split, ctx.device)
        metrics, report, logits = evaluate_split(model, data_split,
                                                 self.eval_options(ctx, split),
                                                 data=self._device_splits[key])
        if split != args.test:  # validation: keep nothing big around
            del self._device_splits[key]
        score = mean_recall(report["metrics"][args.score_function],
                            DIRECTION_PROTOCOLS[args.direction])
        log.info("%s: %.0f pairs/s, %.1f s", format_metrics(metrics), metrics["pairs_per_s"],
                 metrics["seconds"])
        report["scores"] = report["scores"].cpu()
        return EvalResult(score, metrics, {"split": data_split, "logits": logits.cpu(),
                                           "report": report})

    def write_results(self, ctx, result: EvalResult, split: str):
        if not ctx.is_main:
            return None
        pred = result.predictions
        paths = write_outputs(Path(ctx.output), pred["split"], pred["logits"],
                              pred["report"], result.metrics)
        for line in eval_log_lines(result.metrics):
            log.info(line)
        log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
        return paths
