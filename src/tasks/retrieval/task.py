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
from lxrt.tokenization import LXRTTokenizer, find_vocab_file
from tasks.common.args import subset_flags, warn_if_loaded_whole
from tasks.common.model_setup import (MAX_SEQ_LENGTH, build_config, load_task_weights,
                                      model_run_info)
from tasks.common.paths import DataRoot
from tasks.common.precision import autocast as make_autocast
from tasks.common.trainer import EvalResult, Task
from tasks.retrieval.data import (PAIRS_PER_CAPTION, RetrievalTrainDataset, SplitLoader,
                                  check_split_disjoint)
from tasks.retrieval.evaluate import (DIRECTION_PROTOCOLS, DeviceSplit, EvalOptions,
                                      default_pairs_per_forward, eval_log_lines, evaluate_split, format_metrics,
                                      mean_recall, write_outputs)
from tasks.retrieval.model import RetrievalModel

log = logging.getLogger(__name__)


def pair_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The authors' `nn.BCELoss()(softmax(logits), one_hot(target)) * 2`, in fp32."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs = torch.softmax(logits.float(), dim=-1)
        onehot = F.one_hot(target, 2).float()
        return F.binary_cross_entropy(probs, onehot) * 2


class RetrievalTask(Task):
    name = "retrieval"

    def __init__(self, args):
        self.args = args
        self.root = DataRoot(args.data_root)
        self.config = build_config(args)
        self.tokenizer = LXRTTokenizer(find_vocab_file(self.root.root), MAX_SEQ_LENGTH)
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

    def run_info(self) -> dict:
        return model_run_info("retrieval", self.config, self.tokenizer)

    def build_model(self):
        return RetrievalModel(self.config)

    def load_weights(self, model) -> None:
        load_task_weights(self.args, model, self.config,
                          lambda m, path: load_itm_head(m, path, self.config))

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
        logits = model(batch["input_ids"].reshape(-1, length),
                       batch["token_position"].reshape(-1, length),
                       batch["input_mask"].reshape(-1, length),
                       batch["feats"].reshape(-1, n_box, dim),
                       batch["boxes"].reshape(-1, n_box, 4))
        target = batch["target"].reshape(-1)  # sample-major: 4 pairs of caption 0, then 1, ...
        loss = pair_loss(logits, target)
        hits = (logits.argmax(1) == target).sum()
        return loss, {"pair_hits": hits}

    def train_score(self, stats, samples):
        return stats["pair_hits"].item() / max(samples * PAIRS_PER_CAPTION, 1)

    # ---- evaluation -----------------------------------------------------------------------

    def pairs_per_forward(self, device) -> int:
        return self.args.pairs_per_forward or default_pairs_per_forward(device)

    def eval_options(self, trainer, split: str) -> EvalOptions:
        """The flags of one evaluation of `split`; --evalPrecision overrides the run's."""
        precision = self.args.eval_precision or trainer.precision
        return EvalOptions(
            device=trainer.device, pairs_per_forward=self.pairs_per_forward(trainer.device),
            score_function=self.args.score_function, direction=self.args.direction,
            rank_method=self.args.rank_method, precision=precision,
            autocast=functools.partial(make_autocast, trainer.device, precision),
            dist=trainer.dist, progress=trainer.is_main and trainer.use_tqdm,
            authors_scoring=self.authors_scoring_runs(split), seed=self.args.seed)

    def authors_scoring_runs(self, split: str) -> int:
        """--authorsScoring applies to the --test split; validation stays in eval mode, so
        model selection is deterministic."""
        runs = getattr(self.args, "authors_scoring", 0) or 0
        return runs if split == self.args.test else 0

    def evaluate(self, trainer, model, split: str) -> EvalResult:
        args = self.args
        data_split = self.split(split)
        key = (split, str(trainer.device))
        if key not in self._device_splits:
            self._device_splits[key] = DeviceSplit(data_split, trainer.device)
        metrics, report, logits = evaluate_split(model, data_split,
                                                 self.eval_options(trainer, split),
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

    def write_results(self, trainer, result: EvalResult, split: str):
        if not trainer.is_main:
            return None
        pred = result.predictions
        paths = write_outputs(Path(trainer.output), pred["split"], pred["logits"],
                              pred["report"], result.metrics)
        for line in eval_log_lines(result.metrics):
            log.info(line)
        log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
        return paths
