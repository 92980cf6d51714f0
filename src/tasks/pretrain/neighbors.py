"""Nearest images for hard ITM negatives (ITM_HS): cosine of mean-pooled region features.

Computed once per corpus and cached as .npy (int32 [images, k]) next to the corpus index, so
every process and every later run of the stage reuses it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tasks.pretrain.corpus import remove_dead_temporaries

log = logging.getLogger(__name__)

CHUNK = 1024


def mean_pooled(corpus, stores) -> np.ndarray:
    """[images, D] float32: each image's mean region feature, L2-normalised."""
    out = None
    for i in range(corpus.num_images):
        feats, _ = stores[int(corpus.img_store[i])].row(int(corpus.img_row[i]))
        if out is None:
            out = np.zeros((corpus.num_images, feats.shape[1]), dtype=np.float32)
        out[i] = feats.mean(0)
    if out is None:
        return np.zeros((0, 1), dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def table_width(k: int, images: int) -> int:
    """Neighbours kept per image: k, or every other image when there are fewer."""
    return max(1, min(k, images - 1))


def nearest_images(pooled: np.ndarray, k: int, device: Optional[str] = None) -> np.ndarray:
    """[N, k] int32: the k other images of highest cosine, best first (fewer images than
    k + 1: every other image, padded by repeating the last)."""
    n = pooled.shape[0]
    k_eff = table_width(k, n)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    table = torch.from_numpy(pooled).to(dev)
    out = np.zeros((n, k), dtype=np.int32)
    for start in range(0, n, CHUNK):
        sims = table[start:start + CHUNK] @ table.T
        rows = torch.arange(sims.shape[0], device=dev)
        sims[rows, rows + start] = -float("inf")  # never the image itself
        top = sims.topk(k_eff, dim=1).indices.cpu().numpy().astype(np.int32)
        if k_eff < k:
            top = np.concatenate([top, np.repeat(top[:, -1:], k - k_eff, axis=1)], axis=1)
        out[start:start + CHUNK] = top
    return out


def load_or_compute(path: Optional[Path], corpus, stores, k: int) -> np.ndarray:
    """[images, width] nearest images; a `hard_negative_k` above the number of other images
    is cut to it (a wider table repeats itself, and a huge k would allocate images x k)."""
    width = table_width(k, corpus.num_images)
    if width < k:
        log.warning("hard negatives: hard_negative_k %d is more than the %d other images of "
                    "the corpus; using %d", k, corpus.num_images - 1, width)
        k = width
    if path is not None:
        remove_dead_temporaries(path.parent, path.name)
    if path is not None and path.is_file():
        try:
            table = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            table = np.zeros((0, 0))
            log.warning("hard negatives: %s is unreadable (%s); recomputing", path, err)
        if table.shape == (corpus.num_images, k) and table.dtype == np.int32 and (
                table.size == 0 or (table.min() >= 0 and table.max() < corpus.num_images)):
            log.info("hard negatives: %d nearest images per image from %s", k, path)
            return table
        log.warning("hard negatives: %s holds a %s %s table, expected int32 %s with image "
                    "ids below %d; recomputing", path, table.dtype, table.shape,
                    (corpus.num_images, k), corpus.num_images)
    log.info("hard negatives: pooling %d images and ranking %d neighbours each",
             corpus.num_images, k)
    table = nearest_images(mean_pooled(corpus, stores), k)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, table)
            os.replace(tmp, path)
        except OSError as err:
            log.warning("hard negatives: cannot cache %s (%s)", path, err)
    return table
