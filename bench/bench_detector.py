"""Benchmark the detector's extraction speed and peak memory (script, not a test).

    python bench/bench_detector.py [--images 3] [--height 600 --width 1000] [--device cpu]
                                   [--threads N] [--weights FILE] [--out FILE.json]

One picture at a time at 600x1000 (the size LXMERT's pictures are resized to; a 600x1000
picture stays so), through the whole extraction of one TSV row: decoding, resizing, backbone,
RPN, 300 regions through RoIPool and res5, the 36-region selection. Two ways of running the
same network, each in a fresh subprocess so that its peak memory is its own:
  reference  the ports' way: NCHW tensors, all 300 regions through res5 at once
  ours       butd's defaults: channels-last tensors, 64 regions at a time
The features of both agree within float32 rounding (the table prints the largest relative
difference). Weights: --weights FILE (a real file), else the VG model's shapes with default
initialisation (speed does not depend on the values). Reports seconds per picture (median of
all but the first picture, which pays one-time allocations), pictures/s, and peak memory: the
process's resident high-water mark (VmHWM: model, runtime and activations) on the CPU, torch's
peak allocation on a GPU. Writes --out (default bench/results/detector.json) as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"reference": {"channels_last": False, "region_chunk": 1000},
         "ours": {"channels_last": True, "region_chunk": 64}}


def _vm_hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def make_pictures(folder: Path, count: int, height: int, width: int) -> list:
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(0)
    paths = []
    for k in range(count):
        # smooth colour fields with noise: JPEG-like content, not constant
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([np.sin(xx / rng.uniform(20, 90) + k) + np.cos(yy / rng.uniform(20, 90))
                         for _ in range(3)], -1) * 60 + 128
        picture = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"bench{k}.jpg")
        Image.fromarray(picture).save(paths[-1], quality=90)
    return paths


def make_weights(path: Path) -> None:
    """Default-initialised VG-sized weights as a safetensors file of ours."""
    from safetensors.torch import save_file

    from butd import VG_CONFIG, BUTDDetector
    from butd.weights import SAFETENSORS_FORMAT
    state = {k: v.contiguous() for k, v in BUTDDetector(VG_CONFIG).state_dict().items()}
    save_file(state, str(path), metadata={"format": SAFETENSORS_FORMAT,
                                          "config": VG_CONFIG.to_json()})


def run_mode(args) -> dict:
    """Inside the subprocess: extract every picture with one mode."""
    import numpy as np
    import torch

    from tools.detector_features import DetectorExtractor
    if args.threads:
        torch.set_num_threads(args.threads)
    extractor = DetectorExtractor(args.weights, args.device, **MODES[args.mode])
    if extractor.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(extractor.device)
    seconds, features = [], []
    for k, path in enumerate(args.pictures):
        start = time.perf_counter()
        row = extractor.describe_file(path, f"bench{k}")
        if extractor.device.type == "cuda":
            torch.cuda.synchronize(extractor.device)
        seconds.append(time.perf_counter() - start)
        features.append(row.features)
    np.save(args.features_out, np.stack(features))
    gpu = (torch.cuda.max_memory_allocated(extractor.device) / 2**30
           if extractor.device.type == "cuda" else None)
    return {"mode": args.mode, "seconds": seconds, "peak_rss_gib": _vm_hwm() / 2**30,
            "peak_gpu_gib": gpu, "device": str(extractor.device),
            "threads": torch.get_num_threads()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--height", type=int, default=600)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "detector.json"))
    ap.add_argument("--modes", default="reference,ours")
    ap.add_argument("--mode", help=argparse.SUPPRESS)            # subprocess: one mode
    ap.add_argument("--pictures", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--features-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return {}

    import numpy as np
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pictures = make_pictures(tmp, args.images, args.height, args.width)
        weights = args.weights or str(tmp / "vg_default_init.safetensors")
        if not args.weights:
            make_weights(Path(weights))
        results = {}
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--mode", mode, "--device", args.device,
                   "--threads", str(args.threads), "--weights", weights,
                   "--features-out", str(tmp / f"{mode}.npy"), "--pictures",
                   *map(str, pictures)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
            results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
            results[mode]["features"] = np.load(tmp / f"{mode}.npy")
    rows = {}
    for mode, r in results.items():
        timed = r["seconds"][1:] or r["seconds"]
        rows[mode] = {"s_per_image": statistics.median(timed), "first_s": r["seconds"][0],
                      "images_per_s": 1 / statistics.median(timed),
                      "peak_rss_gib": r["peak_rss_gib"], "peak_gpu_gib": r["peak_gpu_gib"]}
    if {"reference", "ours"} <= set(results):
        a, b = results["reference"]["features"], results["ours"]["features"]
        rows["max_relative_feature_difference"] = float(
            np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
    print(f"detector, one {args.width}x{args.height} picture at a time on "
          f"{results[next(iter(results))]['device']} ({results[next(iter(results))]['threads']} "
          f"threads), {args.images} pictures")
    print(f"{'measure':<34} {'reference':>12} {'ours':>12} {'ratio':>8}")
    for name, key in (("seconds per picture", "s_per_image"),
                      ("pictures per second", "images_per_s"),
                      ("peak resident memory (GiB)", "peak_rss_gib"),
                      ("peak GPU memory (GiB)", "peak_gpu_gib")):
        a, b = (rows.get(m, {}).get(key) for m in ("reference", "ours"))
        if a is None and b is None:
            continue
        ratio = f"{b / a:7.2f}x" if a and b else ""
        print(f"{name:<34} {a if a is None else f'{a:12.3f}':>12} "
              f"{b if b is None else f'{b:12.3f}':>12} {ratio:>8}")
    if "max_relative_feature_difference" in rows:
        print(f"largest feature difference, relative to the largest feature: "
              f"{rows['max_relative_feature_difference']:.1e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "results": rows}, indent=2,
                              default=str))
    return rows


if __name__ == "__main__":
    main()
