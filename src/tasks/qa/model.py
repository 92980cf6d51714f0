"""The VQA/GQA model: LXMERT-S pooled output -> the authors' answer head."""
from __future__ import annotations

from torch import nn

from lxrt.config import LXRTConfig
from lxrt.modeling import AnswerHead, LXRTEncoder, init_bert_weights


class QAModel(nn.Module):
    """`lxrt_encoder` + `logit_fc` (768 -> 1536 -> GeLU -> LN -> answers), the authors' names."""

    def __init__(self, config: LXRTConfig, num_answers: int):
        super().__init__()
        self.lxrt_encoder = LXRTEncoder(config)
        hid = self.lxrt_encoder.dim
        self.logit_fc = AnswerHead(hid, hid * 2, num_answers, config.layer_norm_eps)
        self.logit_fc.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, input_ids, token_position, input_mask, feats, boxes):
        return self.logit_fc(self.lxrt_encoder(input_ids, token_position, input_mask, feats, boxes))
