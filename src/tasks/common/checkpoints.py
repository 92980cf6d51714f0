"""Atomic checkpoint files: write to a temporary file in the same folder, fsync, then rename,
so a crash or kill never leaves a half-written BEST.pth / LAST.pth behind.

A failed write (ENOSPC, EIO, a quota, ...) raises `CheckpointWriteError` naming the file and
leaves the previous version of that file untouched. Files get the mode the user's umask gives
(`tempfile.mkstemp` alone would leave them 0600). A temporary file left by a killed process is
removed by `remove_stale_temporaries` at the next start."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


class CheckpointWriteError(OSError):
    """A checkpoint or output file could not be written; the previous version is intact."""


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it ...
    os.umask(mask)          # ... and put it back at once
    return mask


class _WriteRecorder:
    """The file object a writer gets: it remembers the OSError of a failed write. torch.save
    turns that error into a RuntimeError ('unexpected pos ...') naming neither the file nor
    the cause (disk full, file too large, quota)."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data):
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self):
        self.handle.flush()


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, recorder = None, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            recorder = _WriteRecorder(handle)
            write(recorder)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if recorder is not None and recorder.error is not None:
            err = recorder.error  # the write error behind the writer's own exception
        if isinstance(err, OSError) and not isinstance(err, CheckpointWriteError):
            kept = "the previous version is kept" if path.exists() else "nothing was written"
            raise CheckpointWriteError(
                err.errno, f"could not write {path}: {err.strerror or err} ({kept})") from err
        raise


def atomic_torch_save(obj, path) -> None:
    _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path, text: str) -> None:
    _atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path, obj, **kwargs) -> None:
    atomic_write_text(path, json.dumps(obj, **kwargs))


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Delete the temporary files of atomic writes that a killed process left in `folder`.
    Call only while holding the folder's run lock (no other process may be writing)."""
    removed = []
    for path in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    if removed:
        log.info("removed %d unfinished temporary file(s) of an interrupted run: %s",
                 len(removed), ", ".join(sorted(removed)))
    return removed
