"""Picture files -> 8-bit RGB arrays, for the modes real photo collections hold.

- EXIF orientation is applied (phones store portrait photos as landscape pixels plus a tag);
- grayscale, 1-bit, palette, CMYK, YCbCr ... -> RGB with Pillow's conversions;
- alpha (RGBA, LA, PA, palette transparency) is dropped, keeping the colour channels, as
  OpenCV's `imread` (the reader of the reference feature extraction) does;
- 16-bit samples keep their high byte (value >> 8), as `imread` does; float images are
  clipped to 0..255.
Errors are `ImageError`s naming the file: missing, empty (0 bytes), not a picture, truncated
or corrupt, or larger than the pixel limit (a decompression bomb is refused before decoding).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Pillow's own default limit (1024 * 1024 * 1024 // 4 // 3 pixels, about 89 million).
DEFAULT_MAX_PIXELS = 89_478_485
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """A picture that cannot be used; the message names the file and why."""


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
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise ImageError(
                    f"{path}: {width}x{height} = {width * height:,} pixels is over the limit "
                    f"of {max_pixels:,} (a decompression bomb?); raise the limit "
                    f"(--max-pixels) only for a file you trust")
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except Image.DecompressionBombError as err:   # Pillow's own check, at twice its limit
        raise ImageError(f"{path}: refused as a decompression bomb ({err}); raise the limit "
                         f"(--max-pixels) only for a file you trust") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a picture Pillow can read") from None
    except Exception as err:   # truncated data, corrupt headers, codec errors
        raise ImageError(f"{path}: cannot be decoded ({type(err).__name__}: {err}); a "
                         f"truncated or corrupt file?") from None
