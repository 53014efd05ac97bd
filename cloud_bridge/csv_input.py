"""Reading the files people export from a CRM or a till (customers, purchases): UTF-8 text
whose encoding errors are placed by line and column, the CSV delimiter, a header that names
no column twice, and JSON objects that remember a key given twice.

Messages name the place (file, line, column, character), never the content: an exported
line holds names and phone numbers.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "TWICE",
    "ImportFileError",
    "JsonObject",
    "check_header",
    "decode_text",
    "load_json",
    "sniff_delimiter",
]

TWICE = "given twice in this object: which one counts is a guess"


class ImportFileError(ValueError):
    """The file as a whole cannot be read (format, encoding, header)."""


def sniff_delimiter(text: str) -> str:
    """``;`` (Excel in many locales) when the first line has more of them than commas."""
    first = text.split("\n", 1)[0]
    return ";" if first.count(";") > first.count(",") else ","


def decode_text(data: bytes, path: Path | str, csv_file: bool = True) -> str:
    """The file's text (UTF-8, a BOM allowed), or ImportFileError placing the first byte that
    is not UTF-8 by line, CSV column (with its header name) and character."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raw = bytes(exc.object)  # the input after its BOM: exc.start counts from there
        before = raw[: exc.start].decode("utf-8")  # valid up to the error by definition
        line = before.count("\n") + 1
        char = len(before) - (before.rfind("\n") + 1) + 1
        place = f"line {line}"
        if csv_file:
            place += f", {_csv_column(before)}"
        place += f", character {char}"
        raise ImportFileError(
            f"{path}: {place}: not UTF-8 (byte 0x{raw[exc.start]:02X}); save the file as UTF-8 "
            '(Excel: "CSV UTF-8"; LibreOffice: character set Unicode (UTF-8))'
        ) from None


def _csv_column(before: str) -> str:
    """The CSV column the text ``before`` an error ends in: ``column 2 (name)``, or
    ``column 4 of the header`` when the error is in the header line itself."""
    delimiter = sniff_delimiter(before)
    try:
        records = list(csv.reader(io.StringIO(before + "x", newline=""), delimiter=delimiter))
    except csv.Error:
        return "column ?"
    if not records:
        return "column 1 of the header"
    index = len(records[-1])
    if len(records) == 1:
        return f"column {index} of the header"
    header = [h.strip().lower() for h in records[0]]
    name = header[index - 1] if index <= len(header) and header[index - 1] else None
    return f"column {index} ({name})" if name else f"column {index} (no header)"


def check_header(header: list[str], path: Path | str, names: Iterable[str]) -> None:
    """Refuse a header that gives one of ``names`` (the columns the import reads) twice:
    which of the two would count is a guess, and a wrong guess is silent."""
    wanted = set(names)
    where: dict[str, list[int]] = {}
    for i, h in enumerate(header, start=1):
        if h in wanted:
            where.setdefault(h, []).append(i)
    twice = {h: cols for h, cols in where.items() if len(cols) > 1}
    if not twice:
        return
    parts = []
    for h, cols in twice.items():
        times = "twice" if len(cols) == 2 else f"{len(cols)} times"
        listed = ", ".join(str(c) for c in cols[:-1]) + f" and {cols[-1]}"
        parts.append(f"column {h} appears {times} (columns {listed})")
    raise ImportFileError(f"{path}: line 1: {'; '.join(parts)}: keep one of each and import again")


class JsonObject(dict[str, Any]):
    """A JSON object that remembers the keys it was given more than once (``twice``): the
    standard parser keeps the last one silently."""

    twice: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> JsonObject:
    obj = JsonObject()
    twice: list[str] = []
    for key, value in pairs:
        if key in obj and key not in twice:
            twice.append(key)
        obj[key] = value
    obj.twice = tuple(twice)
    return obj


def load_json(text: str, path: Path | str) -> Any:
    """Parse JSON text; objects come back as ``JsonObject``; ImportFileError if invalid."""
    try:
        return json.loads(text, object_pairs_hook=_object)
    except ValueError as exc:
        raise ImportFileError(f"{path}: not valid JSON: {exc}") from None
