"""LXMERT's region selection and the detector's input size, on hand-worked cases."""
from __future__ import annotations

import math

import pytest
import torch

from butd import DetectorConfig, DetectorOutput, select_regions
from butd.config import SELECTION_NMS_THRESHOLDS
from butd.preprocess import resized_size

# 3 classes (+ background), 2 attributes (+ "none"), 3 regions wanted
CONFIG = DetectorConfig(num_classes=3, num_attributes=2, num_regions=3)
BOXES = {"A": [0, 0, 10, 10], "B": [0, 0, 10, 12], "C": [0, 0, 10, 14], "D": [50, 50, 60, 60]}
# IoU(A, B) = 100/120 = 0.83, IoU(A, C) = 100/140 = 0.71, IoU(B, C) = 120/140 = 0.86


def output(proposals, logits, deltas=None, attributes=None, size=(100, 100)):
    proposals = torch.tensor(proposals, dtype=torch.float32)
    logits = torch.tensor(logits, dtype=torch.float32)
    count = len(proposals)
    if deltas is None:
        deltas = torch.zeros(count, CONFIG.num_classes * 4)
    return DetectorOutput(image_size=size, proposals=proposals,
                          proposal_logits=torch.zeros(count),
                          features=torch.arange(count, dtype=torch.float32)[:, None].repeat(1, 5),
                          class_logits=logits, box_deltas=deltas,
                          attribute_logits=None if attributes is None else torch.tensor(
                              attributes, dtype=torch.float32))


def scores(*values):
    """Class-0 logits giving the proposals decreasing probabilities."""
    return [[v, 0.0, 0.0, 0.0] for v in values]


def test_threshold_rises_until_enough_regions_survive():
    out = output([BOXES[k] for k in "ABCD"], scores(4, 3, 2, 1))
    regions = select_regions(out, (100, 100), CONFIG, backend="torch")
    # 0.3 ... 0.7 keep A and D only (B and C overlap A by 0.83 and 0.71); at 0.8 C survives
    assert regions.nms_threshold == SELECTION_NMS_THRESHOLDS[5] == pytest.approx(0.8)
    assert regions.proposal_index.tolist() == [0, 2, 3]
    assert regions.features[:, 0].tolist() == [0.0, 2.0, 3.0]   # the kept proposals' own rows
    assert regions.boxes.tolist() == [BOXES["A"], BOXES["C"], BOXES["D"]]


def test_fewer_proposals_than_regions_keeps_what_the_last_threshold_keeps():
    out = output([BOXES["A"], BOXES["D"]], scores(2, 1))
    regions = select_regions(out, (100, 100), CONFIG, backend="torch")
    assert len(regions) == 2 and regions.nms_threshold == SELECTION_NMS_THRESHOLDS[-1]
    duplicates = output([BOXES["A"], BOXES["A"], BOXES["D"], BOXES["D"]], scores(4, 3, 2, 1))
    # identical boxes overlap by 1.0 > 0.9: even the last threshold leaves two
    assert select_regions(duplicates, (100, 100), CONFIG,
                          backend="torch").proposal_index.tolist() == [0, 2]


def test_ties_go_to_the_earlier_proposal():
    shifted = [1, 0, 11, 10]                                 # IoU with A: 90/110 = 0.82
    tied = scores(1, 1, 1, 0)
    first = output([BOXES["A"], shifted, BOXES["D"], [80, 0, 90, 10]], tied)
    assert select_regions(first, (100, 100), CONFIG,
                          backend="torch").proposal_index.tolist() == [0, 2, 3]
    swapped = output([shifted, BOXES["A"], BOXES["D"], [80, 0, 90, 10]], tied)
    assert select_regions(swapped, (100, 100), CONFIG,
                          backend="torch").proposal_index.tolist() == [0, 2, 3]


def test_class_box_and_attribute_by_hand():
    # background (last column) has the largest logit but never wins; probabilities are the
    # softmax over all four columns
    logits = [[0.0, 1.0, 0.0, 5.0]]
    deltas = torch.zeros(1, 12)
    deltas[0, 4:8] = torch.tensor([10.0, 0.0, 0.0, 0.0])    # class 1: one width to the right
    attributes = [[1.0, 2.0, 100.0]]                        # "no attribute" (last) excluded
    out = output([[10, 20, 30, 60]], logits, deltas, attributes, size=(100, 40))
    regions = select_regions(out, (200, 20), CONFIG, backend="torch")
    assert regions.object_ids.tolist() == [1]
    total = 1 + math.e + 1 + math.exp(5)
    assert float(regions.object_conf) == pytest.approx(math.e / total, rel=1e-6)
    # box of class 1: x 30..50, clipped to the 40-wide input, then scaled to 20 x 200 pixels
    assert regions.boxes.tolist() == [[15.0, 40.0, 20.0, 120.0]]
    assert regions.attr_ids.tolist() == [1]
    assert float(regions.attr_conf) == pytest.approx(math.e ** 2 / (math.e + math.e ** 2))
    plain = output([[10, 20, 30, 60]], logits)
    no_attributes = select_regions(plain, (100, 40), CONFIG, backend="torch")
    assert no_attributes.attr_ids.tolist() == [0] and no_attributes.attr_conf.tolist() == [0.0]


@pytest.mark.parametrize("size,resized", [
    ((480, 640), (600, 800)),        # shortest side to 600
    ((300, 2000), (150, 1000)),      # longest side capped at 1000
    ((1000, 1000), (600, 600)),
    ((333, 500), (600, 901)),        # 900.9 rounds half up
    ((2000, 333), (1000, 167)),
])
def test_test_time_resize(size, resized):
    assert resized_size(*size, 600, 1000) == resized


def test_a_strip_too_thin_to_resize_is_refused():
    from butd.preprocess import prepare_image
    import numpy as np
    with pytest.raises(ValueError, match="1x5000"):
        prepare_image(np.zeros((5000, 1, 3), np.uint8), CONFIG)
