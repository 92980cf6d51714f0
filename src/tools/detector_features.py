"""Detector region features: the bottom-up-attention Faster R-CNN (butd) over a set of
pictures, written as LXMERT's TSV (36 regions per picture chosen as LXMERT's were).

- One picture at a time, the reference way: pictures padded to a common size in a batch get
  different features near their borders.
- The device is the tool's choice (`auto`: the GPU when there is one); the model is moved.
- Resumable. Rows are appended to `OUT.tsv.partial`, one flushed write per picture; a rerun
  with the same weights and settings skips the img_ids already there (a line torn by a crash
  is cut off) and renames the file to OUT.tsv once every picture is in. Extracting into an
  existing OUT.tsv reopens it the same way and adds only the pictures it lacks. An img_id is
  never written twice.
- A picture that cannot be used is named and skipped with a warning and counted (a rerun
  tries it again); `bad_images="stop"` stops instead, the rows written so far kept for a rerun.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from butd import DetectorConfig, load_detector, prepare_image, select_regions
from tasks.common.runtime import resolve_device
from tasks.common.tsv_format import FIELDNAMES, ImageFeatures, encode_row
from tools.image_files import (BAD_IMAGE_MODES, DEFAULT_MAX_PIXELS, BadImageError,
                               load_rgb)

PARTIAL_SUFFIX = ".partial"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class DetectorExtractor:
    """The detector with a user-supplied weights file, describing one picture at a time."""

    def __init__(self, weights: str | os.PathLike, device: Optional[str] = "auto",
                 config: Optional[DetectorConfig] = None, **model_options):
        self.weights = os.path.abspath(weights)
        self.device = resolve_device(device)
        model, self.info = load_detector(self.weights, config, **model_options)
        self.config = self.info.config
        self.model = model.to(self.device)

    def settings(self) -> dict:
        """What the extractor record stores (a rerun or tools.predict rebuilds it from this)."""
        return {"mode": "butd", "weights": self.weights,
                "weights_sha256": file_sha256(self.weights),
                "detector_config": self.config.to_json(), "num_boxes": self.config.num_regions,
                "dim": self.config.res5_channels}

    def describe(self, rgb: np.ndarray, img_id: str) -> ImageFeatures:
        prepared = prepare_image(rgb, self.config)
        output = self.model(prepared.tensor.to(self.device))
        regions = select_regions(output, prepared.original_size, self.config,
                                 backend=self.model.ops_backend)
        height, width = prepared.original_size

        def numpy(tensor: torch.Tensor, dtype) -> np.ndarray:
            return tensor.detach().cpu().numpy().astype(dtype)

        return ImageFeatures(img_id=img_id, img_h=height, img_w=width,
                             objects_id=numpy(regions.object_ids, np.int64),
                             objects_conf=numpy(regions.object_conf, np.float32),
                             attrs_id=numpy(regions.attr_ids, np.int64),
                             attrs_conf=numpy(regions.attr_conf, np.float32),
                             boxes=numpy(regions.boxes, np.float32),
                             features=numpy(regions.features.float(), np.float32))

    def describe_file(self, path: str | os.PathLike, img_id: str,
                      max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> ImageFeatures:
        rgb = load_rgb(path, max_pixels)
        try:
            return self.describe(rgb, img_id)
        except ValueError as err:      # e.g. a 1 x 5000 strip that resizes to nothing
            raise BadImageError(f"{path}: {err}") from None


# ---- the resumable TSV ------------------------------------------------------------------------

def scan_rows(path: Path) -> tuple[set, int]:
    """(img_ids, byte length of the complete rows) of a TSV being appended to. A torn last
    line (no newline, or the wrong number of fields) is not counted; a bad line before the end
    is an error naming it."""
    ids: set = set()
    good = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            complete = line.endswith(b"\n") and line.count(b"\t") == len(FIELDNAMES) - 1
            if not complete or b"\x00" in line:
                if f.read(1):
                    raise ValueError(f"{path}:{lineno}: a malformed row before the end of the "
                                     f"file; it was not written by this tool's appends")
                break
            img_id = line.split(b"\t", 1)[0].decode("utf-8")
            if img_id in ids:
                raise ValueError(f"{path}:{lineno}: img_id {img_id!r} appears twice")
            ids.add(img_id)
            good += len(line)
    return ids, good


def _check_same_settings(record: Path, settings: dict, out_tsv: Path) -> None:
    from tools.extract_features import read_extractor_settings
    if not record.is_file():
        raise ValueError(f"{out_tsv}: rows exist but their extractor record {record} does not; "
                         f"extract into a new file (or delete the old one) instead")
    old = read_extractor_settings(record)
    keys = ("mode", "weights_sha256", "detector_config")
    if any(old.get(k) != settings[k] for k in keys):
        raise ValueError(
            f"{out_tsv}: holds features made with other settings (record {record}: mode "
            f"{old.get('mode')!r}, weights {old.get('weights', '?')}); these are mode 'butd' "
            f"with {settings['weights']}. Extract into a new file, or delete the old one")


@contextlib.contextmanager
def exclusive(out_tsv: Path):
    """Only one extraction writes a TSV at a time: `flock` on OUT.tsv.lock (dropped by the OS
    if the process dies), the file removed afterwards."""
    lock = out_tsv.with_name(out_tsv.name + ".lock")
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{out_tsv}: another extraction is writing it (lock {lock}); "
                             f"wait for it to finish") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def open_for_append(out_tsv: Path, settings: dict) -> tuple[Path, set]:
    """The partial file to append to (created, resumed, or the finished TSV reopened) and
    the img_ids it already holds."""
    from tools.extract_features import save_extractor, sidecar_path
    partial = out_tsv.with_name(out_tsv.name + PARTIAL_SUFFIX)
    record = sidecar_path(out_tsv)
    if out_tsv.exists() and partial.exists():
        raise ValueError(f"both {out_tsv} and {partial} exist; keep one of them")
    if out_tsv.exists() or partial.exists():
        _check_same_settings(record, settings, out_tsv)
        if out_tsv.exists():
            os.replace(out_tsv, partial)
        ids, good = scan_rows(partial)
        if good != partial.stat().st_size:
            with open(partial, "r+b") as f:
                f.truncate(good)
        return partial, ids
    out_tsv.parent.mkdir(parents=True, exist_ok=True)
    save_extractor(record, settings, None)
    partial.touch()
    return partial, set()


def _append_rows(extractor: DetectorExtractor, todo: list, partial: Path, bad_images: str,
                 max_pixels: Optional[int], progress: bool) -> list:
    """Describe and append each (img_id, file); the files skipped."""
    from tqdm import tqdm
    skipped: list = []
    bar = tqdm(todo, desc="detector", unit="img", disable=not progress, dynamic_ncols=True)
    with open(partial, "a", encoding="utf-8", newline="\n") as f:
        for img_id, path in bar:
            try:
                row = extractor.describe_file(path, img_id, max_pixels)
            except BadImageError as err:
                if bad_images == "stop":
                    raise
                skipped.append(str(path))
                bar.write(f"warning: skipped img_id {img_id!r}: {err}", file=sys.stderr)
                continue
            f.write(encode_row(row) + "\n")
            f.flush()
        os.fsync(f.fileno())
    return skipped


def extract_detector_tsv(image_paths: dict, out_tsv: str | os.PathLike,
                         weights: str | os.PathLike, *, device: Optional[str] = "auto",
                         config: Optional[DetectorConfig] = None, bad_images: str = "skip",
                         max_pixels: Optional[int] = DEFAULT_MAX_PIXELS,
                         progress: bool = True) -> dict:
    """Describe every picture of `image_paths` ({img_id: file}) into `out_tsv`; returns
    {"written", "present", "skipped", "skipped_files", "seconds", "device", "num_boxes",
    "dim", "mode"}."""
    if bad_images not in BAD_IMAGE_MODES:
        raise ValueError(f"bad_images must be one of {BAD_IMAGE_MODES}, got {bad_images!r}")
    for img_id in image_paths:
        if not img_id or "\t" in img_id or "\n" in img_id:
            raise ValueError(f"bad img_id {img_id!r}")
    start = time.time()
    extractor = DetectorExtractor(weights, device, config)
    out_tsv = Path(out_tsv)
    with exclusive(out_tsv):
        partial, present = open_for_append(out_tsv, extractor.settings())
        todo = [(i, p) for i, p in image_paths.items() if i not in present]
        skipped = _append_rows(extractor, todo, partial, bad_images, max_pixels, progress)
        # skipped pictures stay out (a rerun tries them again); the rest is complete
        os.replace(partial, out_tsv)
    return {"written": len(todo) - len(skipped), "present": len(present),
            "skipped": len(skipped), "skipped_files": skipped, "seconds": time.time() - start,
            "device": str(extractor.device), "num_boxes": extractor.config.num_regions,
            "dim": extractor.config.res5_channels, "mode": "butd"}
