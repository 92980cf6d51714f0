"""The output folder of one run: an exclusive lock (two runs in one folder would interleave
logs and overwrite each other's checkpoints) and the metrics.jsonl writer.

metrics.jsonl holds one JSON object per line. Each run (a first run, a rerun, a --resume, a
--test) starts its section with a `{"run_start": ..., "argv": [...], "resumed": ...}` record;
the per-epoch records carry an "epoch" key, test records a "test" key. Numbers that are not
finite are written as null, and the cut-off last line of a killed run is kept as a
`{"partial_record": ...}` line, so every line is valid JSON."""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import os
import platform
import weakref
from pathlib import Path
from typing import Optional

LOCK_NAME = "run.lock"
METRICS_NAME = "metrics.jsonl"


class FolderInUse(SystemExit):
    """Another live process holds the output folder's lock."""


_HELD: "weakref.WeakSet[RunLock]" = weakref.WeakSet()


def _close_in_child() -> None:
    """After a fork (DataLoader workers): the child closes its copy of every held lock file.
    The flock belongs to the open file, which the child would otherwise keep open after the
    run itself died, leaving the folder locked until the last worker noticed. Closing (not
    unlocking) leaves the parent's lock in place."""
    for lock in list(_HELD):
        if lock._handle is not None:
            with contextlib.suppress(OSError):
                lock._handle.close()
            lock._handle = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class RunLock:
    """`flock` on OUTPUT/run.lock for the life of the run. The OS drops the lock when the
    process exits or dies (forked workers do not inherit it), so a crash never leaves the
    folder locked; the file itself stays, holding the pid and host of the last run that
    took it."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._handle = None

    def acquire(self) -> "RunLock":
        if self.path.is_dir() or (self.path.exists() and not self.path.is_file()):
            kind = "directory" if self.path.is_dir() else "special file"
            raise SystemExit(f"{self.path} is a {kind}, not the lock file of a run; remove it "
                             f"(a run keeps its lock there) or choose another --output")
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            raise FolderInUse(f"output folder {self.path.parent} is in use by another run "
                              f"({holder}, lock file {self.path}); wait for it to finish or "
                              f"choose another --output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on host {platform.node()}\n")
        handle.flush()
        self._handle = handle
        _HELD.add(self)
        return self

    def release(self) -> None:
        _HELD.discard(self)
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def json_safe(value):
    """`value` with every non-finite float replaced by None (JSON has no NaN/Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def append_metrics(folder: Path, record: dict) -> None:
    line = json.dumps(json_safe(record), allow_nan=False, default=str) + "\n"
    with open(Path(folder) / METRICS_NAME, "a+b") as handle:
        _close_partial_line(handle)
        handle.write(line.encode("utf-8"))


def _close_partial_line(handle) -> None:
    """A run killed in the middle of a line (or a full disk) leaves the file without its last
    newline: that partial line is kept, as a `{"partial_record": text}` line of its own, so
    the next record is not glued to it and every line stays valid JSON."""
    end = handle.seek(0, os.SEEK_END)
    if end == 0:
        return
    handle.seek(end - 1)
    if handle.read(1) == b"\n":
        return
    start = end - 1
    while start > 0:  # back to the partial line's start
        step = min(4096, start)
        handle.seek(start - step)
        chunk = handle.read(step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            start = start - step + cut + 1
            break
        start -= step
    handle.seek(start)
    partial = handle.read().decode("utf-8", errors="replace")
    handle.truncate(start)
    handle.seek(start)
    handle.write((json.dumps({"partial_record": partial}) + "\n").encode("utf-8"))


def start_metrics_section(folder: Path, argv, resumed: bool) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    append_metrics(folder, {"run_start": now, "argv": [str(a) for a in argv],
                            "resumed": bool(resumed)})


def read_metrics(path: Path, section: Optional[int] = -1) -> list[dict]:
    """The records of metrics.jsonl `path` without the run_start markers: those of the last
    run's section (section=-1, the default), of section N, or all (section=None)."""
    sections: list[list[dict]] = [[]]
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "partial_record" in record:  # the cut-off line of a killed run
            continue
        if "run_start" in record:
            sections.append([])
        else:
            sections[-1].append(record)
    sections = [s for s in sections if s] or [[]]
    if section is None:
        return [r for s in sections for r in s]
    return sections[section]
