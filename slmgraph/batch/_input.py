"""Batch input: JSON lines or CSV, one request per row, read lazily.

A row that cannot be used (not JSON, not an object, no input value) becomes a
:class:`BatchRow` with ``problem`` set: the job reports it with its row number and
goes on. A CSV whose header lacks the input column stops the job before any row
runs, since every row would fail the same way.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._errors import ConfigError

__all__ = ["BatchRow", "read_rows"]


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One input row.

    Attributes:
        n: the 1-based row number (data rows; a CSV header is not counted).
        id: the value of the id column, or the row number when there is none.
        input: the request text.
        problem: why the row cannot run, or ``None``.
    """

    n: int
    id: str
    input: str
    problem: str | None = None


def _row(n: int, record: object, input_col: str, id_col: str) -> BatchRow:
    if not isinstance(record, dict):
        return BatchRow(n, str(n), "", f"row {n} is not an object")
    rid = record.get(id_col)
    rid = str(n) if rid is None or rid == "" else str(rid)
    text = record.get(input_col)
    if text is None:
        return BatchRow(n, rid, "", f"row {n} has no {input_col!r} field")
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False) if not isinstance(text, (int, float)) else str(text)
    return BatchRow(n, rid, text)


def _open(path: Path):
    try:
        return path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("input", f"file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError("input", f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def read_rows(path: str | Path, *, input_col: str = "input", id_col: str = "id") -> Iterator[BatchRow]:
    """The rows of a ``.jsonl`` / ``.ndjson`` or ``.csv`` file, in order.

    Raises:
        ConfigError: the file is missing or not UTF-8, or a CSV has no ``input_col``
            column (raised on the first ``next()``, before any row is returned).
    """
    p = Path(path)
    jsonl = p.suffix.lower() in {".jsonl", ".ndjson", ".json"}
    with _open(p) as f:
        try:
            if jsonl:
                n = 0
                for line in f:
                    if not line.strip():
                        continue
                    n += 1
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield BatchRow(n, str(n), "", f"row {n} is not JSON ({exc.msg})")
                        continue
                    yield _row(n, record, input_col, id_col)
                return
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if input_col not in columns:
                shown = ", ".join(repr(c) for c in columns) or "none"
                raise ConfigError(
                    "input_col", f"{p} has no {input_col!r} column (its columns: {shown}); "
                    "name the request column with --input-col"
                )
            for n, record in enumerate(reader, 1):
                yield _row(n, record, input_col, id_col)
        except UnicodeDecodeError as exc:
            raise ConfigError("input", f"{p} is not UTF-8 ({exc})") from None
