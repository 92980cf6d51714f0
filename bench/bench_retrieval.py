"""Benchmark: exact Flickr30k-style retrieval scoring, the authors' way vs the fast path.

    python bench/bench_retrieval.py                      # GPU: 1000 images x 5000 captions,
                                                         #      bert-base sizes
    python bench/bench_retrieval.py --device cpu         # CPU: 50 x 250, small model
    python bench/bench_retrieval.py --images 20 --config small --device cpu

A generated set (random region features, Flickr-like captions, a randomly initialised model)
is scored twice, in the same run:
  faithful  the authors' image_retrieval_test.py loop: fp32, one caption repeated against 500
            images per forward, the 500 images' features moved from the CPU each forward,
            scores copied into a float64 numpy matrix, np.argsort(-row) per caption
  fast      tasks.retrieval.evaluate: caption tokens and all image features resident on the
            device, pair batches built by index (--pairsPerForward, default 4096 on GPU),
            bf16 autocast on GPU (fp32 head), scores kept on the device, ranking once on the
            whole matrix (tasks.retrieval.metrics)
Both report pairs/s, total time and R@1/5/10 (IR; TR standard and the authors' first-caption
TR for the fast path, TR-first for the faithful one) with p(match) = softmax[:,1]. A random
model is near chance: the point is speed, and that both paths give the same ranks.
--faithfulCaptions K times the faithful loop on the first K captions only and extrapolates.
Writes bench/results/retrieval.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lxrt.config import LXRTConfig
from lxrt.tokenization import LXRTTokenizer, find_vocab_file
from tasks.common.precision import autocast as make_autocast
from tasks.retrieval.data import FlickrAnnotations, build_split, tokenize_captions
from tasks.retrieval.evaluate import (DeviceSplit, retrieval_report, score_captions,
                                      score_logits)
from tasks.retrieval.metrics import argsort_ranks_numpy, recall_metrics
from tasks.retrieval.model import RetrievalModel
from tools.make_data import small_config_dict

ROOT = Path(__file__).resolve().parents[1]

WORDS = {"adj": ["small", "large", "red", "blue", "young", "old", "happy", "wet", "dark"],
         "noun": ["dog", "man", "woman", "child", "car", "ball", "bike", "boat", "horse"],
         "verb": ["runs", "sits", "jumps", "stands", "rides", "plays", "looks", "walks"],
         "place": ["on the grass", "in the street", "near the water", "in a park",
                   "on a beach", "inside a building", "next to a fence"]}


def caption(rng) -> str:
    """A caption of Flickr30k-like length: 5 to 30+ tokens (truncated at 20), most 10-18."""
    words = ["A", rng.choice(WORDS["adj"]), rng.choice(WORDS["noun"]), rng.choice(WORDS["verb"])]
    for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
        words += [rng.choice(WORDS["place"]), "with a", rng.choice(WORDS["adj"]),
                  rng.choice(WORDS["noun"])][: rng.integers(1, 5)]
    return " ".join(words) + "."


def make_set(n_images: int, caps: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    img_paths = [f"{1000000 + i}.jpg" for i in range(n_images)]
    captions = [[caption(rng) for _ in range(caps)] for _ in range(n_images)]
    store = {}
    for p in img_paths:
        xy = np.sort(rng.random((36, 2, 2)), axis=1).reshape(36, 4)[:, [0, 2, 1, 3]]
        store[p] = (rng.random((36, dim), dtype=np.float32), xy.astype(np.float32))
    ann = FlickrAnnotations(Path("generated.json"),
                            [{"img_path": p, "sentences": c} for p, c in zip(img_paths, captions)],
                            img_paths, [int(p.split(".")[0]) for p in img_paths], captions)
    return ann, store


def build_config(name: str, dim: int) -> LXRTConfig:
    if name == "small":
        return LXRTConfig.from_dict(small_config_dict(dim, 9500), l_layers=0, x_layers=5,
                                    r_layers=0)
    if name == "full":
        return LXRTConfig(visual_feat_dim=dim)
    return LXRTConfig.from_json_file(name, l_layers=0, x_layers=5, r_layers=0)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def faithful(model, split, device, chunk: int, n_captions: int):
    """The authors' loop on the first n_captions captions: returns (float64 scores
    [n_captions, Ni], IR ranks, seconds)."""
    n_img = split.num_images
    feats_cpu, boxes_cpu = (torch.from_numpy(a) for a in split.dense_features())
    tokens = {k: torch.from_numpy(v) for k, v in split.tokens.items()}
    score_matrix = np.zeros((n_captions, n_img))
    ranks = np.zeros(n_captions, dtype=np.int64)
    model.eval()
    sync(device)
    t0 = time.time()
    for c in range(n_captions):
        for s in range(0, n_img, chunk):
            e = min(s + chunk, n_img)
            rep = e - s
            ids = tokens["input_ids"][c:c + 1].expand(rep, -1).to(device)
            pos = tokens["token_position"][c:c + 1].to(device)  # broadcasts, as theirs
            mask = tokens["input_mask"][c:c + 1].expand(rep, -1).to(device)
            logits = model(ids, pos.expand(rep, -1), mask, feats_cpu[s:e].to(device),
                           boxes_cpu[s:e].to(device))
            score_matrix[c, s:e] = torch.softmax(logits, -1)[:, 1].cpu().numpy()
        order = np.argsort(-score_matrix[c])
        ranks[c] = np.where(order == split.caption_to_image[c])[0][0]
    sync(device)
    return score_matrix, ranks, time.time() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--images", type=int, default=None, help="default 1000 on GPU, 50 on CPU")
    p.add_argument("--captionsPerImage", type=int, default=5)
    p.add_argument("--config", default=None,
                   help="small | full (bert-base sizes) | path to a bert_config.json "
                        "(default: full on GPU, small on CPU)")
    p.add_argument("--dim", type=int, default=2048, help="region feature size")
    p.add_argument("--pairsPerForward", type=int, default=None,
                   help="fast path (default 4096 on GPU, 256 on CPU)")
    p.add_argument("--faithfulChunk", type=int, default=500, help="authors: 500")
    p.add_argument("--faithfulCaptions", type=int, default=None,
                   help="time the faithful loop on the first K captions only (extrapolated)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                   help="fast path (default bf16 on GPU, fp32 on CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 avoids spin-wait collapse on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrieval.json"))
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    n_img = args.images or (1000 if gpu else 50)
    config_name = args.config or ("full" if gpu else "small")
    ppf = args.pairsPerForward or (4096 if gpu else 256)
    precision = args.precision or ("bf16" if gpu else "fp32")

    t = time.time()
    ann, store = make_set(n_img, args.captionsPerImage, args.dim, args.seed)
    tokenizer = LXRTTokenizer(find_vocab_file(None), 20)
    t_tok = time.time()
    tokens = tokenize_captions(tokenizer, ann)
    tok_s = time.time() - t_tok
    split = build_split("bench", ann, np.arange(n_img), tokens, store)
    gen_s = time.time() - t
    torch.manual_seed(args.seed)
    config = build_config(config_name, args.dim)
    model = RetrievalModel(config).to(device).eval()
    n_cap = split.num_captions
    pairs = n_cap * n_img
    print(f"{n_img} images x {n_cap} captions = {pairs} pairs; config {config_name} "
          f"(hidden {config.hidden_size}); device {device}; tokenized {n_cap} captions in "
          f"{tok_s:.2f} s")

    # fast path
    sync(device)
    t0 = time.time()
    data = DeviceSplit(split, device)
    sync(device)
    setup_s = time.time() - t0
    autocast = (lambda: make_autocast(device, precision))
    score_captions(model, data, np.arange(1), min(ppf, 64), autocast)  # warm-up
    sync(device)
    t0 = time.time()
    logits = score_logits(model, data, ppf, autocast)
    sync(device)
    score_s = time.time() - t0
    report = retrieval_report(logits, split, "prob", "fast")
    sync(device)
    fast_s = time.time() - t0
    fast_m = report["metrics"]["prob"]
    fast = {"precision": precision, "pairs_per_forward": ppf, "setup_seconds": setup_s,
            "score_seconds": score_s, "total_seconds": fast_s, "pairs_per_s": pairs / fast_s,
            "metrics_prob": fast_m}
    print(f"fast     : {pairs / fast_s:10.0f} pairs/s, {fast_s:8.2f} s total "
          f"(scoring {score_s:.2f} s, ranking {fast_s - score_s:.3f} s, to device "
          f"{setup_s:.2f} s; {precision}, {ppf} pairs/forward)")

    # faithful path
    k = min(args.faithfulCaptions or n_cap, n_cap)
    model_fp32 = model.float()
    scores_f, ranks_f, f_s = faithful(model_fp32, split, device, args.faithfulChunk, k)
    f_pairs = k * n_img
    faithful_res = {"precision": "fp32", "pairs_per_forward": args.faithfulChunk,
                    "captions_timed": k, "seconds": f_s, "pairs_per_s": f_pairs / f_s,
                    "total_seconds_extrapolated": f_s * n_cap / k}
    if k == n_cap:
        faithful_res["metrics_prob"] = {"ir": recall_metrics(ranks_f)}
        first = np.searchsorted(split.caption_to_image, np.arange(n_img))
        tr_first = argsort_ranks_numpy(scores_f[first].T, np.arange(n_img))
        faithful_res["metrics_prob"]["tr_first"] = recall_metrics(tr_first)
    fast_scores = report["scores"][:k].double().cpu().numpy()
    agree = {"max_abs_score_diff": float(np.abs(fast_scores - scores_f).max()),
             "ir_ranks_equal_fraction": float(np.mean(report["ranks"]["prob"]["ir"][:k]
                                                      == ranks_f))}
    print(f"faithful : {f_pairs / f_s:10.0f} pairs/s, {f_s:8.2f} s for {k} captions"
          + (f" (~{f_s * n_cap / k:.1f} s for all)" if k < n_cap else "")
          + f"; fp32, {args.faithfulChunk} pairs/forward, CPU argsort per caption")
    print(f"speed-up : {faithful_res['total_seconds_extrapolated'] / fast_s:.1f}x; max |score "
          f"diff| {agree['max_abs_score_diff']:.2e}; IR ranks equal for "
          f"{100 * agree['ir_ranks_equal_fraction']:.1f}% of the timed captions")
    for name, m in (("fast", fast_m), ("faithful", faithful_res.get("metrics_prob"))):
        if not m:
            continue
        for proto, r in m.items():
            print(f"  {name:8s} {proto:11s} R@1 {r['r1']:6.2f}  R@5 {r['r5']:6.2f}  "
                  f"R@10 {r['r10']:6.2f}  medr {r['medr']:.0f}  meanr {r['meanr']:.2f}")

    result = {"images": n_img, "captions": n_cap, "pairs": pairs, "config": config_name,
              "hidden_size": config.hidden_size, "dim": args.dim, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if gpu else platform.processor(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "tokenize_seconds": tok_s, "generate_seconds": gen_s,
              "fast": fast, "faithful": faithful_res, "agreement": agree,
              "speedup": faithful_res["total_seconds_extrapolated"] / fast_s,
              "argv": sys.argv[1:] if argv is None else list(argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
