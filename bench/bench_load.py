"""Load time of the full-size model: a .pth checkpoint vs a model folder (safetensors).

    python bench/bench_load.py [--repeats 5] [--workdir /tmp/lxrt_load_bench]

Both files hold the same random weights of the full LXMERT-S sizes (bert-base, 0/5/0 layers):
the VQA model (3,129 answers) and the pre-training model with every head. Each is loaded
through the code paths the tasks use, into an already built model, so model construction is
not counted:
- `.pth`: `load_finetuned` / `load_full` (torch.load with weights_only, strict key checks);
- folder: the same functions given the folder (safetensors, memory-mapped, strict checks and
  the config check);
and the bare reads (torch.load vs safetensors' load_file). The pre-training model's `.pth` is
in the authors' layout (their 30,522 x 2,048 visual-[CLS] table, 250 MB, as `mode_LXRT.bin`);
the folder of the same model stores the one row that is read. Files are read once before
timing (warm page cache, the case of repeated loads); best of N. Prints a table and writes
bench/results/load.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lxrt.config import LXRTConfig
from lxrt.folder import WEIGHTS_NAME, read_tensors
from lxrt.loading import load_finetuned, to_authors_layout
from lxrt.modeling import LXRTPretraining
from lxrt.tokenization import find_vocab_file
from tasks.pretrain.model import load_full
from tasks.qa.model import QAModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "load.json"
VQA_ANSWERS = 3129


def best_time(fn, repeats: int) -> float:
    fn()  # warm the page cache and the allocator
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else list(path.iterdir())
    return sum(f.stat().st_size for f in files) / 2 ** 20


def measure(name: str, model, pth: Path, folder: Path, load, repeats: int) -> dict:
    row = {
        "model": name, "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "pth_mb": size_mb(pth), "folder_mb": size_mb(folder / WEIGHTS_NAME),
        "pth_read_s": best_time(lambda: torch.load(pth, map_location="cpu",
                                                   weights_only=True), repeats),
        "safetensors_read_s": best_time(lambda: read_tensors(folder / WEIGHTS_NAME), repeats),
        "pth_load_s": best_time(lambda: load(model, pth), repeats),
        "folder_load_s": best_time(lambda: load(model, folder), repeats),
    }
    row["read_ratio"] = row["pth_read_s"] / row["safetensors_read_s"]
    row["load_ratio"] = row["pth_load_s"] / row["folder_load_s"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", default=None, help="where the files go (default: a temp dir)")
    args = p.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lxrt_load_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    vocab = find_vocab_file(None)
    config = LXRTConfig()
    torch.manual_seed(0)
    rows = []
    try:
        vqa = QAModel(config, VQA_ANSWERS).eval()
        torch.save(vqa.state_dict(), work / "BEST.pth")
        vqa.save_pretrained(work / "vqa", vocab, task="vqa",
                            labels=[f"answer {i}" for i in range(VQA_ANSWERS)], overwrite=True)
        rows.append(measure("VQA model", vqa, work / "BEST.pth", work / "vqa",
                            lambda m, path: load_finetuned(m, path, config), args.repeats))
        del vqa
        pre = LXRTPretraining(config).eval()
        torch.save(to_authors_layout(pre.state_dict(), config), work / "model_LXRT.pth")
        pre.save_pretrained(work / "pretrain", vocab, task="pretrain", overwrite=True)
        rows.append(measure("pre-training model", pre, work / "model_LXRT.pth",
                            work / "pretrain", load_full, args.repeats))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'model':<20} {'params':>8} {'.pth MB':>8} {'folder MB':>9} {'.pth load':>10} "
          f"{'folder load':>11} {'ratio':>6} {'.pth read':>10} {'st read':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['model']:<20} {r['parameters_m']:>7.1f}M {r['pth_mb']:>8.0f} "
              f"{r['folder_mb']:>9.0f} {r['pth_load_s']:>9.3f}s {r['folder_load_s']:>10.3f}s "
              f"{r['load_ratio']:>5.1f}x {r['pth_read_s']:>9.3f}s "
              f"{r['safetensors_read_s']:>7.3f}s {r['read_ratio']:>5.1f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                                   "repeats": args.repeats, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
