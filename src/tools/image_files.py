"""Reading image files for feature extraction and tools.predict --image: every failure
(missing, empty, unreadable, truncated, not an image, over the pixel limit, smaller than the
region grid) is a `BadImageError` naming the file; an extraction skips such an image with a
warning or stops on it.

Pictures are decoded the way real photo collections need:
- EXIF orientation is applied (phones store portrait photos as landscape pixels plus a tag);
- grayscale, 1-bit, palette, CMYK, YCbCr ... -> RGB with Pillow's conversions;
- alpha (RGBA, LA, PA, palette transparency) is dropped, keeping the colour channels, as
  OpenCV's `imread` (the reader of the reference detector extraction) does;
- 16-bit samples keep their high byte (value >> 8), as `imread` does; float images are
  clipped to 0..255;
- a picture with more pixels than the limit is refused before it is decoded.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Pillow's own default limit (1024 * 1024 * 1024 // 4 // 3 pixels, about 89 million).
DEFAULT_MAX_PIXELS = 89_478_485
BAD_IMAGE_MODES = ("skip", "stop")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class BadImageError(ValueError):
    """An image file that cannot be described: unreadable, truncated, not an image, too
    large, or smaller than the grid. The message names the file."""


def to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode -> uint8 [H, W, 3] RGB."""
    if image.mode in _SIXTEEN_BIT:
        gray = np.asarray(image).astype(np.int64)
        gray = (np.clip(gray, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        gray = np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def load_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The picture at `path` as uint8 RGB [H, W, 3], upright (EXIF orientation applied)."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise BadImageError(f"{path}: cannot read the image (an empty file, 0 bytes)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise BadImageError(
                    f"{path}: {width}x{height} = {width * height:,} pixels is over the limit "
                    f"of {max_pixels:,} (a decompression bomb?); raise the limit "
                    f"(--max-pixels) only for a file you trust")
            image.load()   # decodes the pixels: a truncated file fails here
            return to_rgb(ImageOps.exif_transpose(image))
    except BadImageError:
        raise
    except Image.DecompressionBombError as err:   # Pillow's own check, at twice its limit
        raise BadImageError(f"{path}: refused as a decompression bomb ({err}); raise the "
                            f"limit (--max-pixels) only for a file you trust") from None
    except UnidentifiedImageError:
        raise BadImageError(f"{path}: cannot read the image (not a picture Pillow can "
                            f"read)") from None
    except Exception as err:   # truncated data, corrupt headers, codec errors
        raise BadImageError(f"{path}: cannot read the image ({type(err).__name__}: {err}; a "
                            f"truncated or corrupt file?)") from None


def load_image(path: str, max_side: int | None, grid: int = 1) -> tuple[np.ndarray, int, int]:
    """-> (uint8 RGB [h, w, 3] possibly down-scaled, original height, original width), for
    the grid regions of a grid x grid partition."""
    arr = load_rgb(path)
    h, w = arr.shape[:2]
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        im = Image.fromarray(arr).resize((max(1, round(w * s)), max(1, round(h * s))),
                                         Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    if min(arr.shape[:2]) < grid:
        raise BadImageError(f"{path}: the image ({arr.shape[1]}x{arr.shape[0]} pixels as "
                            f"described) is smaller than the {grid}x{grid} grid")
    return arr, h, w


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
