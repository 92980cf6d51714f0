"""The NLVR2 model: one sentence, two images -> true/false (docs/authors_code.md, "NLVR2"; the
authors' nlvr2_model.py).

The encoder runs once on a batch of 2B (sentence, image) pairs ordered like the authors'
`feats.view(2B, ...)`: rows (ex0 img0, ex0 img1, ex1 img0, ex1 img1, ...), the sentence
duplicated to match. The two pooled vectors of an example are concatenated,
[pooled(img0) ; pooled(img1)], and `logit_fc` (2H -> 2H -> GeLU -> LN -> 2) scores the pair.
"""
from __future__ import annotations

import torch
from torch import nn

from lxrt.config import LXRTConfig
from lxrt.modeling import AnswerHead, LXRTEncoder, init_bert_weights
from lxrt.pretrained import PretrainedModel

NUM_CLASSES = 2


class NLVR2Model(nn.Module, PretrainedModel):
    """`lxrt_encoder` + `logit_fc`, the authors' names (state-dict keys
    `lxrt_encoder.model.bert.*`, `logit_fc.{0,2,3}.*`)."""
    default_labels = ("false", "true")
    num_labels = NUM_CLASSES
    intended_use = ("Says whether a statement is true of a pair of images (NLVR2): "
                    "`python -m tools.predict --load FOLDER --statement ... --image A --image B`.")
    limitations = ("Two images exactly, in order (left, right); statements are cut at 20 "
                   "word pieces. Images must be described by the extractor its training "
                   "features came from.")

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.lxrt_encoder = LXRTEncoder(config)
        # the authors hard-code 768 here (docs/authors_code.md, "Layer layout"); the hidden
        # size is what they meant
        hid = self.lxrt_encoder.dim
        self.logit_fc = AnswerHead(hid * 2, hid * 2, NUM_CLASSES, config.layer_norm_eps)
        self.logit_fc.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def pair_pooled(self, input_ids, token_position, input_mask, feats, boxes) -> torch.Tensor:
        """[B, L] text, [B, 2, O, D] feats, [B, 2, O, 4] boxes -> [B, 2H] =
        [pooled(sentence, img0) ; pooled(sentence, img1)]."""
        if feats.dim() != 4 or feats.shape[1] != 2:
            raise ValueError(f"NLVR2 feats must be [B, 2, O, D], got {list(feats.shape)}")
        b, _, o, d = feats.shape
        # (ex0, ex0, ex1, ex1, ...): the authors' `sum(zip(sent, sent), ())`
        ids, pos, mask = (t.repeat_interleave(2, dim=0)
                          for t in (input_ids, token_position, input_mask))
        pooled = self.lxrt_encoder(ids, pos, mask, feats.reshape(2 * b, o, d),
                                   boxes.reshape(2 * b, o, boxes.shape[-1]))
        return pooled.reshape(b, 2 * pooled.shape[-1])

    def forward(self, input_ids, token_position, input_mask, feats, boxes) -> torch.Tensor:
        """-> logits [B, 2]; class 1 = the statement is true."""
        return self.logit_fc(self.pair_pooled(input_ids, token_position, input_mask, feats, boxes))
