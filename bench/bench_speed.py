"""Speed benchmark: our fast path against our faithful fp32 path, same machine, same run.

    python bench/bench_speed.py                 # GPU if present (full LXMERT-S), else CPU (small)
    python bench/bench_speed.py --device cpu --size small --steps 5

Measures training samples/s (batch 32 and 256, or smaller on CPU), matching-forward pairs/s,
end-to-end throughput with data loading from the memory-mapped feature store, the data pipeline
alone, tokenizer sentences/s and peak GPU memory. Prints a table; writes bench/results/speed.json.

faithful = fp32, text padded to 20 tokens (the authors' computation, SDPA attention);
fast     = bf16 autocast, padding removed per batch, optional torch.compile (--compile MODES).
--profile adds torch.profiler operator tables for the fast step (where the time goes).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lxrt.config import LXRTConfig
from lxrt.optimization import BertAdam
from lxrt.tokenization import LXRTTokenizer, find_vocab_file
from tasks.common.batching import trim_text_padding
from tasks.common.runtime import compile_module, mark_step_if_graphed
from tasks.qa.model import QAModel

ROOT = Path(__file__).resolve().parents[1]

SIZES = {
    "full": dict(),  # bert-base sizes
    "small": dict(hidden_size=128, num_attention_heads=4, intermediate_size=256),
}


def sentences(n: int) -> list[str]:
    try:
        import easy_vqa
        qs = easy_vqa.get_train_questions()[0]
    except ImportError:  # fall back to synthetic questions of realistic length
        qs = ["what is the color of the object on the left side of the table"] * 10
    rng = np.random.default_rng(0)
    return [qs[i] for i in rng.integers(0, len(qs), n)]


def make_batch(tok, batch: int, device, answers: int, dim: int, fast: bool, seed: int = 0,
               sents: list[str] | None = None):
    """A realistic batch (real question lengths, random regions) on `device`; the fast path
    drops padded text positions first, as the trainer does."""
    enc = tok.encode_batch(sents if sents is not None else sentences(batch))
    g = torch.Generator().manual_seed(seed)
    b = {"input_ids": torch.from_numpy(enc.input_ids), "token_position":
         torch.from_numpy(enc.token_position), "input_mask": torch.from_numpy(enc.input_mask),
         "feats": torch.rand(batch, 36, dim, generator=g),
         "boxes": torch.rand(batch, 36, 4, generator=g).sort(-1).values,
         "target": (torch.rand(batch, answers, generator=g) > 0.999).float()}
    if fast:
        b = trim_text_padding(b)
    return {k: v.to(device) for k, v in b.items()}


def make_batches(tok, batch: int, device, answers: int, dim: int, fast: bool, count: int,
                 bucketed: bool = False) -> list[dict]:
    """`count` batches of random questions; `bucketed`: the questions sorted by length first,
    as `--lengthBuckets count` groups them, so each batch holds similar lengths."""
    sents = sentences(batch * count)
    if bucketed:
        lengths = tok.encode_batch(sents).input_mask.sum(1)
        sents = [sents[i] for i in np.argsort(lengths, kind="stable")]
    return [make_batch(tok, batch, device, answers, dim, fast, seed=i,
                       sents=sents[i * batch:(i + 1) * batch]) for i in range(count)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, steps: int, warmup: int = 2) -> float:
    """Seconds for `steps` calls of `fn` after `warmup` untimed ones (device synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return time.perf_counter() - start


def autocast(device, fast):
    if not fast:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16)


BATCHES_CYCLED = 8  # the timed steps cycle through this many batches of real question lengths


def train_step_fn(config, device, batch, fast, compile_mode, tok, bucketed=False):
    """One training step of the VQA model (3129 answers), as the trainer runs it, on the next
    of BATCHES_CYCLED realistic batches; `compile_mode` None (eager) or a torch.compile mode."""
    torch.manual_seed(0)
    model = QAModel(config, 3129).to(device)
    opt = BertAdam(list(model.parameters()), lr=5e-5, warmup=0.1, t_total=1000)
    run = compile_module(model, compile_mode)
    batches = make_batches(tok, batch, device, 3129, config.visual_feat_dim, fast,
                           BATCHES_CYCLED, bucketed)
    count = iter(range(10**9))

    def step():
        data = batches[next(count) % len(batches)]
        mark_step_if_graphed(compile_mode)
        with autocast(device, fast):
            logits = run(data["input_ids"], data["token_position"], data["input_mask"],
                         data["feats"], data["boxes"])
        loss = F.binary_cross_entropy_with_logits(logits.float(), data["target"]) * 3129
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()

    return step, batches


def train_throughput(config, device, batch, steps, fast, compile_mode, tok, bucketed=False):
    step, batches = train_step_fn(config, device, batch, fast, compile_mode, tok, bucketed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # warm-up: every batch shape once (compilation, CUDA graph recording), then timed steps
    seconds = timed(step, device, steps, warmup=len(batches) + 1 if compile_mode else 2)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"samples_per_s": batch * steps / seconds, "peak_gpu_gib": peak,
            "mean_text_len": float(np.mean([b["input_ids"].shape[1] for b in batches]))}


@torch.no_grad()
def matching_throughput(config, device, pairs, steps, fast, tok):
    from tasks.retrieval.model import RetrievalModel
    model = RetrievalModel(config).to(device).eval()
    data = make_batch(tok, pairs, device, 2, config.visual_feat_dim, fast)

    def forward():
        with autocast(device, fast):
            return model(data["input_ids"], data["token_position"], data["input_mask"],
                         data["feats"], data["boxes"])

    return {"pairs_per_s": pairs * steps / timed(forward, device, steps, warmup=1)}


def pipeline_throughput(config, device, batch, steps, workers, tok, images):
    """Data pipeline alone and training fed by it, from a converted feature store."""
    from tasks.common.features import open_feature_store
    from tasks.common.tsv_format import ImageFeatures, encode_row
    from tasks.qa.data import AnswerTable, QADataset
    tmp = Path(tempfile.mkdtemp(prefix="bench_speed_"))
    rng = np.random.default_rng(0)
    block = rng.random((36, config.visual_feat_dim), dtype=np.float32)
    with open(tmp / "feats.tsv", "w") as f:
        for i in range(images):
            boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (36, 1))
            f.write(encode_row(ImageFeatures(str(i), 100, 100, np.zeros(36, np.int64),
                                             np.ones(36, np.float32), np.zeros(36, np.int64),
                                             np.ones(36, np.float32), boxes, block)) + "\n")
    store = open_feature_store(tmp / "feats.tsv")
    (tmp / "a2l.json").write_text(json.dumps({"yes": 0, "no": 1}))
    (tmp / "l2a.json").write_text(json.dumps(["yes", "no"]))
    sents = sentences(images * 4)
    data = [{"img_id": str(i % images), "question_id": i, "sent": s, "label": {"yes": 1.0}}
            for i, s in enumerate(sents)]
    dataset = QADataset(data, store, tok, AnswerTable(tmp / "a2l.json", tmp / "l2a.json"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         drop_last=True, persistent_workers=workers > 0)
    start, n = time.perf_counter(), 0
    for i, b in enumerate(loader):
        n += len(b["index"])
        if i + 1 >= steps:
            break
    pipeline = n / (time.perf_counter() - start)
    model = QAModel(config, 2).to(device)
    opt = BertAdam(list(model.parameters()), lr=5e-5, warmup=0.1, t_total=1000)
    start, n = time.perf_counter(), 0
    for i, b in enumerate(loader):
        b = {k: v.to(device, non_blocking=True) for k, v in trim_text_padding(b).items()}
        with autocast(device, device.type == "cuda"):
            logits = model(b["input_ids"], b["token_position"], b["input_mask"], b["feats"],
                           b["boxes"])
        loss = F.binary_cross_entropy_with_logits(logits.float(), b["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(b["index"])
        if i + 1 >= steps:
            break
    sync(device)
    end_to_end = n / (time.perf_counter() - start)
    return {"pipeline_samples_per_s": pipeline, "end_to_end_samples_per_s": end_to_end,
            "workers": workers}


def profile_training(config, device, batch, fast, compile_mode, tok, steps: int = 5,
                     rows: int = 25) -> dict:
    """Where a training step's time goes: torch.profiler over `steps` steps after warm-up.
    Returns the operator table (by self device time on a GPU, self CPU time otherwise) and,
    on a GPU, how busy the device was: kernel time / wall time (low = launch-bound)."""
    from torch.profiler import ProfilerActivity, profile
    step, _ = train_step_fn(config, device, batch, fast, compile_mode, tok)
    for _ in range(3):
        step()
    sync(device)
    gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    sort_by = "self_device_time_total" if gpu else "self_cpu_time_total"
    table = events.table(sort_by=sort_by, row_limit=rows, max_name_column_width=60)
    out = {"batch": batch, "steps": steps, "compile": compile_mode, "wall_ms_per_step":
           1e3 * wall / steps, "table": table}
    if gpu:
        kernel_us = sum(e.self_device_time_total for e in events
                        if e.device_type == torch.autograd.DeviceType.CUDA)
        out["device_busy_fraction"] = kernel_us / 1e6 / wall
        out["kernel_launches_per_step"] = sum(
            e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                 "cudaLaunchKernelExC")) / steps
    return out


def tokenizer_throughput(tok):
    sents = sentences(20000)
    fresh = LXRTTokenizer(find_vocab_file(), 20)
    start = time.perf_counter()
    for i in range(0, len(sents), 32):
        fresh.encode_batch(sents[i:i + 32])
    return {"sentences_per_s_batches_of_32": len(sents) / (time.perf_counter() - start)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=sorted(SIZES), default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batches", default=None, help="comma-separated training batch sizes")
    p.add_argument("--pairs", type=int, default=None, help="pairs per matching forward")
    p.add_argument("--compile", nargs="?", const="default", default=None,
                   help="also time the fast path under torch.compile; comma-separated modes "
                        "(default, reduce-overhead = + CUDA graphs, max-autotune)")
    p.add_argument("--profile", action="store_true",
                   help="profile the fast training step at the first batch size (and the "
                        "largest); writes the operator tables next to --out")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--images", type=int, default=None, help="images in the pipeline benchmark")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    size = args.size or ("full" if gpu else "small")
    steps = args.steps or (3 * BATCHES_CYCLED if gpu else BATCHES_CYCLED)
    batches = [int(b) for b in (args.batches or ("32,256" if gpu else "8,32")).split(",")]
    pairs = args.pairs or (2000 if gpu else 64)
    workers = args.workers if args.workers is not None else (8 if gpu else 0)
    images = args.images or (2000 if gpu else 200)
    config = LXRTConfig(**SIZES[size])
    tok = LXRTTokenizer(find_vocab_file(), 20)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # the faithful path is true fp32
    rows, results = [], {"device": str(device), "size": size, "torch": torch.__version__,
                         "gpu": torch.cuda.get_device_name(device) if gpu else None,
                         "host": platform.node(), "date": time.strftime("%Y-%m-%d")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every measurement, so a run cut short by a time limit keeps its numbers
        out.write_text(json.dumps(results, indent=2))

    if args.profile:  # first, so a run cut short by a time limit still has it
        profiles = [profile_training(config, device, b, True, None, tok)
                    for b in sorted({batches[0], batches[-1]})]
        results["profile"] = [{k: v for k, v in prof.items() if k != "table"}
                              for prof in profiles]
        def header(prof):
            text = f"fast path, batch {prof['batch']}: {prof['wall_ms_per_step']:.1f} ms/step"
            if "device_busy_fraction" in prof:
                text += (f", device busy {prof['device_busy_fraction']:.0%} of the wall time, "
                         f"{prof['kernel_launches_per_step']:.0f} kernel launches/step")
            return text

        text = "\n\n".join(f"{header(prof)}\n{prof['table']}" for prof in profiles)
        out.with_name(out.stem + "_profile.txt").write_text(text + "\n")
        save()
        print(text)
    for batch in batches:
        faithful = train_throughput(config, device, batch, steps, False, None, tok)
        fast = train_throughput(config, device, batch, steps, True, None, tok)
        bucketed = train_throughput(config, device, batch, steps, True, None, tok, True)
        results[f"train_b{batch}"] = {"faithful": faithful, "fast": fast,
                                      "fast_length_buckets": bucketed}
        rows.append((f"training batch {batch} (samples/s)", faithful["samples_per_s"],
                     fast["samples_per_s"]))
        rows.append((f"  + length buckets (--lengthBuckets), batch {batch}",
                     faithful["samples_per_s"], bucketed["samples_per_s"]))
        if gpu:
            rows.append((f"peak GPU memory, batch {batch} (GiB)", faithful["peak_gpu_gib"],
                         fast["peak_gpu_gib"]))
        save()
    m_faith = matching_throughput(config, device, pairs, steps, False, tok)
    m_fast = matching_throughput(config, device, pairs, steps, True, tok)
    results["matching"] = {"pairs": pairs, "faithful": m_faith, "fast": m_fast}
    rows.append((f"matching forward, {pairs} pairs (pairs/s)", m_faith["pairs_per_s"],
                 m_fast["pairs_per_s"]))
    save()
    pipe = pipeline_throughput(config, device, batches[0], steps * 10, workers, tok, images)
    results["pipeline"] = pipe
    rows.append((f"data pipeline alone, batch {batches[0]}, {workers} workers (samples/s)",
                 None, pipe["pipeline_samples_per_s"]))
    rows.append(("end to end from the feature store (samples/s)", None,
                 pipe["end_to_end_samples_per_s"]))
    results["tokenizer"] = tokenizer_throughput(tok)
    rows.append(("tokenizer, batches of 32 (sentences/s)", None,
                 results["tokenizer"]["sentences_per_s_batches_of_32"]))
    save()
    # compiled runs last: compilation takes the longest, and a time limit then costs only them
    for batch in batches:
        faithful = results[f"train_b{batch}"]["faithful"]["samples_per_s"]
        for mode in (args.compile.split(",") if args.compile else []):
            comp = train_throughput(config, device, batch, steps, True, mode, tok)
            results[f"train_b{batch}"][f"fast_compiled_{mode}"] = comp
            rows.append((f"training batch {batch}, fast + torch.compile {mode}", faithful,
                         comp["samples_per_s"]))
            save()
    print(f"\n{device} ({results['gpu'] or platform.processor() or 'cpu'}), model size {size}, "
          f"torch {torch.__version__}")
    print(f"{'measure':<58} {'faithful fp32':>14} {'fast':>12} {'ratio':>7}")
    for name, a, b in rows:
        ratio = f"{b / a:6.2f}x" if a and b else ""
        fa = f"{a:14.1f}" if a is not None else " " * 14
        print(f"{name:<58} {fa} {b:12.1f} {ratio:>7}")
    save()
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
