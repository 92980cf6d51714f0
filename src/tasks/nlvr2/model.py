"""The NLVR2 model: one sentence, two images -> true/false (docs/authors_code.md, "NLVR2"; the
authors' nlvr2_model.py): the generic classifier over the two pooled vectors,
[pooled(sentence, img0) ; pooled(sentence, img1)] -> `logit_fc` (2H -> 2H -> GeLU -> LN -> 2).
"""
from __future__ import annotations

from lxrt.config import LXRTConfig
from tasks.common.classifier import ClassifierModel

NUM_CLASSES = 2


class NLVR2Model(ClassifierModel):
    """`lxrt_encoder` + `logit_fc`, the authors' names; class 1 = the statement is true."""
    default_labels = ("false", "true")
    intended_use = ("Says whether a statement is true of a pair of images (NLVR2): "
                    "`python -m tools.predict --load FOLDER --statement ... --image A --image B`.")
    limitations = ("Two images exactly, in order (left, right); statements are cut at 20 "
                   "word pieces. Images must be described by the extractor its training "
                   "features came from.")

    def __init__(self, config: LXRTConfig):
        super().__init__(config, NUM_CLASSES, num_images=2)

    def pretrained_args(self) -> dict:
        return {}
