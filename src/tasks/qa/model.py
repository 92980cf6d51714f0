"""The VQA/GQA model: LXMERT-S pooled output -> the authors' answer head."""
from __future__ import annotations

from lxrt.config import LXRTConfig
from tasks.common.classifier import ClassifierModel


class QAModel(ClassifierModel):
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
        super().__init__(config, num_answers)
        self.num_answers = num_answers

    def pretrained_args(self) -> dict:
        return {"num_answers": self.num_answers}


def model_from_run_info(config: LXRTConfig, task_info: dict) -> QAModel:
    """The model of a run from its run_info.json's task_info (for tools.predictor)."""
    return QAModel(config, int(task_info["num_answers"]))
