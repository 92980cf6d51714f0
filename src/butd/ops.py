"""Box arithmetic, non-maximum suppression and RoI max-pooling in plain torch.

The detector's references compute NMS and RoIPool with torchvision's compiled operators. Their
rules are reproduced here exactly (same float32 formulas, same rounding, same bins), so the
detector needs no compiled extension: the CPU build of torch is enough. Where torchvision's
operators do load (typically a CUDA machine), `backend="auto"` uses them for speed on GPU
tensors; tests check that both give the same result.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from butd.config import SCALE_CLAMP

# torchvision's RoIPool starts every bin at -FLT_MAX; an empty bin is 0.
_LOWEST = torch.finfo(torch.float32).min
BACKENDS = ("auto", "torch", "torchvision")


@functools.lru_cache(maxsize=None)
def torchvision_ops():
    """torchvision.ops when its compiled operators work in this environment, else None.

    The registry's torchvision wheel imports but cannot run its operators next to the CPU
    build of torch (`operator torchvision::nms does not exist`), hence the trial call."""
    try:
        from torchvision import ops
        ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
        ops.roi_pool(torch.zeros(1, 1, 2, 2), torch.zeros(1, 5), (1, 1), 1.0)
        return ops
    except Exception:  # ImportError, RuntimeError: any failure means "not available"
        return None


def _use_torchvision(backend: str, tensor: torch.Tensor) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"ops backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    ops = torchvision_ops()
    if backend == "torchvision":
        if ops is None:
            raise RuntimeError("ops backend 'torchvision' asked for, but torchvision's "
                               "operators do not load here; use 'torch' or 'auto'")
        return True
    return ops is not None and tensor.is_cuda


# ---- boxes ------------------------------------------------------------------------------------

def decode_boxes(deltas: torch.Tensor, boxes: torch.Tensor, weights) -> torch.Tensor:
    """Apply (dx, dy, dw, dh) deltas [N, k*4] to boxes [N, 4] (x1, y1, x2, y2) -> [N, k*4].

    Faster R-CNN's parametrisation: centre shifted by (dx*w, dy*h), size scaled by exp(dw),
    exp(dh); each delta divided by its weight first, dw/dh clamped at log(1000/16)."""
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=SCALE_CLAMP)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=SCALE_CLAMP)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    out = torch.empty_like(deltas)
    out[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    out[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    out[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    out[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return out


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """x into [0, width], y into [0, height] (boxes [..., 4])."""
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, M] intersection over union, computed as torchvision's NMS does (no +1, float32;
    two empty boxes give NaN, which never exceeds a threshold)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = (torch.minimum(a[:, None, 2], b[None, :, 2])
         - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    h = (torch.minimum(a[:, None, 3], b[None, :, 3])
         - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = w * h
    return inter / (area_a[:, None] + area_b[None, :] - inter)


# ---- non-maximum suppression ------------------------------------------------------------------

def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
        max_keep: Optional[int] = None, backend: str = "auto",
        block: int = 256) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes, highest score first (ties: lower index first).

    A box is dropped when its IoU with a kept, higher-scoring box exceeds `iou_threshold`
    (compared in float64, as torchvision compares its float IoU with a double threshold).
    `max_keep` stops once that many are kept: the same first `max_keep` as a full run.
    The IoU rows are computed a block at a time, vectorised, and only while needed."""
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: boxes [N, 4] and scores [N], got {tuple(boxes.shape)} and "
                         f"{tuple(scores.shape)}")
    n = boxes.shape[0]
    if n == 0 or max_keep == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if _use_torchvision(backend, boxes):
        keep = torchvision_ops().nms(boxes, scores, float(iou_threshold))
        return keep if max_keep is None else keep[:max_keep]
    order = torch.sort(scores, descending=True, stable=True).indices
    ordered = boxes[order]
    removed = np.zeros(n, dtype=bool)
    kept: list[int] = []
    for start in range(0, n, block):
        rows = (box_iou(ordered[start:start + block], ordered).double() > iou_threshold)
        rows = rows.cpu().numpy()
        for offset in range(rows.shape[0]):
            i = start + offset
            if removed[i]:
                continue
            kept.append(i)
            if max_keep is not None and len(kept) >= max_keep:
                return order[torch.as_tensor(kept, device=order.device)]
            removed |= rows[offset]
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]


# ---- RoI max-pooling --------------------------------------------------------------------------

def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's round(): halves away from zero (torch.round rounds halves to even)."""
    return torch.where(x >= 0, torch.floor(x + 0.5), torch.ceil(x - 0.5))


def roi_bins(boxes: torch.Tensor, output_size: int, spatial_scale: float, height: int,
             width: int):
    """Integer bin edges of torchvision's RoIPool for boxes [R, 4] on a [height, width] map:
    (hstart, hend) [R, P] and (wstart, wend) [R, P], clipped to the map (end exclusive).

    Box corners are scaled (in double) and rounded to cells; the RoI spans
    end - start + 1 cells (at least 1); bin p covers [floor(p * s), ceil((p + 1) * s)) with
    s = cells / P in float32, shifted by the start and clipped."""
    corners = _round_half_away(boxes.double() * spatial_scale).long()
    start_w, start_h, end_w, end_h = corners.unbind(1)
    size_w = (end_w - start_w + 1).clamp(min=1).float() / output_size
    size_h = (end_h - start_h + 1).clamp(min=1).float() / output_size
    p = torch.arange(output_size, dtype=torch.float32, device=boxes.device)

    def edges(size, start, limit):
        lo = torch.floor(p[None] * size[:, None]).long() + start[:, None]
        hi = torch.ceil((p + 1)[None] * size[:, None]).long() + start[:, None]
        return lo.clamp(0, limit), hi.clamp(0, limit)

    return edges(size_h, start_h, height) + edges(size_w, start_w, width)


@torch.no_grad()
def roi_pool(features: torch.Tensor, boxes: torch.Tensor, output_size: int,
             spatial_scale: float, backend: str = "auto") -> torch.Tensor:
    """(Inference only.) Max over each bin of each box: features [C, H, W] of one image,
    boxes [R, 4] in input pixels -> [R, C, P, P] (channels-last strides); an empty bin (a box
    off the map) gives 0.

    Vectorised over boxes and bins: one row gather per offset inside a bin (a bin spans a few
    cells), so the loop runs (tallest bin) x (widest bin) times. Cells outside a bin read a
    sentinel row of -FLT_MAX, the value torchvision starts each bin with."""
    if features.ndim != 3 or boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"roi_pool: features [C, H, W] and boxes [R, 4], got "
                         f"{tuple(features.shape)} and {tuple(boxes.shape)}")
    channels, height, width = features.shape
    count, size = boxes.shape[0], output_size
    if count == 0:
        return features.new_zeros(0, channels, size, size)
    if _use_torchvision(backend, features):
        rois = torch.cat([boxes.new_zeros(count, 1), boxes], dim=1).to(features.dtype)
        return torchvision_ops().roi_pool(features[None], rois, (size, size), spatial_scale)
    hstart, hend, wstart, wend = roi_bins(boxes, size, spatial_scale, height, width)
    cells = torch.cat([features.permute(1, 2, 0).reshape(height * width, channels),
                       features.new_full((1, channels), _LOWEST)])      # [H*W + 1, C]
    sentinel = height * width
    out = features.new_full((count * size * size, channels), _LOWEST)
    for dh in range(int((hend - hstart).max())):
        rows = hstart + dh                                              # [R, P]
        row_ok = rows < hend
        for dw in range(int((wend - wstart).max())):
            cols = wstart + dw
            inside = row_ok[:, :, None] & (cols < wend)[:, None, :]     # [R, P, P]
            index = torch.where(inside, rows[:, :, None] * width + cols[:, None, :],
                                sentinel)
            torch.maximum(out, cells.index_select(0, index.reshape(-1)), out=out)
    out = out.view(count, size, size, channels)
    empty = (hend <= hstart)[:, :, None] | (wend <= wstart)[:, None, :]
    out.masked_fill_(empty[..., None], 0)
    return out.permute(0, 3, 1, 2)
