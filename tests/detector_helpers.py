"""Small detector settings, seeded random weights and generated pictures for the detector tests
(the parity fixture tests/fixtures/butd_parity.npz was made from exactly these).

Random weights are drawn with numpy's legacy RandomState, whose streams never change across
numpy versions, key by key in sorted-name order, so anyone can redraw the same state dict.
"""
from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import torch

from butd.config import VG_CONFIG, DetectorConfig
from butd.weights import expected_shapes

# The architecture of the Visual Genome model (ResNet-101 block counts, 1600 classes, 400
# attributes, RPN 6000 / 0.7 / 300, RoIPool 14) at 1/8 of its widths, on small inputs.
TINY_CONFIG = DetectorConfig(stem_channels=8, res2_channels=32, res2_bottleneck=8,
                             rpn_channels=64, min_size=320, max_size=448)
# The Visual Genome model's own widths (512-channel RPN, 1024-channel res4, 2048-dim regions)
# on a tiny input, with few proposals so that the dilated res5 stays cheap.
FULL_WIDTH_CONFIG = dataclasses.replace(VG_CONFIG, min_size=64, max_size=96, post_nms_topk=16,
                                        num_regions=8)
PARITY_SEED = 2021
PARITY_IMAGE_SIZES = ((150, 200), (240, 120), (100, 100))   # (height, width)


def _fan_in(shape) -> int:
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def random_state(config: DetectorConfig = TINY_CONFIG, seed: int = PARITY_SEED) -> dict:
    """A state dict for `config` drawn from `seed`, scaled so that activations stay finite
    through the 30+ residual blocks and the class scores of different regions differ clearly
    (He-scaled convolutions, residual branches ending in a small norm weight, wide class and
    attribute logits)."""
    rng = np.random.RandomState(seed)
    state = {}
    for key, shape in sorted(expected_shapes(config).items()):
        if key.endswith("norm.weight"):
            value = rng.uniform(0.1, 0.3, shape) if ".conv3." in key else rng.uniform(0.5, 1, shape)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("norm.bias") or key.endswith("running_mean"):
            value = 0.1 * rng.standard_normal(shape)
        elif key.endswith(".bias"):
            value = 0.01 * rng.standard_normal(shape)
        elif "cls_embedding" in key:
            value = rng.standard_normal(shape)
        else:
            gain = {"objectness_logits": 2.0, "anchor_deltas": 0.2, "cls_score": 6.0,
                    "bbox_pred": 2.0, "attr_score": 6.0}
            scale = next((g for name, g in gain.items() if name in key), np.sqrt(2.0))
            if key == "backbone.stem.conv1.weight":
                scale /= 64.0            # the input is in pixel units (about +-128)
            value = rng.standard_normal(shape) * scale / np.sqrt(_fan_in(shape))
            if key.endswith(("cls_score.weight", "attr_score.weight")):
                # region features are all positive with a shared mean: without it, the
                # classes' logits differ between regions instead of one class winning all
                value -= value.mean(axis=1, keepdims=True)
        state[key] = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return state


def parity_images(sizes=PARITY_IMAGE_SIZES, seed: int = 7) -> list:
    """uint8 RGB pictures: a smooth colour field, rectangles and discs of random colours, and
    pixel noise, so that no two regions look alike (no tied scores)."""
    rng = np.random.RandomState(seed)
    images = []
    for height, width in sizes:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        field = np.stack([np.sin(xx / rng.uniform(5, 30) + rng.uniform(0, 6))
                          + np.cos(yy / rng.uniform(5, 30) + rng.uniform(0, 6))
                          for _ in range(3)], -1) * 50 + 128
        for _ in range(6):
            colour = rng.uniform(0, 255, 3)
            x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
            rx, ry = rng.uniform(5, width / 3), rng.uniform(5, height / 3)
            if rng.uniform() < 0.5:
                inside = (np.abs(xx - x0) < rx) & (np.abs(yy - y0) < ry)
            else:
                inside = ((xx - x0) / rx) ** 2 + ((yy - y0) / ry) ** 2 < 1
            field[inside] = colour
        field += rng.normal(0, 12, field.shape)
        images.append(np.clip(np.round(field), 0, 255).astype(np.uint8))
    return images


def save_pickle_layout(state: dict, path, extra: dict | None = None) -> None:
    """Write a state dict laid out as py-bottom-up-attention's `.pkl` files are."""
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items()}
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "synthetic", **(extra or {})}, f,
                    protocol=2)


def hf_layout(state: dict, config: DetectorConfig = TINY_CONFIG) -> dict:
    """The same tensors as the Hugging Face port's state dict: plus its batch-norm counters
    and its stored anchors."""
    from butd.modeling import cell_anchors
    out = dict(state)
    for key in state:
        if key.endswith(".norm.running_var"):
            out[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    out["proposal_generator.anchor_generator.cell_anchors.0"] = cell_anchors(
        config.anchor_sizes, config.anchor_ratios)
    return out


def without_attributes(config: DetectorConfig) -> DetectorConfig:
    return dataclasses.replace(config, num_attributes=0)
