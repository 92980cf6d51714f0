"""What every task's model setup shares: the model config from the flags, the weight flags in
the authors' order, and the text length.
"""
from __future__ import annotations

import dataclasses
import logging

from lxrt.config import LXRTConfig
from lxrt.loading import load_finetuned, load_pretrained_encoder
from lxrt.modeling import init_bert_weights
from tasks.common.run_record import vocab_record

log = logging.getLogger(__name__)

# every task cuts text at 20 tokens (docs/authors_code.md, "Word-level position ids")
MAX_SEQ_LENGTH = 20


def build_config(args) -> LXRTConfig:
    overrides = dict(l_layers=args.llayers, x_layers=args.xlayers, r_layers=args.rlayers)
    if args.model_config:
        return LXRTConfig.from_json_file(args.model_config, **overrides)
    return LXRTConfig(**overrides)


def model_run_info(task: str, config: LXRTConfig, tokenizer) -> dict:
    """The part of run_info.json's "task_info" every task records (tools.predict rebuilds the
    model and tokenizer from it)."""
    return {"task": task, "model_config": dataclasses.asdict(config),
            **vocab_record(tokenizer.vocab_file)}


def load_task_weights(args, model, config: LXRTConfig, load_head=None, labels=None) -> None:
    """The weight flags in the authors' order, for any task model holding `lxrt_encoder`:
    --fromScratch (re-initialise the encoder), --loadLXMERT (encoder), --loadLXMERTQA (encoder
    plus the task's pre-trained head through `load_head(model, path)`), --load (whole model;
    a model folder's labels must be `labels` when given).
    Each of them takes a file or a model folder (lxrt.folder).
    The authors' BERT-tarball start is not available offline: no flag means a random start."""
    if args.from_scratch:
        model.lxrt_encoder.apply(lambda m: init_bert_weights(m, config.initializer_range))
    if args.load_lxmert:
        load_pretrained_encoder(model.lxrt_encoder, args.load_lxmert)
    elif not args.load_lxmert_qa and not args.load:
        log.warning("no --loadLXMERT/--loadLXMERTQA/--load: the encoder starts from random "
                    "weights%s", "" if args.from_scratch else " (pass --fromScratch to say so)")
    if args.load_lxmert_qa:
        if load_head is None:
            raise SystemExit("--loadLXMERTQA: this task has no pre-trained head to transfer; "
                             "use --loadLXMERT")
        load_head(model, args.load_lxmert_qa)
    if args.load:
        load_finetuned(model, args.load, config, labels)
