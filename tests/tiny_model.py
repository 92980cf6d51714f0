"""The tiny model configuration and inputs that model tests build on: every size small enough
to run in milliseconds on a CPU, with l/x/r layer counts and any other size overridable."""
from __future__ import annotations

import torch

from lxrt.config import LXRTConfig


def tiny_config(**overrides):
    values = dict(vocab_size=120, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                  visual_feat_dim=24, num_object_labels=7, num_attr_labels=5, topic_size=30,
                  num_qa_labels=11, max_position_embeddings=40)
    values.update(overrides)
    return LXRTConfig(**values)


def tiny_inputs(config, batch=3, length=9, regions=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(104, config.vocab_size, (batch, length), generator=g)
    ids[:, 0] = 101
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    ids = ids * mask
    pos = torch.arange(length).clamp(max=length - 1)[None].repeat(batch, 1) * mask + mask
    feats = torch.rand(batch, regions, config.visual_feat_dim, generator=g)
    x1 = torch.rand(batch, regions, 2, generator=g) * 0.5
    boxes = torch.cat([x1, x1 + 0.4], -1)
    return ids, pos, mask, feats, boxes
