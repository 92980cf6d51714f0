"""Where every data file lives: one data root, laid out as LXMERT's download instructions produce it.

The default root is `data/` (relative to the working directory), overridable by the `root`
argument or the `LXRT_DATA_ROOT` environment variable. Each task declares its files in its
`entry.py` (`tasks.common.registry.DataFile`: a name per split, folders, download source);
`DataRoot.path(task, kind, split)` looks for one in a list of candidate paths and the first
that exists wins:

1. each folder the task declares under the root (the layout of LXMERT's download
   instructions),
2. the paths the LXMERT-S scripts hard-code (docs/authors_code.md, "Data locations"):
   `lxmert_data/...` and `image_retrieval/...` inside the root, and `lxmert_data/...` next
   to it (the authors keep `lxmert_data/` at the repository top level, beside `data/`),
3. for the answer tables shipped in this repository's `data/`, the shipped copy, so that a
   root without them still works.

A missing file raises `DataFileNotFoundError`, which lists every path tried and where the file
is downloaded from. `data/README.md` documents the layout.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from tasks.common import registry

ENV_VAR = "LXRT_DATA_ROOT"
DEFAULT_ROOT = "data"

# this repository's data/ (answer tables are shipped there)
REPO_DATA = Path(__file__).resolve().parents[3] / "data"


class DataFileNotFoundError(FileNotFoundError):
    """A data file is in none of its candidate paths."""

    def __init__(self, what: str, tried: list[Path], source: str | None = None):
        self.what = what
        self.tried = list(tried)
        self.source = source
        lines = [f"{what} not found. Tried:"]
        lines += [f"  {p}" for p in self.tried]
        if source:
            lines.append(f"Download: {source}")
        lines.append(f"(set the data root with --dataRoot or {ENV_VAR}; see data/README.md)")
        super().__init__("\n".join(lines))


def _dedupe(paths):
    out, seen = [], set()
    for p in paths:
        key = os.path.normpath(str(p))
        if key not in seen:
            seen.add(key)
            out.append(Path(p))
    return out


class DataRoot:
    """One data root. `path` returns an existing `Path` or raises `DataFileNotFoundError`;
    `dirs` and `candidates` list where it looks."""

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
        self.root = Path(root)

    def __repr__(self):
        return f"DataRoot({str(self.root)!r})"

    def dirs(self, task: str, kind: str) -> list[Path]:
        """The folders where `task`'s `kind` files are looked for, in order: each declared
        folder under the root, then (the LXMERT-S layout) under root/lxmert_data and
        root/../lxmert_data."""
        declared = registry.get(task).file(kind)
        names = declared.dirs
        dirs = [self.root / n for n in names]
        if declared.lxmert_layout:
            dirs += [self.root / "lxmert_data" / n for n in names]
            dirs += [self.root.parent / "lxmert_data" / n for n in names]
        return _dedupe(dirs)

    def candidates(self, task: str, kind: str, split: Optional[str] = None) -> list[Path]:
        """Every path where `task`'s `kind` file of `split` may be, first choice first."""
        declared = registry.get(task).file(kind)
        name = declared.file_name(split)
        paths = [d / name for d in self.dirs(task, kind)]
        if declared.shipped:
            paths.append(REPO_DATA / declared.shipped)
        return paths

    def path(self, task: str, kind: str, split: Optional[str] = None) -> Path:
        """The existing `kind` file of `task` (for `split`), or `DataFileNotFoundError` listing
        every path tried and where the file comes from. An unknown split is a ValueError. A
        root of the task's own layout (its entry's `own_layout`, e.g. a VQA root made by
        tools.make_qa_dataset) says where its files are instead."""
        entry = registry.get(task)
        if entry.own_layout is not None:
            found = entry.own_layout(self, kind, split)
            if found is not None:
                return found
        declared = entry.file(kind)
        name = declared.file_name(split)
        what = declared.what.format(split=split, name=name)
        source = declared.source.format(split=split, name=name, stem=name.rsplit(".", 1)[0])
        return self.find(what, self.candidates(task, kind, split), source)

    @staticmethod
    def find(what: str, candidates, source: str | None = None) -> Path:
        """First existing path of `candidates`, else `DataFileNotFoundError`."""
        candidates = _dedupe(candidates)
        for p in candidates:
            if p.is_file():
                return p
        raise DataFileNotFoundError(what, candidates, source)

