"""The generic task head: LXMERT-S pooled output(s) -> the authors' `logit_fc` -> class logits.

VQA/GQA (one image, an answer table of classes), NLVR2 (two images, true/false) and any new
classification task use it. With N images per example the encoder runs once on a batch of N*B
(sentence, image) pairs ordered like the authors' NLVR2 `feats.view(2B, ...)`: (ex0 img0,
ex0 img1, ex1 img0, ...), the sentence repeated to match; the N pooled vectors of an example
are concatenated, [pooled(img0) ; pooled(img1) ; ...], before the head.
"""
from __future__ import annotations

import torch
from torch import nn

from lxrt.config import LXRTConfig
from lxrt.modeling import AnswerHead, LXRTEncoder, init_bert_weights
from lxrt.pretrained import PretrainedModel


class ClassifierModel(nn.Module, PretrainedModel):
    """`lxrt_encoder` + `logit_fc` (N*H -> 2H -> GeLU -> LN -> classes), the authors' names
    (state-dict keys `lxrt_encoder.model.bert.*`, `logit_fc.{0,2,3}.*`)."""
    intended_use = ("Classifies a statement about an image (or about N images): `python -m "
                    "tools.predict --load FOLDER --statement ... --image A`.")
    limitations = ("It can only choose one of its classes (`labels` in config.json); "
                   "statements are cut at 20 word pieces. Images must be described by the "
                   "extractor its training features came from.")

    def __init__(self, config: LXRTConfig, num_classes: int, num_images: int = 1):
        super().__init__()
        self.num_classes, self.num_images = num_classes, num_images
        self.lxrt_encoder = LXRTEncoder(config)
        # the authors hard-code 768 for NLVR2 (docs/authors_code.md, "Layer layout"); the
        # hidden size is what they meant
        hid = self.lxrt_encoder.dim
        self.logit_fc = AnswerHead(hid * num_images, hid * 2, num_classes, config.layer_norm_eps)
        self.logit_fc.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def pretrained_args(self) -> dict:
        return {"num_classes": self.num_classes, "num_images": self.num_images}

    @property
    def num_labels(self) -> int:
        return self.num_classes

    def pooled(self, input_ids, token_position, input_mask, feats, boxes) -> torch.Tensor:
        """[B, L] text, feats [B, O, D] (one image) or [B, N, O, D] -> [B, N*H]."""
        n = self.num_images
        if n == 1:
            return self.lxrt_encoder(input_ids, token_position, input_mask, feats, boxes)
        if feats.dim() != 4 or feats.shape[1] != n:
            raise ValueError(f"feats must be [B, {n}, O, D] for {n} images per example, got "
                             f"{list(feats.shape)}")
        b, _, o, d = feats.shape
        # (ex0, ex0, ex1, ex1, ...): the authors' `sum(zip(sent, sent), ())`
        ids, pos, mask = (t.repeat_interleave(n, dim=0)
                          for t in (input_ids, token_position, input_mask))
        pooled = self.lxrt_encoder(ids, pos, mask, feats.reshape(n * b, o, d),
                                   boxes.reshape(n * b, o, boxes.shape[-1]))
        return pooled.reshape(b, n * pooled.shape[-1])

    def forward(self, input_ids, token_position, input_mask, feats, boxes) -> torch.Tensor:
        """-> logits [B, classes]."""
        return self.logit_fc(self.pooled(input_ids, token_position, input_mask, feats, boxes))


def classifier_from_run_info(config: LXRTConfig, task_info: dict) -> ClassifierModel:
    """The model of a `ClassifierTask` run from its run_info.json's task_info (class names,
    images per example) or a model folder's (`num_classes`, `num_images`), for
    tools.predictor."""
    classes = task_info.get("num_classes") or len(task_info["class_names"])
    return ClassifierModel(config, int(classes), int(task_info.get("num_images", 1)))
