"""butd.ops against loop implementations written from torchvision's documented rules (and
against torchvision itself where its compiled operators load), plus the box arithmetic."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from butd.config import SCALE_CLAMP
from butd.ops import (box_iou, clip_boxes, decode_boxes, nms, roi_pool,
                      torchvision_ops)

F32 = np.float32


def loop_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list:
    """Greedy NMS one box at a time: highest score first (stable), a box is dropped when its
    float32 IoU with a kept box is above the threshold."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = []
    for i in order:
        x1, y1, x2, y2 = (F32(v) for v in boxes[i])
        area_i = (x2 - x1) * (y2 - y1)
        dropped = False
        for j in kept:
            a1, b1, a2, b2 = (F32(v) for v in boxes[j])
            w = max(F32(0), min(x2, a2) - max(x1, a1))
            h = max(F32(0), min(y2, b2) - max(y1, b1))
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = inter / ((a2 - a1) * (b2 - b1) + area_i - inter)
            if float(iou) > threshold:
                dropped = True
                break
        if not dropped:
            kept.append(i)
    return kept


def c_round(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else int(math.ceil(x - 0.5))


def loop_roi_pool(features: np.ndarray, boxes: np.ndarray, size: int, scale: float):
    """RoIPool one bin at a time: corners rounded to cells, the RoI at least one cell, bin p
    covering [floor(p * s), ceil((p + 1) * s)) (s in float32), clipped; empty bins are 0."""
    channels, height, width = features.shape
    out = np.zeros((len(boxes), channels, size, size), np.float32)
    for r, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
        sw, sh, ew, eh = (c_round(v * scale) for v in (x1, y1, x2, y2))
        bin_w = F32(max(ew - sw + 1, 1)) / F32(size)
        bin_h = F32(max(eh - sh + 1, 1)) / F32(size)
        for ph in range(size):
            h0 = min(max(int(math.floor(F32(ph) * bin_h)) + sh, 0), height)
            h1 = min(max(int(math.ceil(F32(ph + 1) * bin_h)) + sh, 0), height)
            for pw in range(size):
                w0 = min(max(int(math.floor(F32(pw) * bin_w)) + sw, 0), width)
                w1 = min(max(int(math.ceil(F32(pw + 1) * bin_w)) + sw, 0), width)
                if h1 > h0 and w1 > w0:
                    out[r, :, ph, pw] = features[:, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def random_boxes(rng: np.random.RandomState, count: int, extent: float, integer: bool):
    corner = rng.uniform(-0.1 * extent, extent, (count, 2))
    size = rng.uniform(0, extent / 2, (count, 2))
    boxes = np.concatenate([corner, corner + size], 1)
    return np.round(boxes) if integer else boxes


@pytest.mark.parametrize("trial", range(6))
def test_nms_matches_the_loop_rule(trial):
    rng = np.random.RandomState(trial)
    count = [1, 7, 60, 150, 150, 250][trial]
    boxes = random_boxes(rng, count, 100, integer=trial % 2 == 0).astype(np.float32)
    scores = rng.uniform(size=count).astype(np.float32)
    if trial >= 3:                       # ties in score, and repeated boxes
        scores = np.round(scores * 4) / 4
        boxes[::5] = boxes[0]
    for threshold in (0.3, 0.5, 0.6000000000000001, 0.9):
        got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold,
                  backend="torch", block=16).tolist()
        assert got == loop_nms(boxes, scores, threshold)
        capped = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold,
                     max_keep=5, backend="torch").tolist()
        assert capped == got[:5]


def test_nms_keeps_empty_boxes_and_handles_no_boxes():
    boxes = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]])
    # zero-area boxes have IoU 0/0 = NaN with each other: never above the threshold
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5, backend="torch").tolist() == [0, 1, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("trial", range(4))
def test_roi_pool_matches_the_loop_rule(trial):
    rng = np.random.RandomState(100 + trial)
    channels, height, width = 3, [5, 9, 13, 1][trial], [7, 4, 13, 6][trial]
    features = rng.standard_normal((channels, height, width)).astype(np.float32)
    boxes = random_boxes(rng, 40, 16 * max(height, width), integer=False)
    boxes[:10] = np.round(boxes[:10] * 2) / 2 * 8          # corners on half cells: rounding
    boxes[10] = [-200, -200, -100, -100]                   # off the map: empty bins
    boxes = boxes.astype(np.float32)
    for size in (14, 3):
        got = roi_pool(torch.from_numpy(features), torch.from_numpy(boxes), size, 1 / 16,
                       backend="torch")
        np.testing.assert_array_equal(got.numpy(), loop_roi_pool(features, boxes, size, 1 / 16))


@pytest.mark.skipif(torchvision_ops() is None,
                    reason="torchvision's compiled operators do not load here")
def test_plain_torch_ops_agree_with_torchvision():
    ops = torchvision_ops()
    rng = np.random.RandomState(5)
    boxes = torch.from_numpy(random_boxes(rng, 300, 200, integer=False).astype(np.float32))
    scores = torch.from_numpy(rng.uniform(size=300).astype(np.float32))
    for threshold in (0.3, 0.7):
        assert torch.equal(nms(boxes, scores, threshold, backend="torch"),
                           ops.nms(boxes, scores, threshold))
    features = torch.randn(8, 20, 30, generator=torch.Generator().manual_seed(0))
    rois = torch.cat([torch.zeros(300, 1), boxes * 2], 1)
    assert torch.equal(roi_pool(features, boxes * 2, 14, 1 / 16, backend="torch"),
                       ops.roi_pool(features[None], rois, (14, 14), 1 / 16))


def test_box_arithmetic_by_hand():
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])                  # w 20, h 40, centre 20, 40
    weights = (10.0, 10.0, 5.0, 5.0)
    same = decode_boxes(torch.zeros(1, 8), box, weights)
    torch.testing.assert_close(same, box.repeat(1, 2))
    # dx = 0.5 widths (x10), dh = log 2 (x5): centre x 30, height 80
    moved = decode_boxes(torch.tensor([[5.0, 0.0, 0.0, 5 * math.log(2)]]), box, weights)
    torch.testing.assert_close(moved, torch.tensor([[20.0, 0.0, 40.0, 80.0]]))
    # huge size deltas are clamped at log(1000 / 16)
    big = decode_boxes(torch.tensor([[0.0, 0.0, 1e4, 0.0]]), box, (1.0, 1.0, 1.0, 1.0))
    assert float(big[0, 2] - big[0, 0]) == pytest.approx(20 * math.exp(SCALE_CLAMP), rel=1e-5)
    clipped = clip_boxes(torch.tensor([[-5.0, -1.0, 50.0, 70.0]]), 60, 40)
    assert clipped.tolist() == [[0.0, 0.0, 40.0, 60.0]]
    iou = box_iou(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 0, 15, 10]]))
    assert float(iou) == pytest.approx(50 / 150)


def test_caffe_max_pool_rounds_up_without_padding():
    from butd.modeling import Stem
    from detector_helpers import TINY_CONFIG
    stem = Stem(TINY_CONFIG).eval()
    seen = set()
    for size in (21, 22, 23, 24, 25, 26):
        conv = (size + 2 * 3 - 7) // 2 + 1                     # the 7x7 stride-2 conv
        caffe = math.ceil((conv - 3) / 2) + 1
        assert stem(torch.zeros(1, 3, size, size)).shape[2] == caffe
        seen.add((caffe == (conv - 1) // 2 + 1, caffe == (conv - 3) // 2 + 1))
    # on odd maps it differs from detectron2's default (padding 1), on even from no rounding
    assert seen == {(False, True), (True, False)}
