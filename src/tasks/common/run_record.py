"""What a run records about the inputs its weights depend on, and the check that a later run
(or tools.predict) reads them the same way.

A model's output rows are answer ids and its input ids are vocabulary rows: the weights mean
something only with the answer list and the vocabulary they were trained with. run_info.json's
"task_info" therefore keeps the answer list itself (`answers`, with its sha1) and the sha1 of
the vocabulary file (`vocab_sha1`). A run that starts from a checkpoint of ours (--load,
--loadLXMERT, --loadLXMERTQA, --init) compares them with its own before anything is written,
and stops on a difference: an answer table changed since training would name every
prediction wrongly, and a reordered vocabulary would feed the model other words. Runs made
before these records existed have none, and are not checked.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

from lxrt.folder import VOCAB_NAME, is_model_folder, read_folder_config
from lxrt.loading import resolve_finetuned_path, resolve_pretrained_path

log = logging.getLogger(__name__)

RUN_INFO = "run_info.json"
# the weight flags (their args dest) whose checkpoint may come from a run of ours
WEIGHT_FLAGS = {"load": resolve_finetuned_path, "load_lxmert": resolve_pretrained_path,
                "load_lxmert_qa": resolve_pretrained_path, "init": resolve_pretrained_path}


def file_sha1(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def answers_sha1(answers: Sequence[str]) -> str:
    return hashlib.sha1(json.dumps(list(answers)).encode("utf-8")).hexdigest()


def vocab_record(vocab_file) -> dict:
    return {"vocab_file": str(Path(vocab_file).resolve()), "vocab_sha1": file_sha1(vocab_file)}


def answers_record(answers: Sequence[str]) -> dict:
    return {"answers": list(answers), "answers_sha1": answers_sha1(answers)}


def recorded_task_info(checkpoint: Path) -> Optional[dict]:
    """The "task_info" of the run_info.json next to `checkpoint`, or None (none there, or
    unreadable: the loaders report the checkpoint itself)."""
    path = Path(checkpoint).parent / RUN_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    task_info = info.get("task_info") if isinstance(info, dict) else None
    return task_info if isinstance(task_info, dict) else None


def folder_record(folder, whole_model: bool) -> dict:
    """What a model folder records of its inputs: its vocabulary, and (when the whole model is
    loaded, answer head included) the answers its outputs name."""
    config = read_folder_config(folder)
    record = vocab_record(Path(folder) / VOCAB_NAME)
    if whole_model and config.labels is not None:
        record["answers"] = config.labels
    return record


def first_difference(trained: Sequence[str], now: Sequence[str]) -> str:
    for k, (a, b) in enumerate(zip(trained, now)):
        if a != b:
            return f"label {k} was {a!r} in training, is {b!r} now"
    return f"{len(trained)} answers in training, {len(now)} now"


def differences(recorded: dict, current: dict) -> list[str]:
    """What differs between the inputs recorded by a run and those of this one (only what
    both recorded is compared)."""
    out = []
    if recorded.get("vocab_sha1") and current.get("vocab_sha1") and \
            recorded["vocab_sha1"] != current["vocab_sha1"]:
        out.append(f"the vocabulary differs: trained with {recorded.get('vocab_file')} (sha1 "
                   f"{recorded['vocab_sha1'][:12]}), now {current.get('vocab_file')} (sha1 "
                   f"{current['vocab_sha1'][:12]}); a reordered or edited vocab.txt gives "
                   f"words other ids")
    if isinstance(recorded.get("answers"), list) and isinstance(current.get("answers"), list) \
            and recorded["answers"] != current["answers"]:
        where = first_difference(recorded["answers"], current["answers"])
        out.append(f"the answer table differs: {where}; the model's answers would be named "
                   f"wrongly")
    return out


def check_loaded_runs(args, current: dict,
                      resolvers: dict[str, Callable[[str], Path]] = WEIGHT_FLAGS) -> None:
    """For each weight flag set in `args` (dest -> path resolver), compare the inputs recorded
    next to its checkpoint with this run's (`current`, the task's run_info) and stop on a
    difference. Called before the run writes anything."""
    problems = []
    for dest, resolve in resolvers.items():
        value = getattr(args, dest, None)
        if not value:
            continue
        if is_model_folder(value):  # a model folder carries its vocabulary and labels
            checkpoint, recorded = Path(value), folder_record(value, whole_model=dest == "load")
        else:
            try:
                checkpoint = resolve(value)
            except (FileNotFoundError, OSError, ValueError):
                continue  # the loader reports a missing file itself
            recorded = recorded_task_info(checkpoint)
        if recorded is None:
            continue
        for problem in differences(recorded, current):
            problems.append(f"{checkpoint} ({Path(checkpoint).parent / RUN_INFO}): {problem}")
    if problems:
        raise SystemExit("the weights to load were trained with other inputs than this run "
                         "reads:\n  " + "\n  ".join(problems) +
                         "\nUse the vocabulary and answer table of the training run.")
