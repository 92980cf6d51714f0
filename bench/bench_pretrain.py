"""Pre-training speed: samples/s of one optimizer step of `tasks.pretrain` at batch 256, the
faithful path against the fast one, same machine, same run.

    python bench/bench_pretrain.py                      # GPU if present (full size), else CPU
    python bench/bench_pretrain.py --device cpu --size small --steps 3 --threads 1

The batch is real pre-training data: the sentence stage (MLM, masked objects, ITM with hard
negatives, QA, topic) sampled by `PretrainDataset` from a generated corpus (tools.make_data).

faithful = fp32, text padded to 20 tokens, MLM scores at every text position (LXMERT's
           computation);
fast     = text padding removed per batch, MLM scores only at the masked positions (the loss
           reads only those), fp32 — and the same in bf16 autocast where the device has it.
Prints a table; writes bench/results/pretrain.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from lxrt.optimization import BertAdam
from tasks.common.batching import trim_text_padding
from tasks.pretrain.main import build_parser, resolve_stage
from tasks.pretrain.task import PretrainTask, build_labels

ROOT = Path(__file__).resolve().parents[1]
# model config per size (None: bert-base sizes), LXMERT-S layers 0/5/0
SIZES = {"full": None, "small": ROOT / "run" / "configs" / "easyvqa_cpu.json"}


def make_task(data_root: Path, size: str) -> PretrainTask:
    flags = ["--dataRoot", str(data_root), "--stage", str(ROOT / "run/configs/msp/sentence.json"),
             "--train", "mscoco_train,mscoco_nominival,vgnococo", "--valid", "",
             "--llayers", "0", "--xlayers", "5", "--rlayers", "0"]
    if SIZES[size] is not None:
        flags += ["--modelConfig", str(SIZES[size])]
    settings, stage = resolve_stage(build_parser(), flags)
    return PretrainTask(settings.args, stage)


def make_batch(task: PretrainTask, batch: int, device) -> dict:
    dataset = task.train_dataset()
    items = [dataset[i % len(dataset)] for i in range(batch)]
    collated = torch.utils.data.default_collate(items)
    return {k: v.to(device) for k, v in collated.items()}


def faithful_loss(task: PretrainTask, model, batch: dict) -> torch.Tensor:
    """LXMERT's computation: the vocabulary scored at every position of the padded text."""
    labels, present, positions = build_labels(batch, task.config.topic_size)
    mlm = batch["masked_lm_labels"]
    labels["masked_lm_labels"] = torch.where(positions, mlm, torch.full_like(mlm, -1))
    out = model(batch["input_ids"], batch["token_position"], batch["input_mask"],
                batch["feats"], batch["boxes"], labels=labels)
    return (out.losses[0].float() * task.weights.to(present.device) * present).sum()


def step_fn(task, model, optimizer, batch, mode: str, device):
    fast = mode != "faithful"
    if fast:
        batch = trim_text_padding({k: v.cpu() for k, v in batch.items()})
        batch = {k: v.to(device) for k, v in batch.items()}
    bf16 = mode == "fast_bf16"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = task.compute_loss(model, batch)[0] if fast else \
                faithful_loss(task, model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return step


def measure(task, device, batch: dict, mode: str, steps: int) -> dict:
    torch.manual_seed(0)
    model = task.build_model().to(device).train()
    optimizer = BertAdam(list(model.parameters()), lr=1e-4, warmup=0.05, t_total=1000)
    step = step_fn(task, model, optimizer, batch, mode, device)
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    size = len(batch["input_ids"])
    return {"seconds_per_step": round(seconds, 3), "samples_per_s": round(size / seconds, 1)}


def bf16_supported(device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return True  # CPU autocast runs bf16 everywhere (fast only with native bf16 instructions)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", choices=sorted(SIZES), default=None,
                   help="full (bert-base sizes, 0/5/0 layers) or small (hidden 128); "
                        "default: full on a GPU, small on the CPU")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pretrain.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    size = args.size or ("full" if device.type == "cuda" else "small")
    if args.threads:
        torch.set_num_threads(args.threads)
    from tools.make_data import make_data
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_data(root, images=64, dim=2048, seed=0, small_model=False)
        task = make_task(root, size)
        batch = make_batch(task, args.batch, device)
        modes = ["faithful", "fast_fp32"] + (["fast_bf16"] if bf16_supported(device) else [])
        results = {"device": str(device), "size": size, "batch": args.batch,
                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "machine": platform.processor() or platform.machine(),
                   "date": time.strftime("%Y-%m-%d", time.gmtime())}
        for mode in modes:
            results[mode] = measure(task, device, batch, mode, args.steps)
            print(f"{mode:10s} {results[mode]['samples_per_s']:8.1f} samples/s "
                  f"({results[mode]['seconds_per_step']:.3f} s/step)", flush=True)
    base = results["faithful"]["samples_per_s"]
    for mode in modes[1:]:
        print(f"{mode}: {results[mode]['samples_per_s'] / base:.2f}x the faithful path")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
