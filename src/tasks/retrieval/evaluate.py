"""Exact Flickr30k retrieval evaluation: every caption x every image scored once, on the device.

`score_logits` runs the model over all (caption, image) pairs of a split: the tokens of every
caption and the region features of every image are put on the device once, each image's
visual-stream input (feature and box projections, visual [CLS]) is computed once per
evaluation, and pair batches are built there by index, `pairs_per_forward` pairs per forward,
under the given autocast. The encoder runs in that precision; the 2-way head runs in
fp32 on the pooled output, so that bf16 does not round the logits into ties. The result is the
logit matrix [Nc, Ni, 2] (fp32, on the device). Captions are scored longest first, so each
chunk is cut to nearly its real text length (exact: padded positions are masked everywhere).
With several processes the length-sorted captions are dealt round-robin to the ranks and the
shares are gathered.

`retrieval_report` derives everything from that one matrix with `tasks.retrieval.metrics`, for
both score functions (prob = softmax(logits)[:, 1], logit = raw logits[:, 1]):
  ir           image retrieval: each caption ranks all images
  tr_standard  text retrieval, standard protocol: each image ranks all captions, a hit when any
               of its captions is in the top K
  tr_first     text retrieval, the authors' protocol (sent_retrieval*.py): only the first
               caption of each image is a candidate; each image ranks those Ni captions
Ranks are 0-based; R@K = 100*mean(rank < K), medr = floor(median+1), meanr = mean+1. The
default ranking is conservative: a candidate tied with the positive counts against the query
(`rank_method="optimistic"` counts only strictly greater scores, `"argsort"` is the authors'
per-row np.argsort(-row) on float64; all three agree without ties). Every report counts the
queries whose positive is tied (`tied_positives`), so a saturated score is visible.

Scoring mode. The model is scored in eval mode (dropout off, deterministic). The authors'
test loops never called model.eval(), so their published numbers were scored with dropout
active; `authors_scoring` repeats the scoring in train mode with N seeds and reports the mean
and spread of every metric, for a like-for-like comparison.

Order. Matrix columns are the split's images in annotation (JSON) order and rows its captions
image-major, exactly the authors' IR matrix; the authors' TR candidates (first captions, JSON
order) are therefore the same candidate list. The authors' TR queries are the images in TSV
order; per-query ranks do not depend on the query order, and the saved tr_first ranks are
additionally given in TSV order (`tr_first_tsv_order`), so they equal the authors' list
whatever order the feature file has.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from tasks.common import distributed
from tasks.common.batching import longest_first, text_lengths, trimmed_length
from tasks.common.checkpoints import atomic_write_json
from tasks.common.readers import TEXT_KEYS
from tasks.retrieval.data import RetrievalSplit
from tasks.retrieval.metrics import (recall_metrics, retrieval_ranks, score_from_logits,
                                     tied_positives)

log = logging.getLogger(__name__)

SCORE_FUNCTIONS = ("prob", "logit")
SCORE_LABELS = {"prob": "p(match) = softmax(logits)[:,1]", "logit": "raw logit[:,1]"}
PROTOCOLS = ("ir", "tr_standard", "tr_first")
PROTOCOL_LABELS = {
    "ir": "image retrieval (each caption ranks all images)",
    "tr_standard": "text retrieval, standard (each image ranks all captions; hit if any of "
                   "its captions is in the top K)",
    "tr_first": "text retrieval, the authors' protocol (first caption of each image only)",
}
DIRECTION_PROTOCOLS = {"image": ("ir",), "text": ("tr_standard",),
                       "both": ("ir", "tr_standard")}
FINAL_FORMAT = "Final r1:%.3f, r5:%.3f, r10:%.3f, mder:%.3f, meanr:%.3f"


@dataclass
class EvalOptions:
    """How one evaluation scores and ranks a split (the retrieval flags, resolved)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    pairs_per_forward: int = 256
    score_function: str = "prob"           # selected score: "prob" or "logit"
    direction: str = "both"                # protocols of the validation score
    rank_method: str = "conservative"
    precision: str = "fp32"                # the label written into the metrics
    autocast: Optional[Callable] = None    # () -> context manager of that precision
    dist: Optional[distributed.DistInfo] = None
    progress: bool = False
    authors_scoring: int = 0               # N > 0: N train-mode scorings, mean and spread
    seed: int = 0                          # first seed of those scorings


def default_pairs_per_forward(device: torch.device) -> int:
    return 4096 if device.type == "cuda" else 256


def scoring_order(lengths: np.ndarray, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Caption indices that `rank` scores, longest first. Sorting by length gives each chunk
    captions of nearly equal length, so trimming removes almost all padded positions (a chunk
    in file order pads to its longest caption); dealing the sorted list round-robin keeps the
    ranks' work equal. The order changes only the work done, never a score."""
    return np.asarray(longest_first(range(len(lengths)), np.asarray(lengths)),
                      dtype=np.int64)[rank::world_size]


class DeviceSplit:
    """A split's caption tokens and image features, resident on one device."""

    def __init__(self, split: RetrievalSplit, device: torch.device):
        self.split = split
        self.device = device
        self.tokens = {k: torch.from_numpy(split.tokens[k]).to(device) for k in TEXT_KEYS}
        feats, boxes = split.dense_features()
        self.feats = torch.from_numpy(feats).to(device)
        self.boxes = torch.from_numpy(boxes).to(device)
        self.caption_to_image = torch.from_numpy(split.caption_to_image).to(device)
        # real tokens per caption, on the host: lets each chunk drop padded positions (exact)
        # without a device sync
        self.lengths = text_lengths(split)

    def chunk_length(self, captions: np.ndarray, multiple: int = 4) -> int:
        """Text length covering `captions`, rounded up to `multiple`."""
        longest = int(self.lengths[captions].max())
        return trimmed_length(longest, self.tokens["input_ids"].shape[1], multiple)

    @property
    def num_captions(self) -> int:
        return self.split.num_captions

    @property
    def num_images(self) -> int:
        return self.split.num_images


def _split_model(model):
    """(encoder, head) of a RetrievalModel, or (None, None) for any other model."""
    encoder = getattr(model, "lxrt_encoder", None)
    head = getattr(model, "seq_relationship_new", None)
    return (encoder, head) if encoder is not None and head is not None else (None, None)


def _visual_inputs(model, data: DeviceSplit, autocast, chunk: int = 256) -> Optional[torch.Tensor]:
    """Each image's visual-stream input [Ni, 1+O, H], computed once per evaluation (it does not
    depend on the caption), so pair batches gather H-dim rows instead of D-dim region features
    and the feature projection runs Ni times instead of Nc x Ni times. None for other models."""
    encoder, _ = _split_model(model)
    if encoder is None:
        return None
    parts = []
    with autocast():
        for s in range(0, data.num_images, chunk):
            parts.append(encoder.bert.embed_visual(data.feats[s:s + chunk],
                                                   data.boxes[s:s + chunk]))
    return torch.cat(parts)


def _head_logits(model, input_ids, token_position, input_mask, feats, boxes, autocast,
                 visual=None):
    """Encoder under `autocast`, then the fp32 head on the pooled output. `visual`: the pairs'
    precomputed visual inputs (then `feats`/`boxes` are unused). A model without the
    RetrievalModel attributes is called whole."""
    encoder, head = _split_model(model)
    with autocast():
        if encoder is None:
            return model(input_ids, token_position, input_mask, feats, boxes).float()
        pooled = encoder(input_ids, token_position, input_mask, feats, boxes,
                         visual_embeds=visual)
    with torch.autocast(device_type=pooled.device.type, enabled=False):
        return head(pooled.float())


@torch.no_grad()
def score_captions(model, data: DeviceSplit, captions: np.ndarray, pairs_per_forward: int,
                   autocast: Optional[Callable] = None, progress: bool = False,
                   train_mode: bool = False) -> torch.Tensor:
    """Logits [len(captions), Ni, 2] (fp32, on the data's device) of the caption indices
    `captions`, in that order, against every image; `pairs_per_forward` pairs per forward.
    `train_mode`: dropout on, as the authors' test loops (every pair then gets its own dropout
    draw, so the per-image visual input is not shared between pairs)."""
    if pairs_per_forward < 1:
        raise ValueError(f"pairs per forward must be positive, got {pairs_per_forward}")
    autocast = autocast or contextlib.nullcontext
    captions = np.asarray(captions, dtype=np.int64)
    n_img, n_pairs = data.num_images, len(captions) * data.num_images
    rows_to_caption = torch.from_numpy(captions).to(data.device)
    out = torch.empty(n_pairs, 2, dtype=torch.float32, device=data.device)
    was_training = model.training
    model.train(train_mode)
    steps = range(0, n_pairs, pairs_per_forward)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc="score pairs", leave=False, dynamic_ncols=True)
    try:
        visual = None if train_mode else _visual_inputs(model, data, autocast)
        for s in steps:
            e = min(s + pairs_per_forward, n_pairs)
            p = torch.arange(s, e, device=data.device)
            cap = rows_to_caption.index_select(0, p // n_img)
            img = p % n_img
            # host-side lengths: no device sync to find how much text this chunk needs
            length = data.chunk_length(captions[s // n_img:(e - 1) // n_img + 1])
            if visual is None:
                feats, boxes, pair_visual = (data.feats.index_select(0, img),
                                             data.boxes.index_select(0, img), None)
            else:
                feats, boxes, pair_visual = None, None, visual.index_select(0, img)
            out[s:e] = _head_logits(
                model, data.tokens["input_ids"][:, :length].index_select(0, cap),
                data.tokens["token_position"][:, :length].index_select(0, cap),
                data.tokens["input_mask"][:, :length].index_select(0, cap),
                feats, boxes, autocast, pair_visual)
    finally:
        model.train(was_training)
    return out.view(len(captions), n_img, 2)


@torch.no_grad()
def score_logits(model, data: DeviceSplit, pairs_per_forward: int,
                 autocast: Optional[Callable] = None, dist: Optional[distributed.DistInfo] = None,
                 progress: bool = False, train_mode: bool = False) -> torch.Tensor:
    """The full logit matrix [Nc, Ni, 2] (captions in split order) on `data.device`. Captions
    are scored longest first; with `dist` each rank scores its share and all ranks get the
    whole matrix."""
    rank, world = (dist.rank, dist.world_size) if dist is not None and dist.enabled else (0, 1)
    captions = scoring_order(data.lengths, rank, world)
    local = score_captions(model, data, captions, pairs_per_forward, autocast, progress,
                           train_mode)
    if world > 1:
        parts = distributed.gather_objects(dist, (captions, local.cpu()))
        captions = np.concatenate([c for c, _ in parts])
        local = torch.cat([x for _, x in parts]).to(data.device)
    full = torch.empty_like(local)
    full[torch.from_numpy(captions).to(data.device)] = local
    return full


def retrieval_report(logits: torch.Tensor, split: RetrievalSplit, score_function: str = "prob",
                     rank_method: str = "conservative") -> dict:
    """Ranks and metrics of the three protocols for both score functions, from one logit
    matrix. Returns {"metrics": {fn: {protocol: {...}}}, "ranks": {fn: {protocol: ndarray}},
    "ties": {fn: {protocol: queries whose positive is tied}}, "scores": selected score matrix
    (tensor)}."""
    if score_function not in SCORE_FUNCTIONS:
        raise ValueError(f"unknown score function {score_function!r}")
    c2i = torch.as_tensor(split.caption_to_image, device=logits.device)
    metrics, ranks, ties, selected = {}, {}, {}, None
    for fn in SCORE_FUNCTIONS:
        scores = score_from_logits(logits, fn)
        if fn == score_function:
            selected = scores
        r = retrieval_ranks(scores, c2i, method=rank_method)
        r = {k: (v.cpu().numpy() if torch.is_tensor(v) else np.asarray(v)) for k, v in r.items()}
        ranks[fn] = r
        metrics[fn] = {k: recall_metrics(v) for k, v in r.items()}
        ties[fn] = tied_positives(scores, c2i)
    return {"metrics": metrics, "ranks": ranks, "ties": ties, "scores": selected}


def mean_recall(metrics: dict, protocols) -> float:
    """Mean of R@1, R@5, R@10 over `protocols`, in [0, 1] (rsum / (300 * len))."""
    vals = [metrics[p][k] for p in protocols for k in ("r1", "r5", "r10")]
    return float(sum(vals) / (100.0 * len(vals)))


def summary_metrics(report: dict, split: RetrievalSplit, options: EvalOptions,
                    seconds: float) -> dict:
    """The JSON-able metrics of one evaluation, each number labelled with protocol and score
    function."""
    m = report["metrics"]
    score_function, direction = options.score_function, options.direction
    primary = {p: m[score_function][p] for p in PROTOCOLS}
    pairs = split.num_images * split.num_captions
    return {
        "split": split.name, "num_images": split.num_images,
        "num_captions": split.num_captions, "pairs": pairs,
        "direction": direction, "score_function": score_function,
        "score_function_label": SCORE_LABELS[score_function],
        "rank_method": options.rank_method,
        "tied_positives": report["ties"],
        "mean_recall": mean_recall(m[score_function], DIRECTION_PROTOCOLS[direction]) * 100,
        "mean_recall_protocols": list(DIRECTION_PROTOCOLS[direction]),
        "primary": primary,
        "all": {fn: m[fn] for fn in SCORE_FUNCTIONS},
        "protocols": PROTOCOL_LABELS, "score_functions": SCORE_LABELS,
        "seconds": seconds, "pairs_per_s": pairs / max(seconds, 1e-9),
        "pairs_per_forward": options.pairs_per_forward, "precision": options.precision,
        "scoring_mode": "eval (dropout off)",
    }


def metric_spread(reports: list) -> dict:
    """{fn: {protocol: {metric: {mean, std, min, max, runs}}}} over several reports' metrics;
    std is the sample standard deviation (0 for one run)."""
    out: dict = {}
    for fn, by_protocol in reports[0]["metrics"].items():
        out[fn] = {}
        for p, values in by_protocol.items():
            out[fn][p] = {}
            for key in values:
                runs = np.array([r["metrics"][fn][p][key] for r in reports], dtype=np.float64)
                out[fn][p][key] = {
                    "mean": float(runs.mean()),
                    "std": float(runs.std(ddof=1)) if len(runs) > 1 else 0.0,
                    "min": float(runs.min()), "max": float(runs.max()),
                    "runs": runs.tolist()}
    return out


def mean_report(reports: list) -> dict:
    """One report whose metrics are the means over `reports` (the metric spread under
    "spread"); ranks, ties and scores are the first run's, the ties of every run are listed."""
    spread = metric_spread(reports)
    first = reports[0]
    metrics = {fn: {p: {k: v["mean"] for k, v in by_p.items()} for p, by_p in by_fn.items()}
               for fn, by_fn in spread.items()}
    ties = {fn: {p: [r["ties"][fn][p] for r in reports] for p in by_fn}
            for fn, by_fn in first["ties"].items()}
    return {"metrics": metrics, "ranks": first["ranks"], "scores": first["scores"],
            "ties": first["ties"], "spread": spread, "ties_per_run": ties}


def authors_scoring_runs(model, data: DeviceSplit, options: EvalOptions):
    """Score `data` `options.authors_scoring` times in train mode (dropout on, as the authors'
    test loops), run i with torch seed `options.seed + i`; the global RNG state is restored
    afterwards. Returns (the first run's logits, one report per run)."""
    devices = [data.device] if data.device.type == "cuda" else []
    first, reports = None, []
    for run in range(options.authors_scoring):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(options.seed + run)
            logits = score_logits(model, data, options.pairs_per_forward, options.autocast,
                                  options.dist, options.progress, train_mode=True)
        reports.append(retrieval_report(logits, data.split, options.score_function,
                                        options.rank_method))
        first = logits if first is None else first
    return first, reports


def eval_log_lines(metrics: dict) -> list[str]:
    """eval.log lines: a label line, then the authors' `Final ...` line, per protocol and score
    function (the selected score function first)."""
    fns = [metrics["score_function"]] + [f for f in SCORE_FUNCTIONS
                                         if f != metrics["score_function"]]
    lines = [f"# split {metrics['split']}: {metrics['num_captions']} captions x "
             f"{metrics['num_images']} images, ranking {metrics['rank_method']}, scoring "
             f"{metrics['scoring_mode']}"]
    authors = metrics.get("authors_scoring")
    for fn in fns:
        for p in PROTOCOLS:
            r = metrics["all"][fn][p]
            tag = "selected" if fn == metrics["score_function"] else "also"
            lines.append(f"# {p} | score {fn} ({SCORE_LABELS[fn]}, {tag}) | {PROTOCOL_LABELS[p]}")
            lines.append(FINAL_FORMAT % (r["r1"], r["r5"], r["r10"], r["medr"], r["meanr"]))
            if authors:
                lines.append(spread_line(authors["spread"][fn][p]))
        lines.append(f"# tied positives, score {fn}: " + ", ".join(
            f"{p} {n}" for p, n in metrics["tied_positives"][fn].items()))
    return lines


def spread_line(spread: dict) -> str:
    """`# over N runs: R@1 mean ± std [min, max], ...` for one protocol."""
    runs = len(spread["r1"]["runs"])
    return f"# over {runs} runs (mean ± std [min, max]): " + ", ".join(
        f"R@{k[1:]} {v['mean']:.3f} ± {v['std']:.3f} [{v['min']:.3f}, {v['max']:.3f}]"
        for k, v in spread.items() if k in ("r1", "r5", "r10"))


def write_outputs(output: Path, split: RetrievalSplit, logits: torch.Tensor, report: dict,
                  metrics: dict) -> dict:
    """<split>_scores.npy (selected score function, [Nc, Ni] float32), <split>_logits.npy
    ([Nc, Ni, 2]), <split>_ranks.npz, <split>_metrics.json; appends eval.log."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    name = split.name
    paths = {"scores": output / f"{name}_scores.npy", "logits": output / f"{name}_logits.npy",
             "ranks": output / f"{name}_ranks.npz", "metrics": output / f"{name}_metrics.json",
             "eval_log": output / "eval.log"}
    np.save(paths["scores"], report["scores"].float().cpu().numpy())
    np.save(paths["logits"], logits.float().cpu().numpy())
    arrays = {f"{fn}_{p}": v for fn, r in report["ranks"].items() for p, v in r.items()}
    for fn in SCORE_FUNCTIONS:
        arrays[f"{fn}_tr_first_tsv_order"] = report["ranks"][fn]["tr_first"][split.tsv_order]
    arrays["caption_to_image"] = split.caption_to_image
    arrays["tsv_order"] = split.tsv_order
    np.savez(paths["ranks"], **arrays)
    full = dict(metrics)
    full["files"] = {k: str(v) for k, v in paths.items()}
    full["images"] = list(split.img_paths)
    full["caption_to_image"] = split.caption_to_image.tolist()
    atomic_write_json(paths["metrics"], full, indent=2)
    with open(paths["eval_log"], "a") as handle:
        handle.write("\n".join(eval_log_lines(metrics)) + "\n")
    return paths


def evaluate_split(model, split: RetrievalSplit, options: EvalOptions,
                   data: Optional[DeviceSplit] = None):
    """Score `split` and rank it: (metrics dict, report, logits). `options.authors_scoring`
    N > 0: N scorings in train mode (seeds seed..seed+N-1); the metrics are their means, with
    the spread under "authors_scoring", and the logits and ranks are the first run's. `data`:
    the split already on the device (built from `split` when None)."""
    t0 = time.time()
    data = data or DeviceSplit(split, options.device)
    runs = options.authors_scoring
    if runs > 0:
        logits, reports = authors_scoring_runs(model, data, options)
        report = mean_report(reports)
    else:
        logits = score_logits(model, data, options.pairs_per_forward, options.autocast,
                              options.dist, options.progress)
        report = retrieval_report(logits, split, options.score_function, options.rank_method)
    if options.device.type == "cuda":
        torch.cuda.synchronize(options.device)
    metrics = summary_metrics(report, split, options, time.time() - t0)
    if runs > 0:
        metrics["scoring_mode"] = (f"train (dropout on, the authors' protocol), mean of "
                                   f"{runs} runs")
        metrics["authors_scoring"] = {"runs": runs,
                                      "seeds": [options.seed + i for i in range(runs)],
                                      "spread": report["spread"],
                                      "tied_positives": report["ties_per_run"]}
    return metrics, report, logits


def format_metrics(metrics: dict) -> str:
    fn = metrics["score_function"]
    parts = [f"{metrics['split']} ({metrics['num_captions']}x{metrics['num_images']}, "
             f"score {fn})"]
    for p in PROTOCOLS:
        r = metrics["primary"][p]
        parts.append(f"{p}: R@1 {r['r1']:.2f} R@5 {r['r5']:.2f} R@10 {r['r10']:.2f} "
                     f"medr {r['medr']:.0f} meanr {r['meanr']:.2f}")
    ties = metrics["tied_positives"][fn]
    parts.append("tied positives " + " ".join(f"{p} {n}" for p, n in ties.items()))
    if "authors_scoring" in metrics:
        parts.append(f"mean of {metrics['authors_scoring']['runs']} train-mode scorings")
    return "; ".join(parts)

