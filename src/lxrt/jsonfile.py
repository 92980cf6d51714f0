"""Reading JSON files (configs, answer tables, question files) with errors that name the file.

Every JSON reader of the project goes through `read_json`, so the encoding rules live in one
place: UTF-8, with or without a byte-order mark (some editors on Windows write one); UTF-16 or
UTF-32 files are refused with a message that says so instead of a JSON syntax error at
character 0.
"""
from __future__ import annotations

import codecs
import json
from pathlib import Path

_WIDE_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32",
              codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16"}


def _wide_encoding(head: bytes) -> str | None:
    """'UTF-16'/'UTF-32' when the first bytes look like a wide encoding (a BOM, or the NUL
    bytes that ASCII text gets in UTF-16/32), else None."""
    for bom, name in _WIDE_BOMS.items():  # UTF-32 BOMs first: they start with UTF-16's
        if head.startswith(bom):
            return name
    if len(head) >= 2 and b"\x00" in head[:4]:
        return "UTF-16" if head[:4].count(b"\x00") < 3 else "UTF-32"
    return None


def read_json(path, error=ValueError):
    """The parsed contents of the JSON file `path`. A missing file raises FileNotFoundError
    naming it; a file that is not UTF-8 JSON raises `error` naming it and what was expected."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    wide = _wide_encoding(raw[:4])
    if wide is not None:
        raise error(f"{path}: not UTF-8 JSON (the file looks {wide}-encoded); save it as "
                    f"UTF-8")
    try:
        text = raw.decode("utf-8-sig")  # a leading UTF-8 byte-order mark is accepted
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 JSON (invalid byte 0x{raw[err.start]:02x} at offset "
                    f"{err.start}); save it as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err})") from None
