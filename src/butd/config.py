"""Configuration of the bottom-up-attention Visual Genome Faster R-CNN (ResNet-101 C4).

The defaults are the model LXMERT's region features come from: the Caffe model of Anderson et
al. as released for PyTorch (`faster_rcnn_from_caffe_attr.pkl`, `unc-nlp/frcnn-vg-finetuned`)
with the test settings of LXMERT's extraction (shortest side 600, longest at most 1000, 6000
pre-NMS / 0.7 / 300 post-NMS proposals, 36 regions). Smaller widths exist for tests only.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

# Box deltas are clamped so that no width/height grows more than from a 16 px box to 1000 px.
SCALE_CLAMP = math.log(1000.0 / 16)
# LXMERT's region selection: NMS at 0.3, then 0.4, ... 0.9 until enough regions survive.
# np.arange's own float64 values (0.6000000000000001, ...) are the thresholds it used.
SELECTION_NMS_THRESHOLDS = tuple(float(t) for t in np.arange(0.3, 1.0, 0.1))


@dataclass(frozen=True)
class DetectorConfig:
    # ---- backbone: Caffe MSRA ResNet (stride in the 1x1 conv), FrozenBN everywhere ---------
    stage_blocks: tuple = (3, 4, 23)      # bottleneck blocks of res2, res3, res4 (ResNet-101)
    res5_blocks: int = 3                  # res5 runs per region in the box head
    stem_channels: int = 64
    res2_channels: int = 256              # output channels of res2; doubled by each stage
    res2_bottleneck: int = 64             # inner width of res2's blocks; doubled by each stage
    bn_eps: float = 1e-5
    # ---- region proposal network on res4 (stride 16) --------------------------------------
    rpn_channels: int = 512               # the VG model's hidden width (not res4's 1024)
    anchor_sizes: tuple = (64, 128, 256, 512)
    anchor_ratios: tuple = (0.5, 1.0, 2.0)
    feature_stride: int = 16
    pre_nms_topk: int = 6000
    rpn_nms_threshold: float = 0.7
    post_nms_topk: int = 300
    # ---- box head: RoIPool -> dilated res5 -> mean -> classes, boxes, attributes -----------
    pool_size: int = 14
    num_classes: int = 1600               # + 1 background column, last
    num_attributes: int = 400             # + 1 "no attribute" column, last; 0 = no head
    box_weights: tuple = (10.0, 10.0, 5.0, 5.0)
    # ---- input: BGR, mean subtracted, std 1, no division by 255 --------------------------
    pixel_mean: tuple = (102.9801, 115.9465, 122.7717)
    min_size: int = 600
    max_size: int = 1000
    # ---- LXMERT's region selection --------------------------------------------------------
    num_regions: int = 36

    def __post_init__(self):
        for name in ("stem_channels", "res2_channels", "res2_bottleneck", "rpn_channels",
                     "pool_size", "num_classes", "min_size", "max_size", "num_regions",
                     "pre_nms_topk", "post_nms_topk", "res5_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"DetectorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_attributes < 0:
            raise ValueError(f"DetectorConfig.num_attributes must be >= 0 (0: no attribute "
                             f"head), got {self.num_attributes}")
        if len(self.stage_blocks) != 3 or min(self.stage_blocks) < 1:
            raise ValueError(f"DetectorConfig.stage_blocks: three positive block counts "
                             f"(res2, res3, res4), got {self.stage_blocks}")
        if self.min_size > self.max_size:
            raise ValueError(f"DetectorConfig: min_size {self.min_size} > max_size "
                             f"{self.max_size}")

    @property
    def res4_channels(self) -> int:
        return self.res2_channels * 4

    @property
    def res5_channels(self) -> int:
        """The width of a region feature (2048 for the VG model)."""
        return self.res2_channels * 8

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_ratios)

    @property
    def has_attributes(self) -> bool:
        return self.num_attributes > 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> "DetectorConfig":
        try:
            values = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{source}: detector config is not valid JSON ({err})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{source}: detector config must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown detector config keys {unknown}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**kwargs)


VG_CONFIG = DetectorConfig()
