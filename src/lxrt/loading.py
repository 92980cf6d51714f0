"""Checkpoint loading: pre-trained LXMERT-S weights, the QA/ITM head transfers, fine-tuned
task models, and conversion between the authors' key layout and ours.

Every load is strict: each key the target module has must be in the file, and a key the file
has but the module lacks is an error unless an explicit allow-list says it is expected (the
pre-training heads when only the encoder is wanted). The authors' loaders print the mismatch and
carry on regardless (non-strict loading), which silently left models half-random for LXMERT users.

Layout differences handled here (docs/authors_code.md, "Checkpoint files and names" and
"State-dict keys"):
- `module.` prefixes from DataParallel/DDP (leading, or `lxrt_encoder.model.module.bert.*`);
- the authors' vocab x 2048 visual-[CLS] table `bert.word_embeddings.weight`, of which only the
  [CLS] row is ever read, stored by us as `bert.visual_cls_feat`.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from lxrt.config import LXRTConfig
from lxrt.folder import encoder_state, is_model_folder
from lxrt.jsonfile import read_json

log = logging.getLogger(__name__)

PRETRAINED_SOURCE = ("the LXMERT-S pre-trained checkpoint `mode_LXRT.bin` linked from the "
                     "authors' README (github.com/lttsmn/LXMERT-S); put it in data/")
# Keys of the pre-training checkpoint that an encoder-only load leaves unused on purpose.
PRETRAINING_HEAD_PREFIXES = ("cls.", "obj_predict_head.", "answer_head.")
AUTHORS_VISUAL_CLS_KEY = "bert.word_embeddings.weight"
OUR_VISUAL_CLS_KEY = "bert.visual_cls_feat"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used, with a message that says why."""


@dataclass
class LoadReport:
    path: str
    loaded: list = field(default_factory=list)
    ignored: list = field(default_factory=list)

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} tensors from {self.path}"
                + (f"; ignored {len(self.ignored)} allow-listed keys "
                   f"({_prefix_summary(self.ignored)})" if self.ignored else ""))


def _prefix_summary(keys: Iterable[str]) -> str:
    prefixes = sorted({k.split(".")[0] + "." for k in keys})
    return ", ".join(f"{p}*" for p in prefixes)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def pretrained_candidates(path: str | os.PathLike) -> list[Path]:
    """Where `--loadLXMERT P` may point: P itself (e.g. data/mode_LXRT.bin), the authors'
    convention P_LXRT.pth, and the README's file name next to P."""
    p = Path(path)
    candidates = [p, Path(f"{p}_LXRT.pth"), Path(f"{p}_LXRT.bin")]
    if p.suffix == "" and p.name in ("model", "mode"):
        candidates += [p.parent / "mode_LXRT.bin", p.parent / "model_LXRT.pth"]
    seen, unique = set(), []
    for c in candidates:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def resolve_pretrained_path(path: str | os.PathLike) -> Path:
    """The checkpoint file `--loadLXMERT P` means (a model folder is read by `_read_pretrained`
    before this is asked)."""
    for candidate in pretrained_candidates(path):
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in pretrained_candidates(path))
    raise FileNotFoundError(f"pre-trained checkpoint not found for {path!r}; tried: {tried}. "
                            f"It is {PRETRAINED_SOURCE}.")


def resolve_finetuned_path(path: str | os.PathLike) -> Path:
    """`--load X` reads X.pth as the authors do; an existing X is also accepted."""
    p = Path(path)
    candidates = [Path(f"{p}.pth"), p] if p.suffix != ".pth" else [p]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"fine-tuned checkpoint not found for --load {path!r}; tried: "
        + ", ".join(str(c) for c in candidates)
        + " (a BEST.pth/LAST.pth written by fine-tuning, passed without .pth, or a model "
          "folder with a config.json)")


def _check_checkpoint_magic(path: Path) -> None:
    """torch.save writes a zip archive (PK..) or, before PyTorch 1.6, a pickle (protocol byte
    0x80); anything else (a text file, JSON, an HTML error page) is refused by name here
    instead of failing deep in the unpickler (e.g. `KeyError: 101`)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return
    kind = "empty" if not head else (
        "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "unknown binary")
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (a torch.save zip archive or "
                          f"pickle was expected; the file is {kind}, starting {head!r})")


def read_state_dict(path: str | os.PathLike) -> dict:
    """torch.load on CPU with clear errors for missing, truncated, corrupt or non-state-dict
    files. A training checkpoint of ours ({"model": state_dict, ...}) yields its model part."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    _check_checkpoint_magic(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError,
            ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint ({type(err).__name__}: {err}); the file "
            f"({size} bytes) is truncated, corrupt or not a torch.save file") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (a non-empty dict of tensors), "
                              f"found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: not a state dict; entries that are not name -> tensor: "
                              f"{bad[:5]}")
    return obj


def strip_module_prefixes(state_dict: dict) -> dict:
    """Remove DataParallel/DDP `module.` segments: a leading one and inner `.module.` ones."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        key = key.replace(".module.", ".")
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------------
# Layout conversion
# ----------------------------------------------------------------------------------------------

def from_authors_layout(state_dict: dict, config: LXRTConfig) -> dict:
    """Authors' keys -> ours: every `...bert.word_embeddings.weight` [vocab, D] visual-[CLS]
    table becomes `...bert.visual_cls_feat` [D] (its [CLS] row). Other keys are unchanged."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(AUTHORS_VISUAL_CLS_KEY):
            prefix = key[: -len(AUTHORS_VISUAL_CLS_KEY)]
            if value.dim() != 2 or value.shape[1] != config.visual_feat_dim:
                raise CheckpointError(
                    f"{key}: expected the visual-[CLS] table [vocab, {config.visual_feat_dim}], "
                    f"found {list(value.shape)}")
            if config.cls_token_id >= value.shape[0]:
                raise CheckpointError(f"{key}: has {value.shape[0]} rows, no row for [CLS] id "
                                      f"{config.cls_token_id}")
            out[prefix + OUR_VISUAL_CLS_KEY] = value[config.cls_token_id].clone()
        else:
            out[key] = value
    return out


def to_authors_layout(state_dict: dict, config: LXRTConfig) -> dict:
    """Ours -> authors' keys, so our checkpoints load in their code: `bert.visual_cls_feat`
    becomes a [vocab, D] table whose [CLS] row holds it (other rows zero; never read)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(OUR_VISUAL_CLS_KEY):
            prefix = key[: -len(OUR_VISUAL_CLS_KEY)]
            table = value.new_zeros(config.vocab_size, value.shape[0])
            table[config.cls_token_id] = value
            out[prefix + AUTHORS_VISUAL_CLS_KEY] = table
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------------------------
# Strict loading with allow-lists
# ----------------------------------------------------------------------------------------------

def check_and_load(module: nn.Module, state_dict: dict, source: str,
                   allow_unused: Sequence[str] = ()) -> LoadReport:
    """Load `state_dict` into `module`, requiring every module key, refusing keys the module
    lacks unless they start with an allow-listed prefix, and checking every shape."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(k for k in set(state_dict) - set(expected)
                        if not k.startswith(tuple(allow_unused)))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}"
                        + (" ..." if len(missing) > 20 else ""))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}"
                        + (" ..." if len(unexpected) > 20 else ""))
    shapes = [f"shape mismatch for {key}: expected {list(expected[key].shape)}, found "
              f"{list(state_dict[key].shape)}" for key in sorted(set(expected) & set(state_dict))
              if expected[key].shape != state_dict[key].shape]
    problems += shapes[:20] + ([f"... and {len(shapes) - 20} more shape mismatches"]
                               if len(shapes) > 20 else [])
    if problems:
        raise CheckpointError(f"{source}: cannot load into {type(module).__name__}:\n  "
                              + "\n  ".join(problems))
    used = {k: state_dict[k] for k in expected}
    module.load_state_dict(used, strict=True)
    ignored = sorted(set(state_dict) - set(expected))
    return LoadReport(source, sorted(used), ignored)


def _read_pretrained(path) -> tuple[Path, dict]:
    """(file, state dict named as the pre-training checkpoint) of `--loadLXMERT P`: a file, or
    a model folder (lxrt.folder) whose encoder is renamed to `bert.*`; the heads of another
    model in a folder (a task model's answer head, say) are left unused."""
    if is_model_folder(path):
        state, other = encoder_state(path)
        if other:
            log.info("%s: using its encoder; %d tensors of its other heads are not used (%s)",
                     path, len(other), _prefix_summary(other))
        return Path(path), state
    file = resolve_pretrained_path(path)
    return file, strip_module_prefixes(read_state_dict(file))


def load_pretrained_encoder(encoder: nn.Module, path, config: Optional[LXRTConfig] = None,
                            extra_allowed: Sequence[str] = ()) -> LoadReport:
    """`--loadLXMERT P`: every `bert.*` key of the encoder from the pre-training checkpoint.

    `encoder` is an `LXRTEncoder` (or anything with a `.bert` LXRTModel). The pre-training
    heads are allow-listed as unused; anything else unknown is an error."""
    bert = encoder.bert
    config = config or bert.config
    file, state = _read_pretrained(path)
    state = from_authors_layout(state, config)
    bert_state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
    others = [k for k in state if not k.startswith("bert.")]
    unknown = [k for k in others if not k.startswith(PRETRAINING_HEAD_PREFIXES + tuple(extra_allowed))]
    if unknown:
        raise CheckpointError(f"{file}: unexpected keys outside bert.* and the pre-training "
                              f"heads: {', '.join(unknown[:20])}")
    report = check_and_load(bert, bert_state, str(file))
    report.ignored = sorted(others)
    log.info("encoder: %s", report.summary())
    return report


# ----------------------------------------------------------------------------------------------
# --loadLXMERTQA: answer-head surgery (VQA/GQA) and ITM head transfer (retrieval)
# ----------------------------------------------------------------------------------------------

# LXMERT's answer normalisation (pretrain/qa_answer_table.py, AnswerTable.ANS_CONVERT).
ANS_CONVERT = {
    "a man": "man", "the man": "man", "a woman": "woman", "the woman": "woman",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10", "grey": "gray",
}


def convert_answer(ans: str) -> str:
    """lower-case; drop a trailing '.'; strip a leading 'a ', 'an ', 'the '; then ANS_CONVERT."""
    if not ans:
        return ""
    ans = ans.lower()
    if ans[-1] == ".":
        ans = ans[:-1].strip()
    for article in ("a ", "an ", "the "):
        if ans.startswith(article):
            ans = ans[len(article):].strip()
    return ANS_CONVERT.get(ans, ans)


def read_pretraining_answers(all_ans_path: str | os.PathLike) -> list[str]:
    """The 9500 answers of LXMERT's `all_ans.json` (list of {"ans": str, "dsets": [...]})."""
    path = Path(all_ans_path)
    try:
        entries = read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"answer table not found: {path} (LXMERT's all_ans.json, "
                                f"shipped in data/lxmert/all_ans.json)") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "ans" in e for e in entries):
        raise ValueError(f"{path}: expected a list of {{'ans': ..., 'dsets': [...]}} entries")
    return [e["ans"] for e in entries]


def answer_surgery_map(label2ans: Sequence[str], pretraining_answers: Sequence[str]) -> list:
    """For each task label, the row of the pre-training answer head it starts from (or None)."""
    ans2id = {a: i for i, a in enumerate(pretraining_answers)}
    return [ans2id.get(convert_answer(a)) for a in label2ans]


def load_lxmert_qa(task_model: nn.Module, path, label2ans: Sequence[str], all_ans_path,
                   config: Optional[LXRTConfig] = None) -> LoadReport:
    """`--loadLXMERTQA P` for VQA/GQA: the encoder, plus `answer_head.logit_fc.*` copied into
    `task_model.logit_fc` with rows re-ordered to the task's answers (zero where the normalised
    answer is not among the 9500 pre-training answers)."""
    report = load_pretrained_encoder(task_model.lxrt_encoder, path, config)
    _, state = _read_pretrained(path)
    head = {k[len("answer_head.logit_fc."):]: v for k, v in state.items()
            if k.startswith("answer_head.logit_fc.")}
    expected_head = task_model.logit_fc.state_dict()
    missing = sorted(set(expected_head) - set(head))
    if missing:
        raise CheckpointError(f"{report.path}: --loadLXMERTQA needs answer_head.logit_fc.* but "
                              f"lacks {', '.join('answer_head.logit_fc.' + k for k in missing)}")
    mapping = answer_surgery_map(label2ans, read_pretraining_answers(all_ans_path))
    weight = torch.zeros_like(expected_head["3.weight"])
    bias = torch.zeros_like(expected_head["3.bias"])
    for label, row in enumerate(mapping):
        if row is not None:
            weight[label] = head["3.weight"][row]
            bias[label] = head["3.bias"][row]
    head["3.weight"], head["3.bias"] = weight, bias
    check_and_load(task_model.logit_fc, head, report.path)
    found = sum(r is not None for r in mapping)
    log.info("answer head: %d of %d answers from pre-training, %d zero-initialised",
             found, len(mapping), len(mapping) - found)
    report.loaded += [f"logit_fc.{k}" for k in head]
    return report


def load_itm_head(task_model: nn.Module, path, config: Optional[LXRTConfig] = None) -> LoadReport:
    """`--loadLXMERTQA P` for retrieval: the encoder plus `cls.seq_relationship.*` (ITM) into
    `task_model.seq_relationship_new`."""
    report = load_pretrained_encoder(task_model.lxrt_encoder, path, config)
    _, state = _read_pretrained(path)
    head = {k[len("cls.seq_relationship."):]: v for k, v in state.items()
            if k.startswith("cls.seq_relationship.")}
    check_and_load(task_model.seq_relationship_new, head, report.path)
    log.info("retrieval head: cls.seq_relationship -> seq_relationship_new from %s", report.path)
    report.loaded += [f"seq_relationship_new.{k}" for k in head]
    return report


def load_finetuned(task_model: nn.Module, path, config: LXRTConfig,
                   labels: Optional[Sequence[str]] = None) -> LoadReport:
    """`--load X`: a whole fine-tuned task model from X.pth (ours or the authors', with or
    without DataParallel `module.` segments), or from the model folder X (whose config must
    describe `task_model`, and whose labels must be `labels` when given), strictly."""
    if is_model_folder(path):
        from lxrt.pretrained import load_folder_into  # lxrt.pretrained imports this module
        return load_folder_into(task_model, path, labels)
    file = resolve_finetuned_path(path)
    state = from_authors_layout(strip_module_prefixes(read_state_dict(file)), config)
    report = check_and_load(task_model, state, str(file))
    log.info("task model: %s", report.summary())
    return report
