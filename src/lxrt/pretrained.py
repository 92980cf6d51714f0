"""`save_pretrained(dir)` / `from_pretrained(dir)`: a model as a folder that describes itself.

    model.save_pretrained("out/vqa", vocab_file=tokenizer.vocab_file, task="vqa",
                          labels=answers.label2ans)
    model = QAModel.from_pretrained("out/vqa")       # the same outputs, bit for bit

The calling conventions are Hugging Face's; the format is this project's own (lxrt.folder):
`transformers.LxmertModel` cannot hold LXMERT-S (word-level positions, the visual [CLS], the
product of two poolers), so a folder of ours must never pass for one of theirs.

A model class takes part by deriving from `PretrainedModel`. What is particular to it comes
from the class itself, never from a list of tasks here: `pretrained_args()` (constructor
arguments besides the config), `num_labels` and `default_labels` (what its outputs mean), and
`intended_use` / `limitations` (its model card's text).

Loading is strict: the folder's class, sizes, constructor arguments and labels must be the
model's, every tensor must be there with its shape, and no other tensor may be.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from lxrt.folder import (AUTHORS_UNUSED_NAME, CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME,
                         FolderConfig, FolderError, read_folder_config, read_folder_state,
                         read_tensors, split_tied, write_folder)
from lxrt.loading import (AUTHORS_VISUAL_CLS_KEY, LoadReport, check_and_load,
                          from_authors_layout, strip_module_prefixes, to_authors_layout)

log = logging.getLogger(__name__)

# LXRTConfig fields that shape training only; a folder may be loaded under other values
TRAINING_ONLY = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range")


class PretrainedModel:
    """Mixin for nn.Modules that hold one LXMERT-S encoder (an `LXRTModel`)."""
    intended_use = ""        # the card's "Intended use"
    limitations = ""         # the card's "Limitations"
    default_labels: Optional[tuple] = None  # fixed meanings of the outputs, if any

    def pretrained_args(self) -> dict:
        """The constructor's arguments besides the config (JSON values)."""
        return {}

    @property
    def num_labels(self) -> Optional[int]:
        """How many outputs `labels` must name (None: the model has no labelled outputs)."""
        return None

    def save_pretrained(self, directory, vocab_file, *, task: Optional[str] = None,
                        labels: Optional[Sequence[str]] = None, info: Optional[dict] = None,
                        card_sections: Optional[dict] = None, extra_files: Optional[dict] = None,
                        authors_unused: Optional[dict] = None, overwrite: bool = False) -> Path:
        """Write config.json, model.safetensors, vocab.txt and README.md to `directory`."""
        return save_folder(self, directory, vocab_file, task=task, labels=labels, info=info,
                           card_sections=card_sections, extra_files=extra_files,
                           authors_unused=authors_unused, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, directory, labels: Optional[Sequence[str]] = None):
        """The model saved in `directory` (eval mode off, as a fresh module), its
        `folder_config` attached; `labels`: refuse a folder whose labels differ."""
        config = read_folder_config(directory)
        if config.architecture != cls.__name__:
            raise FolderError(f"{Path(directory) / CONFIG_NAME}: holds a {config.architecture}, "
                              f"not a {cls.__name__}")
        try:
            model = cls(config.lxrt_config(), **config.model_args)
        except TypeError as err:
            raise FolderError(f"{Path(directory) / CONFIG_NAME}: model_args "
                              f"{config.model_args} do not fit {cls.__name__}: {err}") from None
        load_folder_into(model, directory, labels)
        model.folder_config = config
        return model


# ----------------------------------------------------------------------------------------------
# The encoder inside a model
# ----------------------------------------------------------------------------------------------

def find_encoder(model: nn.Module) -> tuple[str, nn.Module]:
    """(key prefix, module) of the one LXRTModel in `model`."""
    from lxrt.modeling import LXRTModel  # modeling imports this module
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, LXRTModel)]
    if len(found) != 1:
        raise ValueError(f"{type(model).__name__} holds {len(found)} LXRTModel encoders; a "
                         f"model folder needs exactly one")
    name, module = found[0]
    return (name + "." if name else ""), module


def tied_weights(model: nn.Module) -> dict:
    """alias -> original for every parameter registered under two names."""
    first, tied = {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            tied[name] = first[id(param)]
        else:
            first[id(param)] = name
    return tied


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------

def save_folder(model: nn.Module, directory, vocab_file, *, task=None, labels=None, info=None,
                card_sections=None, extra_files=None, authors_unused=None,
                overwrite=False) -> Path:
    prefix, encoder = find_encoder(model)
    labels = list(labels) if labels is not None else (
        list(model.default_labels) if getattr(model, "default_labels", None) else None)
    expected = getattr(model, "num_labels", None)
    if labels is not None and len(labels) != (expected or 0):
        raise ValueError(f"{len(labels)} labels for a {type(model).__name__} with "
                         f"{expected or 'no'} labelled outputs")
    tied = tied_weights(model)
    config = FolderConfig(
        architecture=type(model).__name__, model_config=dataclasses.asdict(encoder.config),
        model_args=model.pretrained_args() if isinstance(model, PretrainedModel) else {},
        task=task, labels=labels, encoder_prefix=prefix, tied_weights=tied,
        info=dict(info or {}))
    weights = split_tied(model.state_dict(), tied)
    card = model_card(config, type(model), card_sections or {}, bool(authors_unused))
    written = write_folder(directory, config, weights, vocab_file, card, authors_unused,
                           extra_files, overwrite)
    log.info("wrote %s: %s, %d tensors", written, config.architecture, len(weights))
    return written


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------

def _check_agrees(config: FolderConfig, model: nn.Module, directory, labels) -> None:
    """The folder describes `model`: class, sizes, constructor arguments and labels."""
    source = Path(directory) / CONFIG_NAME
    if config.architecture != type(model).__name__:
        raise FolderError(f"{source}: holds a {config.architecture}; the model being loaded "
                          f"is a {type(model).__name__}")
    _, encoder = find_encoder(model)
    ours = dataclasses.asdict(encoder.config)
    differ = [f"{k} {config.model_config[k]!r} (the model: {ours[k]!r})" for k in ours
              if k not in TRAINING_ONLY and config.model_config.get(k) != ours[k]]
    if differ:
        raise FolderError(f"{source}: model_config disagrees with the model being loaded: "
                          + ", ".join(differ))
    args = model.pretrained_args() if isinstance(model, PretrainedModel) else {}
    if config.model_args != args:
        raise FolderError(f"{source}: model_args {config.model_args}, the model being loaded "
                          f"has {args}")
    if labels is not None and config.labels is not None and list(labels) != config.labels:
        first = next((i for i, (a, b) in enumerate(zip(labels, config.labels)) if a != b),
                     min(len(labels), len(config.labels)))
        raise FolderError(
            f"{source}: labels differ from this run's ({len(config.labels)} vs {len(labels)}; "
            f"first difference at {first}: "
            f"{config.labels[first] if first < len(config.labels) else None!r} vs "
            f"{labels[first] if first < len(labels) else None!r})")


def load_folder_into(model: nn.Module, directory, labels=None) -> LoadReport:
    """`--load DIR`: the folder's weights into `model`, strictly, after checking that the
    folder's config describes this very model."""
    config = read_folder_config(directory)
    _check_agrees(config, model, directory, labels)
    _, state = read_folder_state(directory)
    try:
        report = check_and_load(model, state, str(Path(directory) / WEIGHTS_NAME))
    except RuntimeError as err:
        raise FolderError(f"{err}\n  (the weights disagree with the sizes in "
                          f"{Path(directory) / CONFIG_NAME})") from None
    log.info("model folder: %s", report.summary())
    return report


# ----------------------------------------------------------------------------------------------
# The authors' layout, both ways
# ----------------------------------------------------------------------------------------------

def folder_from_authors(model: nn.Module, state: dict, directory, vocab_file, source: str,
                        **save_kwargs) -> Path:
    """An authors'-layout state dict -> `model` (strictly) -> a folder that keeps the tensors
    the model never reads, so `authors_state_from_folder` gives `state` back bit for bit."""
    state = strip_module_prefixes(state)
    _, encoder = find_encoder(model)
    converted = from_authors_layout(state, encoder.config)
    unused = {k: v for k, v in state.items()
              if k.endswith(AUTHORS_VISUAL_CLS_KEY) and _holds_more_than_cls(v, encoder.config)}
    split_tied(converted, tied_weights(model))  # tied copies that differ are refused
    check_and_load(model, converted, source)
    info = {"source": source, **(save_kwargs.pop("info", None) or {})}
    return save_folder(model, directory, vocab_file, authors_unused=unused, info=info,
                       **save_kwargs)


def _holds_more_than_cls(table: torch.Tensor, config) -> bool:
    """Whether a visual-[CLS] table has anything besides its [CLS] row (ours write zeros)."""
    rest = table.clone()
    rest[config.cls_token_id] = 0
    return bool(rest.any())


def authors_state_from_folder(directory) -> dict:
    """The folder's weights in the authors' layout (their visual-[CLS] table, their tied
    copies), the never-read rows from authors_unused.safetensors when the folder has it
    (else zero, as they are never read)."""
    config, state = read_folder_state(directory)
    lxrt = config.lxrt_config()
    out = to_authors_layout(state, lxrt)
    unused_path = Path(directory) / AUTHORS_UNUSED_NAME
    if unused_path.is_file():
        for key, table in read_tensors(unused_path).items():
            if key not in out or out[key].shape != table.shape:
                raise FolderError(f"{unused_path}: {key} {list(table.shape)} does not fit "
                                  f"the model's {list(out[key].shape) if key in out else 'keys'}")
            table = table.clone()
            table[lxrt.cls_token_id] = out[key][lxrt.cls_token_id]
            out[key] = table
    return out


# ----------------------------------------------------------------------------------------------
# The model card
# ----------------------------------------------------------------------------------------------

def model_card(config: FolderConfig, cls: type, sections: dict,
               authors_unused: bool = False) -> str:
    """README.md of the folder: what the model is and can do (from its class), then the
    caller's sections (data, recipe, figures, command), then how to load it."""
    c = config.model_config
    title = config.info.get("name") or f"LXMERT-S {config.task or 'encoder'} model"
    lines = [f"# {title}", "",
             f"An LXMERT-S model (`{config.architecture}`): {c['l_layers']} language, "
             f"{c['x_layers']} cross-modality and {c['r_layers']} visual layers, hidden size "
             f"{c['hidden_size']}, {c['num_attention_heads']} heads, {c['visual_feat_dim']}-d "
             f"region features"
             + (f", {len(config.labels)} output labels" if config.labels else "") + "."
             + (f" Task: `{config.task}`." if config.task else ""), ""]
    for heading, text in (("Intended use", cls.intended_use), ("Limitations", cls.limitations)):
        if text:
            lines += [f"## {heading}", "", text.strip(), ""]
    for heading, text in sections.items():
        lines += [f"## {heading}", "", str(text).strip(), ""]
    lines += ["## How to load", "", "```python",
              f"from {cls.__module__} import {cls.__name__}",
              f'model = {cls.__name__}.from_pretrained("path/to/this/folder").eval()',
              "```", "",
              f"`{CONFIG_NAME}` holds the sizes, task and labels, `{WEIGHTS_NAME}` the weights "
              f"(strictly loaded), `{VOCAB_NAME}` the vocabulary."
              + (f" `{AUTHORS_UNUSED_NAME}` keeps the tensors of the authors' layout that the "
                 f"model never reads." if authors_unused else ""), ""]
    return "\n".join(lines)
