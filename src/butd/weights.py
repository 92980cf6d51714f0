"""Reading the detector's released weights strictly, and writing them as safetensors.

Files users can download (nothing here downloads anything):
- `faster_rcnn_from_caffe_attr.pkl` / `faster_rcnn_from_caffe.pkl` (py-bottom-up-attention):
  a pickled dict whose "model" entry maps parameter names to numpy arrays. A pickle can run
  code, so it is read with an unpickler that admits only what such a dict needs;
- `pytorch_model.bin` of `unc-nlp/frcnn-vg-finetuned` (Hugging Face's LXMERT demo): a torch
  state dict, read with `weights_only=True`;
- `*.safetensors` written by `convert_weights` (the detector's settings in its metadata).

Both released files use the same parameter names (detectron2's), the names of butd.modeling.
Loading is strict: every tensor of the model must come from the file with its exact shape, and
every key of the file must be used. Explicit allow-list:
- `*.num_batches_tracked` (batch-norm counters of the Hugging Face file): dropped;
- `proposal_generator.anchor_generator.cell_anchors.0`: checked against the anchors the model
  computes, then dropped;
- a batch norm's `running_mean` and `running_var`, both absent: mean 0, variance 1 (the
  Caffe2-style convention, where the statistics are folded into weight and bias);
- the attribute head (`cls_embedding`, `fc_attr`, `attr_score`) entirely absent: the model
  without attributes (`faster_rcnn_from_caffe.pkl`), attribute ids/confidences 0.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from butd.config import VG_CONFIG, DetectorConfig
from butd.modeling import BUTDDetector, cell_anchors

ANCHOR_KEY = "proposal_generator.anchor_generator.cell_anchors.0"
ATTRIBUTE_PREFIXES = ("roi_heads.box_predictor.cls_embedding.",
                      "roi_heads.box_predictor.fc_attr.", "roi_heads.box_predictor.attr_score.")
SAFETENSORS_FORMAT = "butd-vg-frcnn"
LAYOUTS = ("pickle", "torch", "safetensors")


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the key."""


@dataclass
class LoadInfo:
    path: str
    layout: str                       # "pickle", "torch" or "safetensors"
    config: DetectorConfig
    tensors: int = 0
    dropped: list = field(default_factory=list)          # allow-listed keys not loaded
    identity_norms: list = field(default_factory=list)   # norms without running statistics

    def summary(self) -> str:
        extra = f", {len(self.dropped)} allow-listed keys dropped" if self.dropped else ""
        if self.identity_norms:
            extra += f", {len(self.identity_norms)} norms without running statistics"
        attrs = "with" if self.config.has_attributes else "without"
        return (f"{self.path}: {self.tensors} tensors ({self.layout}), {attrs} attribute "
                f"head{extra}")


# ---- reading files ----------------------------------------------------------------------------

def _numpy_global(name: str):
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no multiarray.{name}")


def _allowed_globals() -> dict:
    reconstruct, scalar = _numpy_global("_reconstruct"), _numpy_global("scalar")
    import _codecs
    import collections
    return {
        # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1")
        ("_codecs", "encode"): _codecs.encode,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.multiarray", "scalar"): scalar,
        ("numpy._core.multiarray", "scalar"): scalar,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, dtypes, scalars, ordered dicts and the byte-string codec of
    protocol-2 pickles (which torch's weights_only reader allows too); any other global is
    refused before it is looked up, so nothing in the file can run."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")   # Python 2 pickles (detectron2's)
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise WeightsError(
                f"{self.source}: the pickle asks for {module}.{name}; a weights file may only "
                f"hold a dict of numpy arrays, and a pickle that imports anything else could "
                f"run code, so it is refused") from None

    def persistent_load(self, pid):
        raise WeightsError(f"{self.source}: the pickle refers to external objects "
                           f"(a torch file? give it a .bin/.pt/.pth name)")


def read_pickle_weights(path: Path) -> tuple[dict, dict]:
    """(name -> numpy array, other top-level entries) of a detectron2-style `.pkl`."""
    with open(path, "rb") as f:
        try:
            data = _ArraysOnlyUnpickler(f, str(path)).load()
        except WeightsError:
            raise
        except Exception as err:   # truncated or not a pickle at all
            raise WeightsError(f"{path}: not a readable pickle ({type(err).__name__}: "
                               f"{err})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a dict with a 'model' entry, got "
                           f"{type(data).__name__}")
    model = data.get("model", data if all(isinstance(v, np.ndarray) for v in data.values())
                     else None)
    if not isinstance(model, dict):
        raise WeightsError(f"{path}: no 'model' dict of arrays (top-level keys "
                           f"{sorted(map(str, data))[:8]})")
    for key, value in model.items():
        if not isinstance(value, np.ndarray) or value.dtype.hasobject:
            raise WeightsError(f"{path}: entry {key!r} is {type(value).__name__}"
                               f"{' of objects' if isinstance(value, np.ndarray) else ''}, "
                               f"expected a numeric numpy array")
    meta = {k: v for k, v in data.items() if k != "model" and model is not data}
    return model, meta


def read_torch_weights(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(f"{path}: refused by torch.load(weights_only=True): the file holds "
                           f"more than tensors ({str(err).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise WeightsError(f"{path}: not a readable torch file ({err})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {key!r} is {type(value).__name__}, expected "
                               f"a tensor (a plain state dict)")
    return state


def read_safetensors_weights(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    return state, meta


def detect_layout(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        return "pickle"
    if suffix in (".bin", ".pt", ".pth"):
        return "torch"
    if suffix == ".safetensors":
        return "safetensors"
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    raise WeightsError(f"{path}: not a weights file this loader knows (.pkl of "
                       f"py-bottom-up-attention, pytorch_model.bin, or .safetensors)")


def read_weights(path) -> tuple[dict, str, dict]:
    """(name -> tensor, layout, metadata) of any supported file; nothing checked yet."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector weights {path}: no such file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file")
    layout = detect_layout(path)
    meta: dict = {}
    if layout == "pickle":
        arrays, meta = read_pickle_weights(path)
        state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    elif layout == "torch":
        state = read_torch_weights(path)
    else:
        state, meta = read_safetensors_weights(path)
    return state, layout, meta


# ---- strict checking --------------------------------------------------------------------------

def expected_shapes(config_or_model) -> dict:
    """name -> shape of every tensor the model (or a model of this config) loads."""
    model = config_or_model
    if isinstance(model, DetectorConfig):
        model = BUTDDetector(model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _is_norm_statistic(key: str) -> bool:
    return key.endswith(".norm.running_mean") or key.endswith(".norm.running_var")


def check_state(state: dict, config: DetectorConfig, source: str,
                model: Optional[BUTDDetector] = None) -> tuple[dict, LoadInfo]:
    """The file's tensors as the model's state dict (float32), or WeightsError naming every
    missing, unexpected, misshapen or non-finite key. `model`: one of `config` already built."""
    expected = expected_shapes(model if model is not None else config)
    info = LoadInfo(path=source, layout="", config=config)
    clean, problems, unexpected, seen = {}, [], [], set()
    for key, value in state.items():
        if key.endswith(".num_batches_tracked") and key.replace(
                ".num_batches_tracked", ".weight") in expected:
            info.dropped.append(key)
            continue
        if key == ANCHOR_KEY:
            ours = cell_anchors(config.anchor_sizes, config.anchor_ratios)
            if tuple(value.shape) != tuple(ours.shape) or not torch.allclose(
                    value.float(), ours, atol=1e-3):
                problems.append(f"{key}: the file's anchors {value.tolist()} are not the "
                                f"model's {ours.tolist()} (sizes {config.anchor_sizes}, "
                                f"ratios {config.anchor_ratios})")
            info.dropped.append(key)
            continue
        if key not in expected:
            unexpected.append(key)
            continue
        seen.add(key)
        if tuple(value.shape) != expected[key]:
            problems.append(f"{key}: shape {tuple(value.shape)} in the file, the model "
                            f"expects {expected[key]}")
            continue
        if not value.is_floating_point():
            problems.append(f"{key}: dtype {value.dtype}, expected floating point")
            continue
        value = value.float()
        if not torch.isfinite(value).all():
            problems.append(f"{key}: holds NaN or infinite values")
            continue
        clean[key] = value
    missing = [k for k in expected if k not in seen]
    # a norm without both running statistics is the identity convention; one alone is not
    for key in [k for k in missing if k.endswith(".norm.running_mean")]:
        var = key[:-len("running_mean")] + "running_var"
        if var in missing:
            missing.remove(key)
            missing.remove(var)
            info.identity_norms.append(key[:-len(".running_mean")])
            clean[key] = torch.zeros(expected[key])   # the identity: mean 0, variance 1
            clean[var] = torch.ones(expected[var])
    if unexpected:
        problems.append(f"unexpected keys (not part of the detector): {_listing(unexpected)}")
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if problems:
        raise WeightsError(f"{source}: does not fit the detector "
                           f"(num_classes {config.num_classes}, num_attributes "
                           f"{config.num_attributes}, res5 {config.res5_channels}):\n  "
                           + "\n  ".join(problems))
    info.tensors = len(clean)
    return clean, info


def _listing(keys: list, shown: int = 12) -> str:
    more = f" ... and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def config_for(state: dict, meta: dict, config: Optional[DetectorConfig],
               source: str) -> DetectorConfig:
    """The settings to check a file against: the caller's, else the ones a safetensors file
    of ours records, else the Visual Genome model's, without the attribute head when the file
    has none of it."""
    if config is None and meta.get("format") == SAFETENSORS_FORMAT:
        config = DetectorConfig.from_json(meta.get("config", ""), f"{source} metadata")
    if config is None:
        config = VG_CONFIG
        if not any(k.startswith(ATTRIBUTE_PREFIXES) for k in state):
            config = dataclasses.replace(config, num_attributes=0)
    return config


def load_state(path, config: Optional[DetectorConfig] = None,
               **model_kwargs) -> tuple[dict, LoadInfo, BUTDDetector]:
    """Read and strictly check a weights file: (state dict, LoadInfo, an untrained model of
    the file's settings to load it into)."""
    state, layout, meta = read_weights(path)
    config = config_for(state, meta, config, str(path))
    model = BUTDDetector(config, **model_kwargs)
    clean, info = check_state(state, config, str(path), model)
    info.layout = layout
    return clean, info, model


def load_detector(path, config: Optional[DetectorConfig] = None,
                  **model_kwargs) -> tuple[BUTDDetector, LoadInfo]:
    """A BUTDDetector (CPU, eval mode) with the weights of `path`; see the module docstring."""
    clean, info, model = load_state(path, config, **model_kwargs)
    model.load_state_dict(clean)   # check_state filled absent running statistics explicitly
    return model.eval(), info


def convert_weights(source, target, config: Optional[DetectorConfig] = None) -> LoadInfo:
    """Check `source` strictly and write its tensors to `target` (.safetensors) with the
    detector's settings in the metadata; written to a temporary file, then renamed."""
    from safetensors.torch import save_file
    clean, info, _ = load_state(source, config)
    for norm in info.identity_norms:   # make the convention explicit in our file
        size = clean[f"{norm}.weight"].shape[0]
        clean[f"{norm}.running_mean"] = torch.zeros(size)
        clean[f"{norm}.running_var"] = torch.ones(size)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in clean.items()}, str(tmp),
                  metadata={"format": SAFETENSORS_FORMAT, "config": info.config.to_json(),
                            "source": Path(source).name})
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return info
