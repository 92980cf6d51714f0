"""Choosing the regions of one image the way LXMERT's `*_obj36.tsv` features were chosen.

1. class probabilities: softmax over all classes, the background column (last) dropped;
2. each proposal keeps its most probable class and that class's box (decoded from the
   proposal, clipped to the resized image);
3. NMS over those boxes by that probability at 0.3; while fewer than `num_regions` survive,
   again at 0.4, 0.5, ... 0.9; the best `num_regions` are kept (fewer only when even 0.9
   leaves fewer, e.g. an image with fewer proposals);
4. features are the kept proposals' own region features (not re-pooled on the refined boxes);
   boxes are scaled back to the original image and clipped to it;
5. attributes: softmax over the attribute logits without the last ("no attribute") column,
   the best one and its probability; a model without the attribute head gives id 0 and
   confidence 0, as LXMERT's COCO re-extraction wrote.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from butd.config import SELECTION_NMS_THRESHOLDS, DetectorConfig
from butd.modeling import DetectorOutput
from butd.ops import clip_boxes, decode_boxes, nms


@dataclass
class Regions:
    boxes: torch.Tensor            # [K, 4] x1, y1, x2, y2 in original image pixels
    features: torch.Tensor         # [K, D]
    object_ids: torch.Tensor       # [K] int64, index into the 1600 Visual Genome objects
    object_conf: torch.Tensor      # [K] float32
    attr_ids: torch.Tensor         # [K] int64, index into the 400 attributes
    attr_conf: torch.Tensor        # [K] float32
    proposal_index: torch.Tensor   # [K] the kept proposals (rows of DetectorOutput)
    nms_threshold: float           # the threshold the selection stopped at

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def best_class_boxes(output: DetectorOutput, config: DetectorConfig):
    """(probability, class, box on the resized image) of each proposal's most probable class."""
    probs = torch.softmax(output.class_logits.float(), dim=-1)[:, :-1]
    scores, classes = probs.max(dim=1)
    count = classes.shape[0]
    deltas = output.box_deltas.float().view(count, -1, 4)[
        torch.arange(count, device=classes.device), classes]
    boxes = decode_boxes(deltas, output.proposals.float(), config.box_weights)
    return scores, classes, clip_boxes(boxes, *output.image_size)


def escalating_nms(boxes: torch.Tensor, scores: torch.Tensor, wanted: int,
                   thresholds: Sequence[float] = SELECTION_NMS_THRESHOLDS,
                   backend: str = "auto") -> tuple[torch.Tensor, float]:
    """NMS at each threshold in turn until at least `wanted` boxes survive; the best `wanted`
    of that run (or of the last threshold's run when none reaches it), and the threshold."""
    keep, threshold = boxes.new_zeros(0, dtype=torch.long), float(thresholds[-1])
    for threshold in thresholds:
        keep = nms(boxes, scores, threshold, max_keep=wanted, backend=backend)
        if len(keep) >= wanted:
            break
    return keep, float(threshold)


def scale_to_original(boxes: torch.Tensor, resized: tuple, original: tuple) -> torch.Tensor:
    """Boxes on the resized input -> original pixels (float32 scale factors), clipped."""
    (height, width), (orig_h, orig_w) = resized, original
    sizes = torch.tensor([orig_w, orig_h], dtype=torch.float32) / torch.tensor(
        [width, height], dtype=torch.float32)
    scale = sizes.repeat(2).to(boxes.device)
    return clip_boxes(boxes * scale, orig_h, orig_w)


def select_regions(output: DetectorOutput, original_size: tuple, config: DetectorConfig,
                   backend: str = "auto") -> Regions:
    scores, classes, boxes = best_class_boxes(output, config)
    keep, threshold = escalating_nms(boxes, scores, config.num_regions, backend=backend)
    if output.attribute_logits is not None:
        attr_probs = torch.softmax(output.attribute_logits[keep].float()[:, :-1], dim=-1)
        attr_conf, attr_ids = attr_probs.max(dim=1)
    else:
        attr_conf = scores.new_zeros(len(keep))
        attr_ids = torch.zeros(len(keep), dtype=torch.long, device=scores.device)
    return Regions(boxes=scale_to_original(boxes[keep], output.image_size, original_size),
                   features=output.features[keep], object_ids=classes[keep],
                   object_conf=scores[keep], attr_ids=attr_ids, attr_conf=attr_conf,
                   proposal_index=keep, nms_threshold=threshold)
