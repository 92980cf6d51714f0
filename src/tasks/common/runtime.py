"""The environment a run executes in, apart from the training loop: device choice, seeding,
torch.compile, DataLoader worker count, logging, progress bars and what run_info.json records
(git commit, library versions). The RNG state save/restore of --resume is in `resume`."""
from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # compile modes that capture CUDA graphs


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(requested: Optional[str]) -> torch.device:
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError):
        raise SystemExit(f"--device {requested}: not a device name; expected "
                         f"{DEVICE_CHOICES}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {requested}: this machine has no CUDA GPU (torch "
                         f"{torch.__version__}); run on the CPU with the launcher's first "
                         f"argument `cpu` or --device cpu")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise SystemExit(f"--device {requested}: this machine has {torch.cuda.device_count()} "
                         f"CUDA GPU(s), numbered from 0")
    if device.type not in ("cpu", "cuda") and not _backend_available(device.type):
        raise SystemExit(f"--device {requested}: no {device.type} device on this machine (or "
                         f"not one torch runs models on); expected {DEVICE_CHOICES}")
    return device


def _backend_available(kind: str) -> bool:
    """An accelerator backend other than CUDA (mps, xpu, ...) that torch reports present."""
    backend = getattr(torch, kind, None) or getattr(torch.backends, kind, None)
    is_available = getattr(backend, "is_available", None)
    try:
        return bool(is_available()) if callable(is_available) else False
    except RuntimeError:
        return False


def default_num_workers(device: torch.device, usable_cpus: Optional[int] = None,
                        processes_per_node: Optional[int] = None) -> int:
    """DataLoader workers when --numWorkers is not given. On a GPU reading features and
    collating batches must keep up with 2,000+ samples/s, so each process takes its share of
    the cores (one left for the training process itself), between 2 and 8. On the CPU the
    workers compete with the model for the same cores: 2."""
    if device.type != "cuda":
        return 2
    if usable_cpus is None:
        usable_cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count() or 2)
    per_node = processes_per_node or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(2, min(8, usable_cpus // max(per_node, 1) - 1))


def compile_module(module: nn.Module, mode: Optional[str]) -> nn.Module:
    """`module` under torch.compile in `mode` (None: unchanged; "default": plain compile)."""
    if not mode:
        return module
    return torch.compile(module, mode=None if mode == "default" else mode)


def mark_step_if_graphed(mode: Optional[str]) -> None:
    """Start of a training iteration under CUDA graphs: the previous replay's outputs may be
    overwritten from here on (call before each step's forward)."""
    if mode in CUDA_GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()


# ---- logging and progress -------------------------------------------------------------------

def setup_logging(path: Optional[Path], is_main: bool) -> None:
    """Every module logs to `logging.getLogger(__name__)`; the root logger collects them:
    INFO and above on rank 0 (to stderr and to `path`), warnings only on the other ranks."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_lxrt", False):
            root.removeHandler(handler)
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler()]
    if path is not None:
        handlers.append(logging.FileHandler(path))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._lxrt = True  # ours: replaced, never duplicated, by the next setup
        root.addHandler(handler)


def progress(iterable, desc: str, enabled: bool, total: Optional[int] = None):
    """`iterable` with a tqdm bar when `enabled`, else unchanged."""
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, leave=False)


# ---- what run_info.json records -------------------------------------------------------------

def git_commit() -> Optional[str]:
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def installed_version(distribution: str) -> Optional[str]:
    """The installed version of a distribution, or None when it is not installed (recorded
    for the record only, so a missing optional package never stops a run)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def library_versions() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "tokenizers": installed_version("tokenizers")}


def gpu_name(device: torch.device) -> Optional[str]:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def entry_point() -> Optional[str]:
    """`python -m tasks.X.main` when this process was started as one of the task entry points
    (the command a model card repeats), else None (e.g. main(argv) called from Python)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = spec.name if spec is not None else ""
    return f"python -m {name}" if name.startswith("tasks.") else None
