"""Benchmark the feature store against the authors' whole-TSV loading (script, not a test).

    python bench/bench_features.py [--images 5000] [--workers 4] [--batch 32] [--dir DIR] [--keep]

Generates a TSV of --images images (36 boxes x 2048 float32, a few random blocks reused), converts
it (float32 and float16), also writes two HDF5 layouts of the same data for comparison, then runs
each read mode in a fresh subprocess: one shuffled epoch through a torch DataLoader (batch 32)
with 0 and --workers workers, reporting items/s, startup time and peak memory:
  VmHWM     peak resident set of the main process (file-backed pages of a memmap count here,
            although they are shared, reclaimable page cache)
  anon      peak private (RssAnon) memory, main process / max over workers (sampled)
"cold" runs evict the store's pages from the page cache first (posix_fadvise DONTNEED).
Results: a table on stdout and bench/results/features.json. Generated files are deleted unless
--keep.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

N_BOXES, DIM = 36, 2048


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------ generation

def generate_tsv(path: Path, n_images: int, seed: int = 0) -> None:
    from tasks.common.tsv_format import ImageFeatures, encode_row
    rng = np.random.default_rng(seed)
    blocks = []
    for b in range(8):  # a few random blocks, reused; only the img_id/size differ per row
        h, w = 480 + 16 * b, 640 - 8 * b
        x1 = rng.uniform(0, w / 2, N_BOXES)
        y1 = rng.uniform(0, h / 2, N_BOXES)
        boxes = np.stack([x1, y1, x1 + rng.uniform(1, w / 2, N_BOXES),
                          y1 + rng.uniform(1, h / 2, N_BOXES)], 1).astype(np.float32)
        item = ImageFeatures(
            img_id="X", img_h=h, img_w=w,
            objects_id=rng.integers(0, 1600, N_BOXES), objects_conf=rng.random(N_BOXES),
            attrs_id=rng.integers(0, 400, N_BOXES), attrs_conf=rng.random(N_BOXES),
            boxes=boxes,
            features=np.maximum(rng.standard_normal((N_BOXES, DIM)), 0).astype(np.float32))
        blocks.append(encode_row(item).split("\t", 1)[1])  # everything after img_id
    with open(path, "w", buffering=1 << 22) as f:
        for i in range(n_images):
            f.write(f"COCO_val2014_{i:012d}\t{blocks[i % len(blocks)]}\n")


def write_hdf5(store, path: Path, chunked: bool) -> None:
    import h5py
    feats, boxes = store.dense()
    n = len(store)
    with h5py.File(path, "w") as f:
        kw = {"chunks": (1, N_BOXES, DIM)} if chunked else {}
        df = f.create_dataset("features", (n, N_BOXES, DIM), dtype="f4", **kw)
        db = f.create_dataset("boxes", (n, N_BOXES, 4), dtype="f4",
                              **({"chunks": (1, N_BOXES, 4)} if chunked else {}))
        for s in range(0, n, 256):
            df[s:s + 256] = feats[s:s + 256]
            db[s:s + 256] = boxes[s:s + 256]
        f.create_dataset("img_ids", data=np.array(store.img_ids, dtype="S"))


# ------------------------------------------------------------------------------ child modes

class _MemSampler:
    def __init__(self):
        self.anon = 0
        self.count = 0

    def sample(self, every=16):
        self.count += 1
        if self.count % every == 1:
            self.anon = max(self.anon, _status("RssAnon"))
        return self.anon


def _dataset(kind, arg):
    import torch

    class StoreDS(torch.utils.data.Dataset):
        def __init__(self, store):
            self.store, self.mem = store, _MemSampler()

        def __len__(self):
            return len(self.store)

        def __getitem__(self, i):
            f, b = self.store[self.store.img_ids[i]]
            return f, b, self.mem.sample()

    class H5DS(torch.utils.data.Dataset):
        def __init__(self, path):
            import h5py
            self.path, self.f, self.pid, self.mem = path, None, None, _MemSampler()
            with h5py.File(path, "r") as f:
                self.n = f["features"].shape[0]

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            import h5py
            if self.f is None or self.pid != os.getpid():
                self.f, self.pid = h5py.File(self.path, "r"), os.getpid()
            return self.f["features"][i], self.f["boxes"][i], self.mem.sample()

    class DictDS(torch.utils.data.Dataset):
        def __init__(self, imgid2img):
            self.d, self.ids, self.mem = imgid2img, list(imgid2img), _MemSampler()

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            img = self.d[self.ids[i]]
            boxes = img["boxes"].copy()
            boxes[:, (0, 2)] /= img["img_w"]
            boxes[:, (1, 3)] /= img["img_h"]
            return img["features"].copy(), boxes, self.mem.sample()

    return {"store": StoreDS, "h5": H5DS, "dict": DictDS}[kind](arg)


def authors_load(fname):
    """The authors' way: parse the whole TSV into memory (load_obj_tsv + imgid2img dict)."""
    from tasks.common.tsv_format import FIELDNAMES
    csv.field_size_limit(sys.maxsize)
    data = []
    with open(fname) as f:
        reader = csv.DictReader(f, FIELDNAMES, delimiter="\t")
        for item in reader:
            for key in ["img_h", "img_w", "num_boxes"]:
                item[key] = int(item[key])
            n = item["num_boxes"]
            for key, shape, dtype in [("objects_id", (n,), np.int64),
                                      ("objects_conf", (n,), np.float32),
                                      ("attrs_id", (n,), np.int64),
                                      ("attrs_conf", (n,), np.float32),
                                      ("boxes", (n, 4), np.float32),
                                      ("features", (n, -1), np.float32)]:
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
                item[key].setflags(write=False)
            data.append(item)
    return {d["img_id"]: d for d in data}


def _evict(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child(args) -> dict:
    import torch
    from tasks.common.features import open_feature_store
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.child == "dict":
        ds = _dataset("dict", authors_load(args.tsv))
    elif args.child in ("store", "store16"):
        store = open_feature_store(args.tsv, fp16=args.child == "store16", progress=False)
        if args.cold:
            _evict([p for p in store.store_dir.iterdir() if p.suffix == ".bin"])
        ds = _dataset("store", store)
    else:
        if args.cold:
            _evict([args.child_path])
        ds = _dataset("h5", args.child_path)
    startup = time.perf_counter() - t0
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True,
                                         num_workers=args.child_workers,
                                         generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    n, worker_anon, main_anon = 0, 0, 0
    for feats, boxes, anon in loader:
        assert feats.shape[1:] == (N_BOXES, DIM) and feats.dtype == torch.float32
        n += feats.shape[0]
        if args.child_workers:
            worker_anon = max(worker_anon, int(anon.max()))
        main_anon = max(main_anon, _status("RssAnon"))
    dt = time.perf_counter() - t0
    return {"startup_s": startup, "items": n, "items_per_s": n / dt, "epoch_s": dt,
            "vmhwm_mb": _status("VmHWM") / 2**20, "anon_main_mb": main_anon / 2**20,
            "anon_worker_max_mb": worker_anon / 2**20}


def run_child(script_args, mode, workers, cold=False, path=None):
    cmd = [sys.executable, __file__, "--child", mode, "--child-workers", str(workers),
           "--tsv", script_args["tsv"], "--batch", str(script_args["batch"])]
    if cold:
        cmd.append("--cold")
    if path:
        cmd += ["--child-path", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{cmd} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dir", default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "features.json"))
    # internal
    ap.add_argument("--child", default=None)
    ap.add_argument("--child-workers", type=int, default=0)
    ap.add_argument("--child-path", default=None)
    ap.add_argument("--tsv", default=None)
    ap.add_argument("--cold", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    from tasks.common.features import convert_tsv_to_store, open_feature_store, store_path_for
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_features_"))
    work.mkdir(parents=True, exist_ok=True)
    tsv = work / "bench_obj36.tsv"
    res = {"images": args.images, "boxes": N_BOXES, "dim": DIM, "batch": args.batch,
           "cpus": os.cpu_count(), "workers": args.workers}
    try:
        t0 = time.perf_counter()
        generate_tsv(tsv, args.images)
        res["generate_s"] = time.perf_counter() - t0
        res["tsv_bytes"] = tsv.stat().st_size
        for fp16 in (False, True):
            out = store_path_for(tsv, fp16=fp16)
            t0 = time.perf_counter()
            convert_tsv_to_store(tsv, out, fp16=fp16, progress=False)
            key = "store16" if fp16 else "store"
            res[f"{key}_convert_s"] = time.perf_counter() - t0
            res[f"{key}_bytes"] = du(out)
        store = open_feature_store(tsv, progress=False)
        h5 = {}
        for chunked in (False, True):
            p = work / f"bench{'_chunked' if chunked else ''}.h5"
            t0 = time.perf_counter()
            write_hdf5(store, p, chunked)
            key = "h5chunk" if chunked else "h5"
            res[f"{key}_write_from_store_s"] = time.perf_counter() - t0
            res[f"{key}_bytes"] = p.stat().st_size
            h5[key] = p
        store.close()
        sargs = {"tsv": str(tsv), "batch": args.batch}
        runs = []
        plan = [("dict", 0, False, None)]
        for w in (0, args.workers):
            plan += [("store", w, False, None), ("store16", w, False, None),
                     ("h5", w, False, h5["h5"]), ("h5chunk", w, False, h5["h5chunk"])]
        plan += [("store", 0, True, None), ("h5", 0, True, h5["h5"])]
        for mode, w, cold, path in plan:
            r = run_child(sargs, "h5" if mode.startswith("h5") else mode, w, cold, path)
            r.update(mode=mode, workers=w, cold=cold)
            runs.append(r)
            print(f"  {mode:8s} w={w} cold={cold!s:5s} {r['items_per_s']:8.0f} items/s",
                  file=sys.stderr)
        res["runs"] = runs
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    mb = 2**20
    print(f"\n{args.images} images x {N_BOXES} x {DIM} float32, batch {args.batch}, "
          f"{os.cpu_count()} CPUs")
    print(f"TSV {res['tsv_bytes'] / mb:,.0f} MB (generated in {res['generate_s']:.1f}s)")
    print(f"store fp32 {res['store_bytes'] / mb:,.0f} MB, converted in "
          f"{res['store_convert_s']:.1f}s ({res['tsv_bytes'] / mb / res['store_convert_s']:,.0f}"
          f" MB/s of TSV); fp16 {res['store16_bytes'] / mb:,.0f} MB in "
          f"{res['store16_convert_s']:.1f}s")
    print(f"HDF5 contiguous {res['h5_bytes'] / mb:,.0f} MB, chunked (1,36,2048) "
          f"{res['h5chunk_bytes'] / mb:,.0f} MB (written from the store)")
    names = {"dict": "authors (whole TSV in RAM)", "store": "memmap store fp32",
             "store16": "memmap store fp16", "h5": "HDF5 contiguous",
             "h5chunk": "HDF5 chunked"}
    hdr = (f"{'mode':28s} {'workers':>7s} {'cache':>5s} {'startup s':>9s} {'items/s':>8s} "
           f"{'VmHWM MB':>9s} {'anon MB':>8s} {'wkr anon MB':>11s}")
    print(hdr)
    print("-" * len(hdr))
    for r in runs:
        print(f"{names[r['mode']]:28s} {r['workers']:7d} {'cold' if r['cold'] else 'warm':>5s} "
              f"{r['startup_s']:9.2f} {r['items_per_s']:8.0f} {r['vmhwm_mb']:9.0f} "
              f"{r['anon_main_mb']:8.0f} {r['anon_worker_max_mb']:11.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
