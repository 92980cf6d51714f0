"""From an RGB picture to the detector's input, as LXMERT's extraction prepared it.

The shortest side is scaled to `min_size` unless the longest would then exceed `max_size`
(then the longest is `max_size`), sizes rounded half up; the 8-bit picture is resized with
Pillow's bilinear filter (detectron2's ResizeShortestEdge), turned into BGR, and the BGR pixel
means are subtracted (std 1, no division by 255).

Colour order is the classic pitfall: decoders give RGB, the Caffe-trained detector wants BGR.
Everything that feeds the detector goes through `prepare_image`, which takes RGB only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from butd.config import DetectorConfig


@dataclass
class PreparedImage:
    tensor: torch.Tensor     # [3, h, w] float32, BGR minus the pixel means
    original_size: tuple     # (height, width) of the picture given
    size: tuple              # (h, w) after resizing


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple:
    """(new height, new width) for the test-time resize."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    scale = min_size * 1.0 / min(height, width)
    if height < width:
        new_h, new_w = float(min_size), scale * width
    else:
        new_h, new_w = scale * height, float(min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def prepare_image(rgb: np.ndarray, config: DetectorConfig) -> PreparedImage:
    """uint8 RGB [H, W, 3] -> the detector's input."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"prepare_image takes an RGB uint8 array [H, W, 3], got "
                         f"{rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    new_h, new_w = resized_size(height, width, config.min_size, config.max_size)
    if new_h < 1 or new_w < 1:
        raise ValueError(f"a {width}x{height} picture resizes to {new_w}x{new_h} pixels: too "
                         f"thin for the detector")
    if (new_h, new_w) != (height, width):
        rgb = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))
    bgr = rgb[:, :, ::-1].astype(np.float32) - np.asarray(config.pixel_mean, np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))
    return PreparedImage(tensor, (height, width), (new_h, new_w))
