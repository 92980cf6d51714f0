"""The VQA/GQA model: LXMERT-S pooled output -> the authors' answer head."""
from __future__ import annotations

from torch import nn

from lxrt.config import LXRTConfig
from lxrt.modeling import AnswerHead, LXRTEncoder, init_bert_weights
from lxrt.pretrained import PretrainedModel


class QAModel(nn.Module, PretrainedModel):
    """`lxrt_encoder` + `logit_fc` (768 -> 1536 -> GeLU -> LN -> answers), the authors' names."""
    intended_use = ("Answers a question about one image by scoring every answer of its answer "
                    "table (a sigmoid score per answer, as trained): "
                    "`python -m tools.predict --load FOLDER --image photo.png --question ...` "
                    "or `python -m tools.demo --load FOLDER`.")
    limitations = ("It can only choose an answer from its table (`labels` in config.json); "
                   "questions are cut at 20 word pieces. Images must be described by the "
                   "extractor its training features came from (the folder's extractor record "
                   "when it has one; detector features need the detector's weights). It "
                   "inherits the biases of its training questions.")

    def __init__(self, config: LXRTConfig, num_answers: int):
        super().__init__()
        self.num_answers = num_answers
        self.lxrt_encoder = LXRTEncoder(config)
        hid = self.lxrt_encoder.dim
        self.logit_fc = AnswerHead(hid, hid * 2, num_answers, config.layer_norm_eps)
        self.logit_fc.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def pretrained_args(self) -> dict:
        return {"num_answers": self.num_answers}

    @property
    def num_labels(self) -> int:
        return self.num_answers

    def forward(self, input_ids, token_position, input_mask, feats, boxes):
        return self.logit_fc(self.lxrt_encoder(input_ids, token_position, input_mask, feats, boxes))
