"""Region features for a folder (or list) of images, written in the LXMERT TSV format.

    python -m tools.extract_features IMAGES_DIR_OR_GLOB OUT.tsv [--grid 6] [--dim 2048]
           [--ids-from-filename] [--id-prefix P] [--backbone resnet50 --weights PATH]
    python -m tools.extract_features IMAGES OUT.tsv --detector butd --weights FILE
           [--device auto|cpu|cuda:N] [--bad-images skip|stop] [--max-pixels N]

Without --detector: grid regions (tools.grid_features: a handcrafted descriptor of each cell
of a grid x grid partition, or a torchvision ResNet's pooled cells with --backbone), written
at once (temporary file, then renamed).

With --detector butd: the bottom-up-attention Faster R-CNN (butd) whose 36 regions per image
LXMERT's features are, with the weights file the user supplies (tools.detector_features):
one image at a time, resumable, bad pictures named and skipped.

Next to the TSV, `<stem>.extractor.npz` records how the features were made, so that a new
picture can later be described the same way (tools.predict --image).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from tasks.common.tsv_format import ImageFeatures, encode_row
from tools.grid_features import (MASK_GRID, THUMB_GRID, BackboneExtractor,  # noqa: F401
                                 FeatureMapper, HandcraftedExtractor, describe_batch,
                                 fit_standardizer, grid_boxes, raw_dim, region_raw_dim)
from tools.image_files import (BAD_IMAGE_MODES, DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS,
                               BadImageError, load_image, load_readable)

# ----------------------------------------------------------------------------- TSV writing

def _chunks(items: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def extract_to_tsv(image_paths: dict[str, str], out_tsv: str | os.PathLike, grid: int = 6,
                   dim: int = 2048, *, projection: str = "auto", batch_size: int = 256,
                   num_workers: int | None = None, max_side: int | None = 256,
                   backbone: str | None = None, weights: str | None = None,
                   backbone_size: int = 448, progress: bool = False,
                   standardize: tuple[np.ndarray, np.ndarray] | None = None,
                   bad_images: str = "skip") -> dict:
    """Write one TSV row per image (in ``image_paths`` order), atomically (temp file + rename).

    ``image_paths`` maps img_id -> image file.  Boxes are grid cells in original pixel
    coordinates; images larger than ``max_side`` are down-scaled for the handcrafted descriptor
    only. An image that cannot be read is skipped with a warning naming it (``bad_images``
    "skip", counted in "skipped") or stops the extraction (``"stop"``, BadImageError).
    Returns {"images", "skipped", "seconds", "raw_dim", "dim", "num_boxes", "mode"}.
    """
    if bad_images not in BAD_IMAGE_MODES:
        raise ValueError(f"bad_images must be one of {BAD_IMAGE_MODES}, got {bad_images!r}")
    t0 = time.time()
    if backbone:
        extractor = BackboneExtractor(backbone, weights, grid, dim, projection, backbone_size)
        max_side = None
    else:
        extractor = HandcraftedExtractor(grid, dim, projection, standardize)
    out_tsv = Path(out_tsv)
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    items = list(image_paths.items())
    for img_id, _ in items:
        if not img_id or "\t" in img_id or "\n" in img_id:
            raise ValueError(f"bad img_id {img_id!r}")
    workers = num_workers or min(8, os.cpu_count() or 1)
    fd, tmp = tempfile.mkstemp(prefix=out_tsv.name + ".", suffix=".tmp", dir=out_tsv.parent)
    done, skipped = 0, []
    try:
        with os.fdopen(fd, "w", newline="\n") as f, ThreadPoolExecutor(workers) as pool:
            for chunk in _chunks(items, batch_size):
                seen = len(chunk)
                chunk, loaded = load_readable(pool, chunk, max_side, grid, bad_images, skipped)
                # group same-sized images so the descriptor is computed batched
                groups: dict[tuple[int, int], list[int]] = {}
                for i, (arr, _, _) in enumerate(loaded):
                    groups.setdefault(arr.shape[:2], []).append(i)
                feats: list[np.ndarray | None] = [None] * len(chunk)
                for idxs in groups.values():
                    for i, fe in zip(idxs, extractor([loaded[i][0] for i in idxs])):
                        feats[i] = fe
                n = grid * grid
                ones, zeros = np.ones(n, np.float32), np.zeros(n, np.int64)
                for (img_id, _), (_, h, w), fe in zip(chunk, loaded, feats):
                    row = ImageFeatures(img_id=img_id, img_h=h, img_w=w, objects_id=zeros,
                                        objects_conf=ones, attrs_id=zeros, attrs_conf=ones,
                                        boxes=grid_boxes(h, w, grid), features=fe)
                    f.write(encode_row(row) + "\n")
                done += seen
                if progress:
                    print(f"  {done}/{len(items)} images ({time.time() - t0:.1f}s)",
                          file=sys.stderr, flush=True)
        if len(skipped) == len(items):
            raise BadImageError(f"none of the {len(items)} images could be read (the first: "
                                f"{skipped[0]})")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, out_tsv)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    settings = {"mode": backbone or "handcrafted", "grid": grid, "dim": dim,
                "projection": projection, "max_side": max_side or 0,
                "weights": os.path.abspath(weights) if weights else "",
                "backbone_size": backbone_size}
    save_extractor(sidecar_path(out_tsv), settings, standardize)
    return {"images": done - len(skipped), "skipped": len(skipped),
            "seconds": time.time() - t0,
            "raw_dim": extractor.mapper.in_dim, "dim": dim, "num_boxes": grid * grid,
            "mode": backbone or "handcrafted"}


# ----------------------------------------------------------------------------- the recipe file
# Each TSV gets a small sidecar `<stem>.extractor.npz` with the settings and the fitted
# standardisation, so a new image can later be described exactly as the training images were
# (the predictor's --image path).

def sidecar_path(tsv_path: str | os.PathLike) -> Path:
    tsv = Path(tsv_path)
    stem = tsv.name[:-4] if tsv.name.endswith(".tsv") else tsv.name
    return tsv.with_name(stem + ".extractor.npz")


def save_extractor(path: Path, settings: dict,
                   standardize: tuple[np.ndarray, np.ndarray] | None) -> None:
    arrays = {f"setting_{k}": np.asarray(v) for k, v in settings.items()}
    if standardize is not None:
        arrays["mean"], arrays["std"] = (np.asarray(a, np.float32) for a in standardize)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def read_extractor_settings(path: Path) -> dict:
    """The settings an extractor record holds (plus "mean"/"std" when it has them)."""
    with np.load(path, allow_pickle=False) as z:
        settings = {k[len("setting_"):]: z[k].item() for k in z.files if k.startswith("setting_")}
        if "mean" in z.files:
            settings["mean"], settings["std"] = z["mean"], z["std"]
    return settings


class ImageFeaturizer:
    """Describes one image file exactly as the features of a TSV were made, from the record
    written next to it: grid descriptors, a torchvision backbone, or the detector (on
    `device`, with the weights file the record names, checked to be the same file)."""

    def __init__(self, sidecar: str | os.PathLike, weights: str | os.PathLike | None = None,
                 device: Optional[str] = "cpu"):
        """`weights`: the extractor's weights file on this machine, when the path the record
        names is not (a backbone's or a detector's)."""
        sidecar = Path(sidecar)
        if not sidecar.is_file():
            raise FileNotFoundError(
                f"{sidecar}: no feature-extractor record; features made before these records "
                f"existed need re-extracting (e.g. python -m tools.easyvqa --force)")
        s = read_extractor_settings(sidecar)
        standardize = (s.pop("mean"), s.pop("std")) if "mean" in s else None
        if weights:
            s["weights"] = str(weights)
        self.settings, self.sidecar, self.detector = s, sidecar, None
        if s["mode"] == "butd":
            self.detector = _recorded_detector(s, sidecar, device)
        elif s["mode"] == "handcrafted":
            self.extractor = HandcraftedExtractor(s["grid"], s["dim"], s["projection"],
                                                  standardize)
        else:
            self.extractor = BackboneExtractor(s["mode"], s["weights"], s["grid"], s["dim"],
                                               s["projection"], s["backbone_size"])
        self.max_side = (s.get("max_side") or None) if s["mode"] == "handcrafted" else None

    def __call__(self, image_path: str | os.PathLike) -> ImageFeatures:
        if not Path(image_path).is_file():
            raise FileNotFoundError(f"--image {image_path}: no such file")
        img_id = Path(image_path).stem
        if self.detector is not None:
            return self.detector.describe_file(image_path, img_id)
        arr, h, w = load_image(str(image_path), self.max_side, self.settings["grid"])
        feats = self.extractor([arr])[0]
        n = self.settings["grid"] ** 2
        return ImageFeatures(img_id=img_id, img_h=h, img_w=w,
                             objects_id=np.zeros(n, np.int64), objects_conf=np.ones(n, np.float32),
                             attrs_id=np.zeros(n, np.int64), attrs_conf=np.ones(n, np.float32),
                             boxes=grid_boxes(h, w, self.settings["grid"]), features=feats)


def _recorded_detector(settings: dict, sidecar: Path, device: Optional[str]):
    from butd import DetectorConfig
    from tools.detector_features import DetectorExtractor, file_sha256
    weights = Path(settings["weights"])
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights}: the detector weights these features were extracted with (record "
            f"{sidecar}) are not there; put the file back at that path")
    if file_sha256(weights) != settings["weights_sha256"]:
        raise ValueError(f"{weights} is not the file the features were extracted with (record "
                         f"{sidecar}: a different sha256); a picture described with other "
                         f"weights would not match what the model was trained on")
    config = DetectorConfig.from_json(settings["detector_config"], str(sidecar))
    return DetectorExtractor(weights, device, config)


def collect_images(spec: str, ids_from: str = "stem", id_prefix: str = "") -> dict[str, str]:
    """A directory, a glob pattern, or a .txt file listing paths -> {img_id: path}, sorted."""
    if os.path.isdir(spec):
        paths = sorted(str(p) for p in Path(spec).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    elif os.path.isfile(spec) and spec.endswith(".txt"):
        with open(spec) as f:
            paths = [line.strip() for line in f if line.strip()]
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
    out: dict[str, str] = {}
    for p in paths:
        key = Path(p).stem if ids_from == "stem" else Path(p).name
        key = id_prefix + key
        if key in out:
            raise ValueError(f"duplicate img_id {key!r}: {out[key]} and {p}")
        out[key] = p
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tools.extract_features",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("images", help="a folder of images, a glob pattern, or a .txt list of paths")
    ap.add_argument("out_tsv")
    ap.add_argument("--ids-from-filename", action="store_true",
                    help="img_id = file name stem (the default; kept explicit for scripts)")
    ap.add_argument("--ids-with-extension", action="store_true",
                    help="img_id = file name including its extension")
    ap.add_argument("--id-prefix", default="", help="prepended to every img_id")
    ap.add_argument("--weights", default=None,
                    help="local weights file: the detector's (.pkl of py-bottom-up-attention, "
                         "pytorch_model.bin of unc-nlp/frcnn-vg-finetuned, or .safetensors) "
                         "or --backbone's state dict")
    ap.add_argument("--bad-images", choices=BAD_IMAGE_MODES, default="skip",
                    help="an unreadable, truncated or oversized image: skip it with a warning "
                         "naming it (default; the count is printed at the end) or stop")
    ap.add_argument("--quiet", action="store_true")
    g = ap.add_argument_group("grid regions (the default)")
    g.add_argument("--grid", type=int, default=6, help="grid x grid boxes (default 6 -> 36)")
    g.add_argument("--dim", type=int, default=2048, help="feature size (default 2048)")
    g.add_argument("--projection", choices=["auto", "pad", "random"], default="auto")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--workers", type=int, default=None, help="image-decoding threads")
    g.add_argument("--max-side", type=int, default=256,
                   help="down-scale larger images for the handcrafted descriptor (0 = never)")
    g.add_argument("--backbone", default=None,
                   help="torchvision ResNet name (e.g. resnet50); needs torchvision and --weights")
    g.add_argument("--backbone-size", type=int, default=448, help="short side fed to the CNN")
    d = ap.add_argument_group("detector regions")
    d.add_argument("--detector", choices=["butd"], default=None,
                   help="butd: the bottom-up-attention Faster R-CNN LXMERT's features come "
                        "from (36 regions per image); needs --weights")
    d.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda:N")
    d.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger pictures (default {DEFAULT_MAX_PIXELS:,}, Pillow's "
                        f"decompression-bomb limit)")
    return ap


def skipped_note(stats: dict) -> str:
    return (f"; skipped {stats['skipped']} unreadable image(s), named above"
            if stats["skipped"] else "")


def run_detector(args, paths: dict) -> int:
    import warnings

    from PIL import Image

    from butd import WeightsError
    from tools.detector_features import extract_detector_tsv
    # this tool refuses pictures over --max-pixels itself, before decoding them
    Image.MAX_IMAGE_PIXELS = max(args.max_pixels, 1)
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    try:
        stats = extract_detector_tsv(paths, args.out_tsv, args.weights, device=args.device,
                                     bad_images=args.bad_images, max_pixels=args.max_pixels,
                                     progress=not args.quiet)
    except (WeightsError, FileNotFoundError, ValueError) as err:   # BadImageError included
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {stats['written']} images x {stats['num_boxes']} regions x {stats['dim']} "
          f"(detector butd on {stats['device']}) to {args.out_tsv} in {stats['seconds']:.1f}s; "
          f"{stats['present']} were already there" + skipped_note(stats))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    for flag, value, low in (("--grid", args.grid, 1), ("--dim", args.dim, 1),
                             ("--batch-size", args.batch_size, 1), ("--max-side", args.max_side, 0),
                             ("--workers", args.workers or 1, 1),
                             ("--backbone-size", args.backbone_size, 32),
                             ("--max-pixels", args.max_pixels, 1)):
        if value < low:
            ap.error(f"{flag} {value}: expected an integer >= {low}")
    if args.detector and args.backbone:
        ap.error("--detector and --backbone exclude each other")
    if args.detector and not args.weights:
        ap.error("--detector butd needs --weights FILE (the detector's weights, which you "
                 "download yourself: see docs/detector.md)")
    paths = collect_images(args.images, "name" if args.ids_with_extension else "stem",
                           args.id_prefix)
    if not paths:
        ap.error(f"no images found at {args.images!r}")
    if args.detector:
        return run_detector(args, paths)
    try:
        stats = extract_to_tsv(paths, args.out_tsv, args.grid, args.dim,
                               projection=args.projection, batch_size=args.batch_size,
                               num_workers=args.workers, max_side=args.max_side or None,
                               backbone=args.backbone, weights=args.weights,
                               backbone_size=args.backbone_size, progress=not args.quiet,
                               bad_images=args.bad_images)
    except BadImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {stats['images']} images x {stats['num_boxes']} boxes x {stats['dim']} "
          f"({stats['mode']}, raw {stats['raw_dim']}) to {args.out_tsv} "
          f"in {stats['seconds']:.1f}s" + skipped_note(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
