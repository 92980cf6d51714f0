"""The resume state (OUTPUT/resume.pth): what it holds, how it is read safely, and the check
that a --resume continues the same run.

The file is read with `torch.load(weights_only=True)`: tensors and plain containers only, so a
tampered file cannot run code. Everything saved is therefore tensors, numbers, strings, lists
and dicts: the python and numpy RNG states are turned into lists and ints, `vars(args)` into
JSON types.

Layout (RESUME_FORMAT 2): `model`, `optimizer`, `scaler` state dicts, `args` (plain), the
trainer's `TrainState` fields at the top level (`epoch`, `batch`, `global_step`, `best_score`,
`best_epoch`, `best_metrics`, `seconds`, `samples`) and `per_rank`, one entry per process in
rank order: its `rng` state, its running `loss_sum` and the task's running `task_stats`."""
from __future__ import annotations

import json
import logging
import pickle
import random
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

log = logging.getLogger(__name__)

# Flags whose change makes a resumed run a different run (optimizer schedule, data, model).
RUN_SHAPING_FLAGS = ("lr", "batch_size", "epochs", "seed", "warmup", "clip_norm", "optim",
                     "train", "valid", "model_config", "llayers", "xlayers", "rlayers",
                     "precision", "tiny", "fast", "length_buckets", "grad_accum",
                     "stage", "init", "tasks", "image_limit")  # the last four: pre-training's


RESUME_FORMAT = 2  # 1: the trainer's loss sum mixed into the task's stats (not readable now)


class ResumeError(SystemExit):
    """The resume state cannot be used (missing, corrupt, unsafe or from another run)."""


# ---- RNG states as plain data -------------------------------------------------------------

def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain_args(args) -> dict:
    """`vars(args)` as JSON types (paths and other objects become strings)."""
    return plain_data(vars(args))


# ---- reading ------------------------------------------------------------------------------

def load_resume_file(path: Path) -> dict:
    """The resume state at `path`, or a ResumeError saying why it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"--resume: no resume state at {path}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise ResumeError(
                f"--resume: refused to load {path}: it holds objects other than tensors and "
                f"plain data (not a resume state this program wrote, or one written before "
                f"resume states became plain data; it could run code). Start without "
                f"--resume.\n{str(err).splitlines()[0]}") from None
        raise ResumeError(f"--resume: {path} is truncated or corrupt ({err})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise ResumeError(f"--resume: {path} is truncated or corrupt and cannot be read "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                          f"; delete it to start over, or restore it") from None
    if not isinstance(saved, dict) or "model" not in saved or "epoch" not in saved:
        raise ResumeError(f"--resume: {path} is not a resume state (expected a dict with "
                          f"'model', 'optimizer', 'epoch', ...)")
    if saved.get("format") != RESUME_FORMAT:
        raise ResumeError(f"--resume: {path} was written by an earlier version of the trainer "
                          f"(format {saved.get('format', 1)}, expected {RESUME_FORMAT}); start "
                          f"without --resume")
    return saved


def changed_flags(saved_args: dict, args) -> list[str]:
    """'flag: saved X, now Y' for each run-shaping flag that differs."""
    now = plain_args(args)
    return [f"{name}: saved {saved_args.get(name)!r}, now {now.get(name)!r}"
            for name in RUN_SHAPING_FLAGS
            if name in now and saved_args.get(name) != now.get(name)]


def changed_inputs(saved: Optional[dict], now: dict) -> list[str]:
    """'name: saved X, now Y' for each recorded input (training set size and digest, a stage
    config's content) that differs; resume states written before inputs were recorded have
    none, and nothing is compared."""
    saved = saved or {}
    return [f"{name}: saved {saved[name]!r}, now {value!r}" for name, value in now.items()
            if name in saved and saved[name] is not None and value is not None
            and saved[name] != value]


def check_same_run(path: Path, saved_args: dict, args, saved_inputs: Optional[dict] = None,
                   inputs: Optional[dict] = None) -> None:
    changes = changed_flags(saved_args or {}, args) + changed_inputs(saved_inputs, inputs or {})
    if not changes:
        return
    listing = "\n  ".join(changes)
    if getattr(args, "resume_changed_flags", False):
        log.warning("--resume with changed flags (--resumeChangedFlags): the optimizer takes "
                    "the new lr / warmup / schedule length; changes:\n  %s", listing)
        return
    raise ResumeError(f"--resume: {path} was written by a run with other flags or inputs:\n"
                      f"  {listing}\nUse the same flags and data, or add --resumeChangedFlags "
                      f"to continue anyway.")


def plain_scalar(value) -> torch.Tensor:
    """A running 0-d stat (a tensor on any device, or a number) as a float CPU tensor."""
    return torch.as_tensor(value).detach().float().cpu()


def epoch_stats_to_plain(stats: dict) -> dict:
    """The running train stats of the current epoch as 0-d CPU tensors (safe to save)."""
    return {k: plain_scalar(v) for k, v in stats.items()}


def plain_data(value):
    """`value` as JSON types (anything else becomes its string)."""
    return json.loads(json.dumps(value, default=str))
