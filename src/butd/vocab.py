"""The names of the detector's 1600 Visual Genome objects and 400 attributes.

`data/objects_vocab.txt` and `data/attributes_vocab.txt` are the public vocabularies of
bottom-up-attention (`data/genome/1600-400-20/`), one class per line, synonyms separated by
commas; line i is class id i (the ids in the TSV's objects_id / attrs_id columns).
"""
from __future__ import annotations

import functools
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def _read(name: str) -> tuple:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return tuple(line.split(",")[0].strip().lower() for line in lines if line.strip())


@functools.lru_cache(maxsize=None)
def object_names() -> tuple:
    """1600 names; the first synonym of each line, as the reference demos print them."""
    return _read("objects_vocab.txt")


@functools.lru_cache(maxsize=None)
def attribute_names() -> tuple:
    return _read("attributes_vocab.txt")


def object_name(index: int) -> str:
    names = object_names()
    return names[index] if 0 <= index < len(names) else f"object {index}"


def attribute_name(index: int) -> str:
    names = attribute_names()
    return names[index] if 0 <= index < len(names) else f"attribute {index}"
