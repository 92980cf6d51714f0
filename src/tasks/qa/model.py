"""The VQA/GQA model: LXMERT-S pooled output -> the authors' answer head."""
from __future__ import annotations

from lxrt.config import LXRTConfig
from tasks.common.classifier import ClassifierModel


class QAModel(ClassifierModel):
    """`lxrt_encoder` + `logit_fc` (768 -> 1536 -> GeLU -> LN -> answers), the authors' names."""

    def __init__(self, config: LXRTConfig, num_answers: int):
        super().__init__(config, num_answers)


def model_from_run_info(config: LXRTConfig, task_info: dict) -> QAModel:
    """The model of a run from its run_info.json's task_info (for tools.predictor)."""
    return QAModel(config, int(task_info["num_answers"]))
