"""Atomic checkpoint files: write to a temporary file in the same folder, fsync, then rename,
so a crash or kill never leaves a half-written BEST.pth / LAST.pth behind."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path) -> None:
    _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path, text: str) -> None:
    _atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path, obj, **kwargs) -> None:
    atomic_write_text(path, json.dumps(obj, **kwargs))
