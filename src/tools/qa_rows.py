"""Reading a user's question/answer file (CSV or JSONL) into checked rows, for
`tools.make_qa_dataset`. Every error names the file and the line.

CSV: a header row, then one question per row. Columns (names case-insensitive, any order):
    image      the image file, relative to the image folder ("cats/01.jpg")
    question   the question text
    answer     one answer, or
    answers    several answers separated by "|" (`answer_separator`): "red|red|dark red"
    split      optional: the split of the row (train, valid, test, ... any [A-Za-z0-9_] name)
    question_id  optional: a non-negative integer, unique (default: the row's number, from 0)
Other columns are ignored.

JSONL: one JSON object per line with the same keys; `answers` is a list of strings (or of
VQA-style {"answer": str} objects), `question_id` an integer. Blank lines are skipped.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from tasks.common.readers import json_objects

REQUIRED = ("image", "question")
OPTIONAL = ("split", "question_id")
ANSWER_KEYS = ("answer", "answers")
SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")
NUL, NEWLINE = b"\x00", b"\n"
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
EXPECTED = ("columns image, question, answer (one answer) or answers (several, separated by "
            "'|'), and optionally split and question_id")


class QAFileError(ValueError):
    """The question/answer file (or an image it names) is not what is expected; the message
    names the file and the line."""


@dataclass
class Row:
    line: int                 # 1-based line of the file where the row starts
    image: str                # as written in the file
    question: str
    answers: list[str]        # as written (not normalised), at least one, none empty
    split: str | None = None
    question_id: int | None = None


def read_text(path: Path) -> str:
    """The file as text: UTF-8 (a byte-order mark is allowed); a binary or non-UTF-8 file is
    refused with the offending byte's offset and line."""
    if not path.is_file():
        raise QAFileError(f"{path}: no such file")
    data = path.read_bytes()
    nul = data.find(NUL)
    if nul >= 0:
        raise QAFileError(f"{path}: not a text file (a NUL byte at offset {nul}, line "
                          f"{data.count(NEWLINE, 0, nul) + 1}); expected a UTF-8 CSV or JSONL "
                          f"file of questions")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise QAFileError(f"{path}: line {data.count(NEWLINE, 0, err.start) + 1}: byte "
                          f"0x{data[err.start]:02x} at offset {err.start} is not UTF-8; "
                          f"save the file as UTF-8") from None


def file_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise QAFileError(f"{path}: cannot tell the format from the extension "
                          f"{path.suffix!r}; name it .csv or .jsonl, or pass --format "
                          f"csv|jsonl") from None


def read_rows(path: str | Path, fmt: str = "auto", answer_separator: str = "|") -> list[Row]:
    """Every row of a CSV or JSONL question file, each checked for its fields' presence and
    types (not yet for images, duplicates or answer normalisation)."""
    path = Path(path)
    fmt = file_format(path, fmt)
    text = read_text(path)
    rows = _csv_rows(path, text, answer_separator) if fmt == "csv" else _jsonl_rows(path, text)
    if not rows:
        raise QAFileError(f"{path}: no questions in the file")
    ids = [r.question_id for r in rows]
    if any(i is None for i in ids) and any(i is not None for i in ids):
        line = next(r.line for r in rows if r.question_id is None)
        raise QAFileError(f"{path}: line {line}: no question_id, while other rows have one; "
                          f"give every row an id or none (then rows are numbered from 0)")
    return rows


# ---------------------------------------------------------------------------------- CSV
def _header(path: Path, names: list[str]) -> dict[str, int]:
    columns = [n.strip().lower() for n in names]
    seen: dict[str, int] = {}
    for i, name in enumerate(columns):
        if name in seen and name in REQUIRED + OPTIONAL + ANSWER_KEYS:
            raise QAFileError(f"{path}: line 1: column {name!r} appears twice in the header")
        seen.setdefault(name, i)
    found = ", ".join(repr(n) for n in names) or "nothing"
    for name in REQUIRED:
        if name not in seen:
            raise QAFileError(f"{path}: line 1: the CSV header has no column {name!r} (found "
                              f"{found}); expected {EXPECTED}")
    given = [k for k in ANSWER_KEYS if k in seen]
    if len(given) != 1:
        problem = "both 'answer' and 'answers'" if given else "no column 'answer' or 'answers'"
        raise QAFileError(f"{path}: line 1: the CSV header has {problem} (found {found}); "
                          f"expected {EXPECTED}")
    return {k: seen[k] for k in REQUIRED + OPTIONAL + ANSWER_KEYS if k in seen}


def _csv_rows(path: Path, text: str, separator: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        names = next(reader)
    except StopIteration:
        raise QAFileError(f"{path}: empty file; expected a CSV header ({EXPECTED})") from None
    except csv.Error as err:
        raise QAFileError(f"{path}: line 1: not readable as CSV ({err})") from None
    columns = _header(path, names)
    rows, start = [], reader.line_num + 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise QAFileError(f"{path}: line {start}: not readable as CSV ({err})") from None
        line, start = start, reader.line_num + 1
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line
        if len(fields) != len(names):
            raise QAFileError(f"{path}: line {line}: {len(fields)} fields, but the header has "
                              f"{len(names)} ({', '.join(names)}); quote fields that hold "
                              f"commas")
        cell = {k: fields[i] for k, i in columns.items()}
        if "answers" in cell:
            answers = cell["answers"].split(separator) if separator else [cell["answers"]]
        else:
            answers = [cell["answer"]]
        rows.append(_row(path, line, cell["image"], cell["question"], answers,
                         cell.get("split"), _csv_question_id(path, line, cell)))
    return rows


def _csv_question_id(path: Path, line: int, cell: dict) -> int | None:
    value = cell.get("question_id", "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise QAFileError(f"{path}: line {line}: question_id {value!r} is not a non-negative "
                          f"integer")
    return int(value)


# ---------------------------------------------------------------------------------- JSONL
def _jsonl_rows(path: Path, text: str) -> list[Row]:
    rows = []
    for line, obj in json_objects(path, text.splitlines(), "with keys image, question, answer "
                                  "or answers", error=QAFileError):
        for key in REQUIRED:
            if not isinstance(obj.get(key), str):
                raise QAFileError(f"{path}: line {line}: key {key!r} must be a string, got "
                                  f"{_kind(obj.get(key))}")
        rows.append(_row(path, line, obj["image"], obj["question"],
                         _json_answers(path, line, obj), _json_split(path, line, obj),
                         _json_question_id(path, line, obj)))
    return rows


def _kind(value) -> str:
    return "nothing (key missing)" if value is None else f"{type(value).__name__} {value!r:.60}"


def _json_answers(path: Path, line: int, obj: dict) -> list[str]:
    given = [k for k in ANSWER_KEYS if k in obj]
    if len(given) != 1:
        problem = "both 'answer' and 'answers'" if given else "no key 'answer' or 'answers'"
        raise QAFileError(f"{path}: line {line}: {problem}; give one answer as 'answer' or a "
                          f"list as 'answers'")
    if "answer" in obj:
        if not isinstance(obj["answer"], str):
            raise QAFileError(f"{path}: line {line}: key 'answer' must be a string, got "
                              f"{_kind(obj['answer'])}")
        return [obj["answer"]]
    answers = obj["answers"]
    if not isinstance(answers, list):
        raise QAFileError(f"{path}: line {line}: key 'answers' must be a list of strings, got "
                          f"{_kind(answers)}")
    out = []
    for i, a in enumerate(answers):
        if isinstance(a, dict) and isinstance(a.get("answer"), str):
            a = a["answer"]  # VQA's annotation entries
        if not isinstance(a, str):
            raise QAFileError(f"{path}: line {line}: answers[{i}] must be a string (or an "
                              f"object with an 'answer' string), got {_kind(a)}")
        out.append(a)
    return out


def _json_split(path: Path, line: int, obj: dict) -> str | None:
    split = obj.get("split")
    if split is not None and not isinstance(split, str):
        raise QAFileError(f"{path}: line {line}: key 'split' must be a string, got "
                          f"{_kind(split)}")
    return split


def _json_question_id(path: Path, line: int, obj: dict) -> int | None:
    qid = obj.get("question_id")
    if qid is None:
        return None
    if isinstance(qid, bool) or not isinstance(qid, int) or qid < 0:
        raise QAFileError(f"{path}: line {line}: question_id must be a non-negative integer, "
                          f"got {_kind(qid)}")
    return qid


# ---------------------------------------------------------------------------------- both
def _row(path: Path, line: int, image: str, question: str, answers: list[str],
         split: str | None, question_id: int | None) -> Row:
    where = f"{path}: line {line}"
    image, question = image.strip(), " ".join(question.split())
    if not image:
        raise QAFileError(f"{where}: empty image")
    if not question:
        raise QAFileError(f"{where}: empty question")
    if not answers:
        raise QAFileError(f"{where}: no answer (an empty 'answers' list)")
    answers = [a.strip() for a in answers]
    if not all(answers):
        among = f" among {answers!r}" if len(answers) > 1 else ""
        raise QAFileError(f"{where}: empty answer{among}; every question needs a non-empty "
                          f"answer")
    split = split.strip() if split is not None else None
    if split:
        if not SPLIT_NAME.fullmatch(split):
            raise QAFileError(f"{where}: split {split!r} must be a name of letters, digits and "
                              f"'_' (it becomes the file vqa/<split>.json)")
    return Row(line, image, question, answers, split or None, question_id)
