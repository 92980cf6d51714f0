"""Pre-training speed: samples/s of one optimizer step of `tasks.pretrain` at batch 256, the
faithful path against the fast one and, given a checkout of airsplay/lxmert, against
LXMERT's own pre-training step, same machine, same run.

    python bench/bench_pretrain.py                      # GPU if present (full size), else CPU
    python bench/bench_pretrain.py --device cpu --size small,full --steps 3 --threads 2 \
        --lxmert /path/to/lxmert                        # LXMERT's code beside ours

The batch is real pre-training data of LXMERT's recipe (MLM, masked objects, ITM, QA)
sampled by `PretrainDataset` from a generated corpus (tools.make_data, 2048-d features); the
LXMERT-S layers (0/5/0) at every size: small = hidden 128 (run/configs/easyvqa_cpu.json),
full = bert-base sizes.

lxmert   = LXMERT's code (bench/lxmert_step.py, in a subprocess): its `train_batch`, whose
           host work (masking, features) runs in the main process, fed by its DataLoader;
           "model" is the step less that host work;
faithful = fp32, text padded to 20, MLM scores at every text position (LXMERT's
           computation) in our model;
fast     = text padding removed per batch, MLM scores only at the masked positions (the loss
           reads only those), fp32, and the same in bf16 autocast where the device has it.
Our host work (sampling the examples, `PretrainDataset`) runs in DataLoader workers during
training; its time per batch is printed apart. Prints a table; writes
bench/results/pretrain.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lxrt.optimization import BertAdam
from lxrt.tokenization import find_vocab_file
from tasks.common.batching import trim_text_padding
from tasks.pretrain.main import build_parser, resolve_stage
from tasks.pretrain.task import PretrainTask, build_labels

ROOT = Path(__file__).resolve().parents[1]
# model config per size (None: bert-base sizes), LXMERT-S layers 0/5/0
SIZES = {"full": None, "small": ROOT / "run" / "configs" / "easyvqa_cpu.json"}
RECIPE = ROOT / "run" / "configs" / "lxmert_pretrain.json"


def make_task(data_root: Path, size: str) -> PretrainTask:
    flags = ["--dataRoot", str(data_root), "--stage", str(RECIPE),
             "--train", "mscoco_train,mscoco_nominival,vgnococo", "--valid", "",
             "--llayers", "0", "--xlayers", "5", "--rlayers", "0"]
    if SIZES[size] is not None:
        flags += ["--modelConfig", str(SIZES[size])]
    settings, stage = resolve_stage(build_parser(), flags)
    return PretrainTask(settings.args, stage)


def make_batch(task: PretrainTask, batch: int, device) -> tuple[dict, float]:
    """A batch of `batch` examples, and the seconds it takes to sample and collate one (the
    fastest of three more epochs' batches: the first reads also open the feature files)."""
    dataset = task.train_dataset()
    items = [dataset[i % len(dataset)] for i in range(batch)]
    times = []
    for epoch in (1, 2, 3):
        dataset.set_epoch(epoch)
        started = time.perf_counter()
        torch.utils.data.default_collate([dataset[i % len(dataset)] for i in range(batch)])
        times.append(time.perf_counter() - started)
    seconds = min(times)
    collated = torch.utils.data.default_collate(items)
    return {k: v.to(device) for k, v in collated.items()}, seconds


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


def measure_lxmert(checkout: str, data_root: Path, size: str, args) -> dict:
    """LXMERT's own step, in a subprocess (its modules read the command line at import)."""
    cmd = [sys.executable, str(ROOT / "bench" / "lxmert_step.py"), "--lxmert", checkout,
           "--data", str(data_root), "--vocab", find_vocab_file(), "--batch", str(args.batch),
           "--steps", str(args.steps), "--device", args.device]
    if SIZES[size] is not None:
        cmd += ["--model-config", str(SIZES[size])]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=data_root.parent,
                          env=dict(os.environ, PYTHONPATH=""))
    if done.returncode != 0:
        raise SystemExit(f"LXMERT's step failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bf16_supported(device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return True  # CPU autocast runs bf16 everywhere (fast only with native bf16 instructions)


def bench_size(root: Path, size: str, device, args) -> dict:
    task = make_task(root, size)
    batch, host = make_batch(task, args.batch, device)
    modes = ["faithful", "fast_fp32"] + (["fast_bf16"] if bf16_supported(device) else [])
    out = {"our_host_seconds_per_batch": round(host, 3)}
    if args.lxmert:
        out["lxmert"] = measure_lxmert(args.lxmert, root, size, args)
        lx = out["lxmert"]
        print(f"{size:5s} {'lxmert':10s} {lx['samples_per_s']:8.1f} samples/s "
              f"({lx['seconds_per_step']:.3f} s/step, host work {lx['host_seconds_per_step']:.3f}"
              f" s of it; model alone {lx['model_samples_per_s']:.1f} samples/s)", flush=True)
    for mode in modes:
        out[mode] = measure(task, device, batch, mode, args.steps)
        print(f"{size:5s} {mode:10s} {out[mode]['samples_per_s']:8.1f} samples/s "
              f"({out[mode]['seconds_per_step']:.3f} s/step)", flush=True)
    print(f"{size:5s} our host work (sampling, in DataLoader workers): {host:.3f} s per batch",
          flush=True)
    return out


def ratios(result: dict) -> list[str]:
    lines = []
    for size, out in result["sizes"].items():
        base = out["faithful"]["samples_per_s"]
        for mode in ("fast_fp32", "fast_bf16"):
            if mode in out:
                lines.append(f"{size}: {mode} {out[mode]['samples_per_s'] / base:.2f}x faithful")
        if "lxmert" in out:
            lx = out["lxmert"]
            for mode in ("faithful", "fast_fp32", "fast_bf16"):
                if mode in out:
                    ours = out[mode]["samples_per_s"]
                    lines.append(f"{size}: {mode} {ours / lx['samples_per_s']:.2f}x LXMERT's "
                                 f"step, {ours / lx['model_samples_per_s']:.2f}x its model part")
    return lines


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default=None,
                   help="comma-separated sizes: full (bert-base sizes, 0/5/0 layers) and/or "
                        "small (hidden 128); default: full on a GPU, small on the CPU")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--lxmert", default=None,
                   help="a checkout of airsplay/lxmert: time its own pre-training step too")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pretrain.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sizes = [s.strip() for s in (args.size or ("full" if device.type == "cuda" else "small"))
             .split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        raise SystemExit(f"--size {args.size}: expected a comma-separated subset of "
                         f"{','.join(SIZES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from tools.make_data import make_data
    results = {"device": str(device), "batch": args.batch, "steps": args.steps,
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": platform.processor() or platform.machine(),
               "date": time.strftime("%Y-%m-%d", time.gmtime()), "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_data(root, images=64, dim=2048, seed=0, small_model=False)
        for size in sizes:
            results["sizes"][size] = bench_size(root, size, device, args)
    results["ratios"] = ratios(results)
    print("\n".join(results["ratios"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
