"""The task registry: which tasks exist, and what each says about itself.

Each task folder declares its tasks in its `entry.py` (a tuple `ENTRIES` of `TaskEntry`): the
data files it reads and where they are downloaded from, its --tiny/--fast image counts, the
model a predictor rebuilds from a run, how `tools.predict` questions it, and the recipes its
launchers run. Shared code (`DataRoot`, the readers, the predictor, `tools.make_data`, the
tests) reads these declarations and never names a task. A new task folder is one line in
`TASK_FOLDERS`; `register` adds one at run time (tests register a toy task this way).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

# the task folders: each module's ENTRIES are the registered tasks, in this order
TASK_FOLDERS = (
    "tasks.vqa.entry",
    "tasks.gqa.entry",
    "tasks.nlvr2.entry",
    "tasks.retrieval.entry",
    "tasks.pretrain.entry",
    "tasks.snli_ve.entry",
)

# where LXMERT's data files are downloaded from (most tasks' `DataFile.source` starts with it)
LXMERT_DOWNLOADS = ("LXMERT README (https://github.com/airsplay/lxmert), "
                    "e.g. nlp.cs.unc.edu/data/lxmert_data/")

# how tools.predict questions a task's model (tools.predictor implements each)
PREDICT_MODES = ("answers", "verify", "classify", "rank")


class UnknownTaskError(KeyError):
    def __str__(self):
        return str(self.args[0])


@dataclass(frozen=True)
class DataFile:
    """One kind of file a task reads. `name` is a file name (formatted with `split`) or a
    function split -> file name (raising ValueError for an unknown split); it is looked for
    in each of `dirs` under the data root and, with `lxmert_layout`, also under
    root/lxmert_data/ and root/../lxmert_data/ (where the LXMERT-S scripts keep their data);
    `shipped`: a copy in this repository's data/ (a path below it), the last resort. `what`
    and `source` (formatted with `split`, `name` and `stem`, the name without its extension)
    make the error message of a missing file."""
    what: str
    name: Union[str, Callable[[str], str]]
    dirs: tuple
    source: str
    lxmert_layout: bool = True
    shipped: Optional[str] = None

    def file_name(self, split: Optional[str]) -> str:
        return self.name(split) if callable(self.name) else self.name.format(split=split)


@dataclass(frozen=True)
class TaskEntry:
    """What a task declares. `name` is the task of run_info.json; `folder` its package (which
    holds `entry.py` and `main.py`); `shares`: other packages under `tasks/` its code imports
    besides `tasks.common` (VQA and GQA share `tasks.qa`)."""
    name: str
    folder: str
    files: dict = field(default_factory=dict)        # kind -> DataFile
    tiny_images: int = 512                           # images per feature file with --tiny
    fast_images: int = 5000                          # ... with --fast
    split_images: dict = field(default_factory=dict)  # split -> images always read (VQA minival)
    whole_splits: tuple = ()                         # splits never cut (GQA testdev)
    # (model config, run_info's task_info) -> the task's model, for tools.predictor
    build_model: Optional[Callable] = None
    predict: Optional[str] = None                    # one of PREDICT_MODES
    num_images: int = 1                              # images per example
    recipes: dict = field(default_factory=dict)      # launcher recipe name -> {dest: value}
    # (generated images, data root, summary) -> None: writes the task's files for
    # tools.make_data (the images are those make_data wrote for the other tasks)
    generate: Optional[Callable] = None
    # (DataRoot, kind, split) -> the file's Path, or None: a root laid out the task's own way
    # (e.g. made by a converter) answers before the declared lookup
    own_layout: Optional[Callable] = None
    shares: tuple = ()

    @property
    def main(self) -> str:
        return f"{self.folder}.main"

    def file(self, kind: str) -> DataFile:
        try:
            return self.files[kind]
        except KeyError:
            raise UnknownTaskError(f"task {self.name!r} declares no {kind!r} file; it declares "
                                   f"{sorted(self.files)}") from None


_entries: dict = {}
_loaded = False


def entries() -> dict:
    """name -> TaskEntry of every registered task (the folders' entries, then `register`ed)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in TASK_FOLDERS:
            for entry in importlib.import_module(module).ENTRIES:
                _entries.setdefault(entry.name, entry)
    return _entries


def get(name: str) -> TaskEntry:
    try:
        return entries()[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; registered: {sorted(entries())}") \
            from None


def register(entry: TaskEntry) -> TaskEntry:
    """Add (or replace) a task at run time; returns it."""
    if entry.predict is not None and entry.predict not in PREDICT_MODES:
        raise ValueError(f"task {entry.name!r}: predict mode {entry.predict!r} is not one of "
                         f"{PREDICT_MODES}")
    entries()[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    entries().pop(name, None)


def recipes_of(folder: str) -> dict:
    """The launcher recipes of every task whose entry point is `folder`.main."""
    out: dict = {}
    for entry in entries().values():
        if entry.folder == folder:
            out.update(entry.recipes)
    return out


def with_mode(mode: str) -> list:
    """The names of the tasks `tools.predict` questions in `mode`."""
    return [name for name, entry in entries().items() if entry.predict == mode]
