"""The bottom-up-attention Visual Genome Faster R-CNN (ResNet-101 C4) in plain PyTorch.

    image [1, 3, H, W] (BGR, mean subtracted)
      -> backbone: stem (7x7 conv, Caffe max-pool) + res2..res4   -> res4 [1, 1024, H/16, W/16]
      -> proposal_generator: 3x3 conv (512) + objectness / anchor deltas -> 300 proposals
      -> roi_heads: RoIPool 14x14 at 1/16 -> res5 (stride 1, dilation 2) -> mean -> [300, 2048]
         box_predictor: classes (1600 + background), class-specific boxes, attributes (400 + 1)

Module and parameter names are those of the released checkpoints (detectron2's, which Hugging
Face's port kept), so a state dict loads without renaming: `backbone.res4.22.conv3.norm.weight`,
`proposal_generator.rpn_head.conv.weight`, `roi_heads.box_predictor.cls_score.weight`, ...
Inference only; no `.cuda()`: the caller moves the model and the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from butd.config import DetectorConfig
from butd.ops import clip_boxes, decode_boxes, nms, roi_pool

RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


@dataclass
class DetectorOutput:
    """Everything one image's forward pass produces, per proposal (P <= post_nms_topk)."""
    image_size: tuple                    # (height, width) of the resized input
    proposals: torch.Tensor              # [P, 4] RPN boxes on the resized input, best first
    proposal_logits: torch.Tensor        # [P] their objectness logits
    features: torch.Tensor               # [P, res5_channels] mean-pooled res5: region features
    class_logits: torch.Tensor           # [P, num_classes + 1], background last
    box_deltas: torch.Tensor             # [P, num_classes * 4], class-specific
    attribute_logits: Optional[torch.Tensor] = None   # [P, num_attributes + 1], "none" last


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms (buffers, as in the checkpoints).
    Files without running statistics leave mean 0 and variance 1 (weights loading says so)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class ConvNorm(nn.Conv2d):
    """Bias-free convolution followed by its FrozenBN (checkpoint names: `conv1.weight`,
    `conv1.norm.weight`, ...)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, eps: float = 1e-5):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, bias=False)
        self.norm = FrozenBatchNorm2d(out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block, the stride in the first 1x1 (Caffe MSRA ResNet)."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck: int, stride: int = 1,
                 dilation: int = 1, eps: float = 1e-5):
        super().__init__()
        self.shortcut = (ConvNorm(in_channels, out_channels, 1, stride=stride, eps=eps)
                         if in_channels != out_channels else None)
        self.conv1 = ConvNorm(in_channels, bottleneck, 1, stride=stride, eps=eps)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, padding=dilation, dilation=dilation,
                              eps=eps)
        self.conv3 = ConvNorm(bottleneck, out_channels, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out)


def make_stage(blocks: int, in_channels: int, out_channels: int, bottleneck: int,
               first_stride: int, dilation: int, eps: float) -> nn.Sequential:
    layers = []
    for i in range(blocks):
        layers.append(Bottleneck(in_channels, out_channels, bottleneck,
                                 first_stride if i == 0 else 1, dilation, eps))
        in_channels = out_channels
    return nn.Sequential(*layers)


class Stem(nn.Module):
    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.conv1 = ConvNorm(3, config.stem_channels, 7, stride=2, padding=3, eps=config.bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        # Caffe's pooling: no padding, output size rounded up (detectron2's default pads 1)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


class Backbone(nn.Module):
    """stem + res2, res3, res4 -> [N, res4_channels, ~H/16, ~W/16]."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.stem = Stem(config)
        in_channels, out_channels = config.stem_channels, config.res2_channels
        bottleneck = config.res2_bottleneck
        for index, blocks in enumerate(config.stage_blocks):
            stage = make_stage(blocks, in_channels, out_channels, bottleneck,
                               first_stride=1 if index == 0 else 2, dilation=1,
                               eps=config.bn_eps)
            self.add_module(f"res{index + 2}", stage)
            in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))


def cell_anchors(sizes, ratios) -> torch.Tensor:
    """[len(sizes) * len(ratios), 4] anchors centred on 0, size-major: area size**2 and
    height / width = ratio."""
    anchors = []
    for size in sizes:
        for ratio in ratios:
            w = math.sqrt(size ** 2.0 / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(cells: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """Anchors of every feature-map position, [height * width * A, 4], position-major."""
    device = cells.device
    shift_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
    shift_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + cells.view(1, -1, 4)).reshape(-1, 4)


class RPNHead(nn.Module):
    def __init__(self, config: DetectorConfig):
        super().__init__()
        anchors = config.num_anchors
        self.conv = nn.Conv2d(config.res4_channels, config.rpn_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(config.rpn_channels, anchors, 1)
        self.anchor_deltas = nn.Conv2d(config.rpn_channels, anchors * 4, 1)

    def forward(self, x: torch.Tensor):
        hidden = F.relu(self.conv(x))
        return self.objectness_logits(hidden), self.anchor_deltas(hidden)


class ProposalGenerator(nn.Module):
    """Region proposal network: the top `pre_nms_topk` anchors by objectness, decoded, clipped,
    non-empty, NMS at `rpn_nms_threshold`, the best `post_nms_topk` kept."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        self.rpn_head = RPNHead(config)
        # the checkpoints store these as `anchor_generator.cell_anchors.0`; loading checks them
        self.register_buffer("cell_anchors", cell_anchors(config.anchor_sizes,
                                                          config.anchor_ratios),
                             persistent=False)

    def forward(self, features: torch.Tensor, image_size: tuple, backend: str = "auto"):
        c = self.config
        logits, deltas = self.rpn_head(features)
        _, anchors_per_cell, height, width = logits.shape
        logits = logits[0].permute(1, 2, 0).reshape(-1)                       # (h, w, a)
        deltas = deltas[0].view(anchors_per_cell, 4, height, width).permute(2, 3, 0, 1)
        anchors = grid_anchors(self.cell_anchors, height, width, c.feature_stride)
        count = min(c.pre_nms_topk, logits.numel())
        top = torch.sort(logits, descending=True, stable=True).indices[:count]
        boxes = decode_boxes(deltas.reshape(-1, 4)[top], anchors[top], RPN_BOX_WEIGHTS)
        boxes = clip_boxes(boxes, *image_size)
        scores = logits[top]
        nonempty = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        boxes, scores = boxes[nonempty], scores[nonempty]
        keep = nms(boxes, scores, c.rpn_nms_threshold, max_keep=c.post_nms_topk,
                   backend=backend)
        return boxes[keep], scores[keep]


class BoxPredictor(nn.Module):
    """Per region: class logits, class-specific box deltas and, for the attribute model, the
    attribute logits of the region given its most likely class (background included)."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        width = config.res5_channels
        self.cls_score = nn.Linear(width, config.num_classes + 1)
        self.bbox_pred = nn.Linear(width, config.num_classes * 4)
        self.has_attributes = config.has_attributes
        if self.has_attributes:
            self.cls_embedding = nn.Embedding(config.num_classes + 1, width // 8)
            self.fc_attr = nn.Linear(width + width // 8, width // 4)
            self.attr_score = nn.Linear(width // 4, config.num_attributes + 1)

    def forward(self, features: torch.Tensor):
        scores = self.cls_score(features)
        deltas = self.bbox_pred(features)
        if not self.has_attributes:
            return scores, deltas, None
        embedded = self.cls_embedding(scores.argmax(-1))
        hidden = F.relu(self.fc_attr(torch.cat([features, embedded], dim=-1)))
        return scores, deltas, self.attr_score(hidden)


class RoIHeads(nn.Module):
    """RoIPool -> res5 -> spatial mean (the region feature) -> box predictor."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        # res5 at stride 1 with dilation 2 in every 3x3 conv: the VG model's box head
        self.res5 = make_stage(config.res5_blocks, config.res4_channels, config.res5_channels,
                               config.res2_bottleneck * 8, first_stride=1, dilation=2,
                               eps=config.bn_eps)
        self.box_predictor = BoxPredictor(config)

    def region_features(self, features: torch.Tensor, boxes: torch.Tensor, chunk: int = 64,
                        backend: str = "auto",
                        memory_format=torch.channels_last) -> torch.Tensor:
        """[R, res5_channels] features of boxes [R, 4] (input pixels) on features [1, C, h, w],
        `chunk` regions at a time (the res5 activations of 300 regions are large)."""
        c = self.config
        out = []
        for start in range(0, boxes.shape[0], chunk):
            pooled = roi_pool(features[0], boxes[start:start + chunk], c.pool_size,
                              1.0 / c.feature_stride, backend=backend)
            pooled = pooled.contiguous(memory_format=memory_format)
            out.append(self.res5(pooled).mean(dim=(2, 3)))
        if not out:
            return features.new_zeros(0, c.res5_channels)
        return torch.cat(out)


class BUTDDetector(nn.Module):
    """The detector; `forward` takes one preprocessed image (butd.preprocess) at a time, the
    reference way (padding images to a common size changes features near the borders)."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), ops_backend: str = "auto",
                 region_chunk: int = 64, channels_last: bool = True):
        super().__init__()
        self.config = config
        self.ops_backend = ops_backend
        # res5's activations for 300 regions take about 1.5 GB at once; 64 at a time, a fifth
        self.region_chunk = region_chunk
        self.backbone = Backbone(config)
        self.proposal_generator = ProposalGenerator(config)
        self.roi_heads = RoIHeads(config)
        # convolutions in NHWC run faster on CPUs (oneDNN) and GPUs; loading keeps the layout
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> DetectorOutput:
        if image.ndim == 3:
            image = image[None]
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"BUTDDetector takes one image [3, H, W] or [1, 3, H, W], got "
                             f"{tuple(image.shape)}")
        image_size = (int(image.shape[2]), int(image.shape[3]))
        features = self.backbone(image.contiguous(memory_format=self.memory_format))
        proposals, logits = self.proposal_generator(features, image_size, self.ops_backend)
        pooled = self.roi_heads.region_features(features, proposals, self.region_chunk,
                                                self.ops_backend, self.memory_format)
        scores, deltas, attributes = self.roi_heads.box_predictor(pooled)
        return DetectorOutput(image_size=image_size, proposals=proposals, proposal_logits=logits,
                              features=pooled, class_logits=scores, box_deltas=deltas,
                              attribute_logits=attributes)
