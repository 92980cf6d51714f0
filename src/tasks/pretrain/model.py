"""The pre-training model is `lxrt.modeling.LXRTPretraining` as it is (every head, the
authors' losses); this module builds it and moves its weights in and out.

Checkpoints are written in the authors' key layout (`to_authors_layout`: the visual-[CLS]
table at full vocabulary size), so `--loadLXMERT snap/pretrain/NAME/BEST_EVAL_LOSS` works in
every fine-tuning launcher here and in the authors' code.
"""
from __future__ import annotations

import logging

from torch import nn

from lxrt.config import LXRTConfig
from lxrt.folder import is_model_folder
from lxrt.loading import (LoadReport, check_and_load, from_authors_layout, load_pretrained_encoder,
                          read_state_dict, resolve_pretrained_path, strip_module_prefixes,
                          to_authors_layout)
from lxrt.modeling import LXRTPretraining
from lxrt.pretrained import load_folder_into

log = logging.getLogger(__name__)


def build_pretraining_model(config: LXRTConfig, num_answers: int) -> LXRTPretraining:
    if config.num_qa_labels != num_answers:
        raise SystemExit(f"the model config has num_qa_labels {config.num_qa_labels} but the "
                         f"pre-training answer table has {num_answers} answers")
    return LXRTPretraining(config)


def load_full(model: LXRTPretraining, path) -> LoadReport:
    """`--init P`: every weight, heads included, from P_LXRT.pth / P or the model folder P
    (strict): the previous stage's LAST_LXRT.pth when stages chain."""
    if is_model_folder(path):
        return load_folder_into(model, path)
    file = resolve_pretrained_path(path)
    state = from_authors_layout(strip_module_prefixes(read_state_dict(file)), model.config)
    report = check_and_load(model, state, str(file))
    log.info("pre-training model: %s", report.summary())
    return report


def load_encoder(model: LXRTPretraining, path) -> LoadReport:
    """`--loadLXMERT P`: the encoder only; the heads keep their fresh initialisation."""
    return load_pretrained_encoder(model, path)


def authors_state_dict(model: nn.Module, config: LXRTConfig) -> dict:
    """The state dict as the authors' `*_LXRT.pth` files hold it (CPU tensors)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return to_authors_layout(state, config)
