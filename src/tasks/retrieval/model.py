"""The retrieval model: LXMERT-S pooled output -> 2-way match logits (index 1 = match)."""
from __future__ import annotations

from torch import nn

from lxrt.config import LXRTConfig
from lxrt.modeling import LXRTEncoder
from lxrt.pretrained import PretrainedModel


class RetrievalModel(nn.Module, PretrainedModel):
    """`lxrt_encoder` + `seq_relationship_new` (Linear(768, 2)), the authors' names.

    Returns raw logits; the score function (softmax[:, 1] or raw logit[:, 1]) is chosen by the
    evaluator. Without --loadLXMERTQA the head keeps PyTorch's default Linear init, as the
    authors' (only the encoder gets init_bert_weights)."""
    default_labels = ("no match", "match")
    num_labels = 2
    intended_use = ("Scores how well a caption matches an image; ranks the images of a "
                    "feature file for a caption: `python -m tools.predict --load FOLDER "
                    "--caption ... --features FILE`.")
    limitations = ("It scores pairs one by one (no separate image or text embeddings), so "
                   "ranking N images costs N forward passes. Captions are cut at 20 word "
                   "pieces; image features must come from the extractor of its training "
                   "features.")

    def __init__(self, config: LXRTConfig):
        super().__init__()
        self.lxrt_encoder = LXRTEncoder(config)
        self.seq_relationship_new = nn.Linear(self.lxrt_encoder.dim, 2)

    def forward(self, input_ids, token_position, input_mask, feats, boxes):
        return self.seq_relationship_new(
            self.lxrt_encoder(input_ids, token_position, input_mask, feats, boxes))
