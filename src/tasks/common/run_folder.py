"""The output folder of one run: an exclusive lock (two runs in one folder would interleave
logs and overwrite each other's checkpoints) and the metrics.jsonl writer.

metrics.jsonl holds one JSON object per line. Each run (a first run, a rerun, a --resume, a
--test) starts its section with a `{"run_start": ..., "argv": [...], "resumed": ...}` record;
the per-epoch records carry an "epoch" key, test records a "test" key. Numbers that are not
finite are written as null, so every line is valid JSON."""
from __future__ import annotations

import datetime
import fcntl
import json
import math
import os
import platform
from pathlib import Path
from typing import Optional

LOCK_NAME = "run.lock"
METRICS_NAME = "metrics.jsonl"


class FolderInUse(SystemExit):
    """Another live process holds the output folder's lock."""


class RunLock:
    """`flock` on OUTPUT/run.lock for the life of the run. The OS drops the lock when the
    process exits or dies, so a crash never leaves the folder locked; the file itself stays,
    holding the pid and host of the last run that took it."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._handle = None

    def acquire(self) -> "RunLock":
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
        return self

    def release(self) -> None:
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
    with open(Path(folder) / METRICS_NAME, "a") as handle:
        handle.write(json.dumps(json_safe(record), allow_nan=False, default=str) + "\n")


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
        if "run_start" in record:
            sections.append([])
        else:
            sections[-1].append(record)
    sections = [s for s in sections if s] or [[]]
    if section is None:
        return [r for s in sections for r in s]
    return sections[section]
