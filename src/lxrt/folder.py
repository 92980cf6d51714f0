"""The model folder on disk: what `save_pretrained` writes and `from_pretrained` reads.

    config.json          what to build: the model class, its sizes (every LXRTConfig field), the
                         constructor's other arguments, the task and what each output means
    model.safetensors    the weights in this code's key layout; no pickle, memory-mapped on load
    vocab.txt            the WordPiece vocabulary the model was trained with
    README.md            the model card
    authors_unused.safetensors   (only in folders converted from the authors' layout) tensors of
                         their layout that this model never reads (the rows of the visual-[CLS]
                         table other than [CLS]), kept so that the conversion back to their layout
                         gives their file bit for bit

This module only reads and writes those files, checking each against what it must hold;
`lxrt.pretrained` builds models from them and loads them strictly. Tied weights (the MLM
decoder shares the word embeddings) are stored once: `tied_weights` in config.json names each
alias and the tensor it shares.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch

from lxrt.config import LXRTConfig
from lxrt.jsonfile import read_json

FORMAT = "lxmert-s-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.txt"
CARD_NAME = "README.md"
AUTHORS_UNUSED_NAME = "authors_unused.safetensors"


class FolderError(RuntimeError):
    """A model folder that cannot be used; the message names the file and key."""


@dataclass
class FolderConfig:
    """config.json of a model folder."""
    architecture: str                     # the model class, e.g. "QAModel", "LXRTPretraining"
    model_config: dict                    # every LXRTConfig field
    model_args: dict = field(default_factory=dict)   # the constructor's other arguments
    task: Optional[str] = None            # the task it was trained for (None: encoder only)
    labels: Optional[list] = None         # what output i of the head means
    encoder_prefix: Optional[str] = None  # where the encoder (LXRTModel) lies in the weights
    tied_weights: dict = field(default_factory=dict)  # alias -> the tensor it shares
    info: dict = field(default_factory=dict)  # the run behind it: source, figures, extractor
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def lxrt_config(self) -> LXRTConfig:
        return LXRTConfig(**self.model_config)


def is_model_folder(path) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG_NAME).is_file()


def _expect(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise FolderError(f"{path}: {message}")


def read_folder_config(directory) -> FolderConfig:
    """config.json, every key checked: the format, known keys only, all LXRTConfig fields."""
    path = Path(directory) / CONFIG_NAME
    _expect(Path(directory).is_dir(), Path(directory), "not a model folder (no such directory)")
    _expect(path.is_file(), path, "missing; a model folder is written by save_pretrained or "
                                  "python -m tools.export")
    values = read_json(path, error=FolderError)
    _expect(isinstance(values, dict), path, "expected a JSON object")
    _expect(values.get("format") == FORMAT, path,
            f"format {values.get('format')!r}, expected {FORMAT!r}")
    _expect(values.get("format_version") == FORMAT_VERSION, path,
            f"format_version {values.get('format_version')!r}; this code reads "
            f"{FORMAT_VERSION}")
    known = {f.name for f in fields(FolderConfig)}
    unknown = sorted(set(values) - known)
    _expect(not unknown, path, f"unknown keys {unknown}; known: {sorted(known)}")
    for key in ("architecture", "model_config"):
        _expect(key in values, path, f"no {key!r}")
    config = FolderConfig(**values)
    _expect(isinstance(config.model_config, dict), path, "model_config must be an object")
    sizes = {f.name for f in fields(LXRTConfig)}
    extra = sorted(set(config.model_config) - sizes)
    missing = sorted(sizes - set(config.model_config))
    _expect(not extra, path, f"model_config has unknown keys {extra}")
    _expect(not missing, path, f"model_config lacks {missing}")
    try:
        config.lxrt_config()
    except (TypeError, ValueError) as err:
        raise FolderError(f"{path}: model_config: {err}") from None
    _expect(isinstance(config.model_args, dict), path, "model_args must be an object")
    _expect(config.labels is None or (isinstance(config.labels, list) and
                                      all(isinstance(x, str) for x in config.labels)),
            path, "labels must be a list of strings")
    return config


def read_tensors(path: Path) -> dict:
    """A safetensors file (memory-mapped) with errors that name it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    _expect(path.is_file(), path, "missing")
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise FolderError(f"{path}: cannot read as safetensors ({err}); the file is "
                          f"truncated, corrupt or not a safetensors file") from None


def split_tied(state: dict, tied: dict) -> dict:
    """`state` without the aliases of `tied` (alias -> the key it shares); an alias whose
    values differ from its original is refused: the file would not be what the model holds."""
    out = dict(state)
    for alias, original in tied.items():
        if alias in out and original in out and not torch.equal(out[alias], out[original]):
            raise FolderError(f"{alias} should be tied to {original} but the values differ")
        out.pop(alias, None)
    return out


def join_tied(state: dict, tied: dict, source: Path) -> dict:
    """The state with every alias of `tied` restored from its original."""
    out = dict(state)
    for alias, original in tied.items():
        if alias in out:
            raise FolderError(f"{source}: holds {alias}, which config.json ties to {original} "
                              f"(stored once)")
        if original in out:
            out[alias] = out[original]
    return out


def read_folder_state(directory) -> tuple[FolderConfig, dict]:
    """(config.json, every weight with tied aliases restored) of a model folder."""
    config = read_folder_config(directory)
    path = Path(directory) / WEIGHTS_NAME
    return config, join_tied(read_tensors(path), config.tied_weights, path)


def encoder_state(directory) -> tuple[dict, list]:
    """`--loadLXMERT DIR` / `--loadLXMERTQA DIR`: the folder's weights named as in the
    pre-training checkpoint (`bert.*`, and the heads beside it when the folder holds the
    pre-training model), and the keys of other heads, which an encoder load leaves unused."""
    config, state = read_folder_state(directory)
    prefix = config.encoder_prefix
    if prefix is None:
        raise FolderError(f"{Path(directory) / CONFIG_NAME}: names no encoder_prefix")
    out, other = {}, []
    for key, value in state.items():
        if key.startswith(prefix):
            out["bert." + key[len(prefix):]] = value
        elif prefix == "bert.":  # laid out as the pre-training checkpoint: heads beside bert
            out[key] = value
        else:
            other.append(key)
    return out, sorted(other)


def _write_tensors(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"format": "pt"})


def write_folder(directory, config: FolderConfig, weights: dict, vocab_file, card: str,
                 authors_unused: Optional[dict] = None, extra_files: Optional[dict] = None,
                 overwrite: bool = False) -> Path:
    """Write a complete folder next to `directory` and rename it into place, so a crash never
    leaves a half-written folder under that name. `extra_files`: name in the folder -> file to
    copy there (e.g. the feature extractor's record). An existing folder is replaced only with
    `overwrite` (and only if it is a model folder)."""
    import json
    directory = Path(directory)
    if directory.exists():
        if not overwrite:
            raise FolderError(f"{directory}: exists; choose a new folder or pass overwrite")
        _expect(is_model_folder(directory), directory,
                "exists and is not a model folder; refusing to replace it")
    vocab_file = Path(vocab_file)
    _expect(vocab_file.is_file(), vocab_file, "vocabulary file not found")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp",
                                dir=directory.parent))
    try:
        _write_tensors(tmp / WEIGHTS_NAME, weights)
        if authors_unused:
            _write_tensors(tmp / AUTHORS_UNUSED_NAME, authors_unused)
        shutil.copyfile(vocab_file, tmp / VOCAB_NAME)
        values = asdict(config)
        ordered = {"format": values.pop("format"),
                   "format_version": values.pop("format_version"), **values}
        (tmp / CONFIG_NAME).write_text(json.dumps(ordered, indent=2) + "\n")
        (tmp / CARD_NAME).write_text(card)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        os.chmod(tmp, 0o777 & ~_umask())
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
