"""Reading image files for feature extraction and tools.predict --image: every failure
(unreadable, truncated, not an image, smaller than the region grid) is a `BadImageError`
naming the file; an extraction skips such an image with a warning or stops on it."""
from __future__ import annotations

import sys

import numpy as np
from PIL import Image


class BadImageError(ValueError):
    """An image file that cannot be described: unreadable, truncated, not an image, or
    smaller than the grid. The message names the file."""


def load_image(path: str, max_side: int | None, grid: int = 1) -> tuple[np.ndarray, int, int]:
    """-> (uint8 [h, w, 3] possibly down-scaled, original height, original width)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # decodes the pixels: a truncated file fails here
            w, h = im.size
            if max_side and max(w, h) > max_side:
                s = max_side / max(w, h)
                im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(f"{path}: cannot read the image ({type(err).__name__}: "
                            f"{err})") from None
    if min(arr.shape[:2]) < grid:
        raise BadImageError(f"{path}: the image ({arr.shape[1]}x{arr.shape[0]} pixels as "
                            f"described) is smaller than the {grid}x{grid} grid")
    return arr, h, w


BAD_IMAGE_MODES = ("skip", "stop")


def load_readable(pool, chunk, max_side, grid, bad_images: str, skipped: list) -> tuple:
    """(the readable (img_id, path) pairs of `chunk`, their loaded images); an unreadable
    image stops the extraction (bad_images "stop") or is skipped with a warning and listed
    in `skipped`."""
    def load(item):
        try:
            return load_image(item[1], max_side, grid)
        except BadImageError as err:
            return err
    kept, loaded = [], []
    for item, result in zip(chunk, pool.map(load, chunk)):
        if isinstance(result, BadImageError):
            if bad_images == "stop":
                raise result
            print(f"warning: skipped img_id {item[0]!r}: {result}", file=sys.stderr, flush=True)
            skipped.append(item[1])
            continue
        kept.append(item)
        loaded.append(result)
    return kept, loaded
