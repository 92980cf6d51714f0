"""NLVR2 on the training loop: model, weights, data, CE loss, accuracy/consistency, CSV files.

What the authors do (docs/authors_code.md, "NLVR2"): `CrossEntropyLoss(ignore_index=-1)`
over the two classes, accuracy of argmax, BEST/LAST checkpoints, and `<split>_predict.csv`
files with one `identifier,True|False` line per example (no header; True = prediction 1).
Added here:
consistency (the NLVR2 paper's second metric), result files checked against the split, and a
clear error instead of the authors' silently empty `hidden_predict.csv` (same section).
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tasks.common.paths import DataFileNotFoundError
from tasks.common.readers import split_list
from tasks.common.task import ClassifierTask, EvalResult
from tasks.nlvr2.data import IGNORE_LABEL, load_nlvr2_dataset
from tasks.nlvr2.model import NLVR2Model

HIDDEN_SPLIT = "hidden"


# ---- metrics ----------------------------------------------------------------------------------

def sentence_key(identifier: str) -> str:
    """The sentence an example belongs to. NLVR2 identifiers are
    `{split}-{set_id}-{pair_id}-{sentence_id}`; one sentence of a set is paired with several
    image pairs, so the sentence is `{split}-{set_id}-{sentence_id}` (the pair id left out).
    Identifiers of another shape are their own sentence."""
    parts = identifier.split("-")
    if len(parts) != 4:
        return identifier
    return f"{parts[0]}-{parts[1]}-{parts[3]}"


def consistency(identifiers: Sequence[str], correct: Sequence[bool]) -> float:
    """Share of sentences whose every example is predicted right (NLVR2's consistency)."""
    if len(identifiers) != len(correct):
        raise ValueError(f"{len(identifiers)} identifiers but {len(correct)} results")
    all_right: dict = defaultdict(lambda: True)
    for identifier, ok in zip(identifiers, correct):
        key = sentence_key(identifier)
        all_right[key] = all_right[key] and bool(ok)
    if not all_right:
        return float("nan")
    return sum(all_right.values()) / len(all_right)


def nlvr2_metrics(identifiers: Sequence[str], predictions, labels) -> dict:
    """Accuracy and consistency (fractions) over the labelled examples (label != -1);
    `examples`/`labelled` counts. Unlabelled splits get NaN accuracy and no consistency."""
    predictions = np.asarray(predictions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    labelled = labels != IGNORE_LABEL
    out = {"examples": int(len(labels)), "labelled": int(labelled.sum())}
    if not labelled.any():
        out["accuracy"] = float("nan")
        return out
    correct = predictions[labelled] == labels[labelled]
    out["accuracy"] = float(correct.mean())
    ids = [i for i, keep in zip(identifiers, labelled) if keep]
    out["consistency"] = consistency(ids, correct.tolist())
    return out


# ---- result files -----------------------------------------------------------------------------

def format_predictions(identifiers: Sequence[str], predictions) -> str:
    """The authors' CSV: `identifier,True|False` per line, no header; True = class 1."""
    return "".join(f"{i},{'True' if int(p) == 1 else 'False'}\n"
                   for i, p in zip(identifiers, predictions))


def check_predictions_csv(text: str, identifiers: Sequence[str]) -> None:
    """One line `identifier,True|False` per example of the split, in its order."""
    lines = text.splitlines()
    if len(lines) != len(identifiers):
        raise RuntimeError(f"{len(lines)} prediction lines for {len(identifiers)} examples")
    for n, (line, identifier) in enumerate(zip(lines, identifiers)):
        ident, sep, value = line.rpartition(",")
        if not sep or value not in ("True", "False") or ident != identifier:
            raise RuntimeError(f"prediction line {n + 1} is {line!r}; expected "
                               f"'{identifier},True' or '{identifier},False'")


# ---- the task ---------------------------------------------------------------------------------

class NLVR2Task(ClassifierTask):
    name = "nlvr2"
    class_names = ("False", "True")  # the result file's words; class 1: the statement holds
    num_images = 2

    def __init__(self, args):
        if args.load_lxmert_qa:
            raise SystemExit("--loadLXMERTQA is not supported for NLVR2 (there is no "
                             "pre-trained head for the pair classifier; the authors' code "
                             "ignored the flag silently and started from BERT weights): use "
                             "--loadLXMERT "
                             f"{args.load_lxmert_qa} for the pre-trained encoder, or --load for "
                             "a fine-tuned NLVR2 model")
        super().__init__(args)
        for splits in ([args.test] if args.test else [args.train, args.valid]):
            for split in split_list(splits or ""):
                self.check_split_files(split)

    def check_split_files(self, split: str) -> None:
        """Fail before any model is built when a split's files are missing; the hidden test set
        (test2) is not distributed with the public NLVR2 data, so say what to provide."""
        try:
            self.root.path(self.name, "examples", split)
            self.root.path(self.name, "features", split)
        except DataFileNotFoundError as err:
            if split != HIDDEN_SPLIT:
                raise
            raise SystemExit(
                "--test hidden needs the NLVR2 hidden test set (test2), which is not in the "
                "public release and which LXMERT's process_dataset.py does not convert: "
                "provide nlvr2/hidden.json (the processed test2 file) and "
                "nlvr2_imgfeat/hidden_obj36.tsv (its image features). The authors' code wrote "
                "an empty hidden_predict.csv here instead (docs/authors_code.md, \"NLVR2\").\n"
                f"{err}"
            ) from None

    def build_model(self):
        return NLVR2Model(self.config)

    def load_dataset(self, splits, tiny, fast, require_label):
        return load_nlvr2_dataset(
            self.root, splits, self.tokenizer, tiny=tiny, fast=fast,
            cache_dir=self.args.feature_cache, fp16=self.args.fp16_features,
            require_label=require_label, feat_dim=self.config.visual_feat_dim)

    # ---- metrics and result files (the loss is ClassifierTask's) -----------------------------

    def evaluate(self, ctx, model, split: str) -> EvalResult:
        dataset, predictions = self.predict_labels(ctx, model, split)
        metrics = nlvr2_metrics(dataset.identifiers, predictions, dataset.labels)
        score = metrics["accuracy"]
        for key in ("accuracy", "consistency"):  # percentages in logs, as the other tasks
            if key in metrics and not math.isnan(metrics[key]):
                metrics[key] *= 100
        if math.isnan(score):
            del metrics["accuracy"]
        return EvalResult(score, {"split": split, **metrics}, predictions)

    def write_results(self, ctx, result: EvalResult, split: str) -> Optional[Path]:
        identifiers = self.dataset(split).identifiers
        text = format_predictions(identifiers, result.predictions)
        check_predictions_csv(text, identifiers)
        return self.write_result_file(ctx, f"{split}_predict.csv", text, len(identifiers))
