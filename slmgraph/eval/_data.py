"""Evaluation datasets: JSON lines or CSV rows with an input and an expected output."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import ConfigError

__all__ = ["EvalRow", "load_dataset", "split_rows"]


@dataclass(frozen=True, slots=True)
class EvalRow:
    """One evaluation case.

    Attributes:
        id: stable identifier (the id column, or the row's 0-based position).
        input: the request sent to the graph.
        expected: the gold output, compared with the graph's answer by a scorer.
        skill: the skill that should handle the row, when the dataset says.
    """

    id: str
    input: str
    expected: str
    skill: str | None = None


def read_json_lines(path: Path, field: str) -> list[dict]:
    """The JSON objects of a JSON-lines file, blank lines skipped.

    Raises:
        ConfigError: (naming ``field``) a line is not a JSON object; the file is
            missing or not UTF-8.
    """
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(field, f"file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{path} is not UTF-8 ({exc})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(field, f"{path}:{n} is not JSON ({exc.msg}); expected one object per line") from None
        if not isinstance(value, dict):
            raise ConfigError(field, f"{path}:{n} is not a JSON object")
        out.append(value)
    return out


def _records(path: Path) -> list[dict]:
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        return read_json_lines(path, "dataset")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise ConfigError("dataset", f"file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("dataset", f"{path} is not UTF-8 ({exc})") from None


def load_dataset(
    path: str | Path,
    *,
    input_col: str = "input",
    expected_col: str = "expected",
    id_col: str | None = None,
    skill_col: str | None = None,
) -> list[EvalRow]:
    """Read a dataset: ``.jsonl``/``.json`` (one object per line) or CSV.

    Args:
        input_col, expected_col: the columns holding the request and the gold output.
        id_col: a column with unique row ids; default: ``id`` when present, else the row's position.
        skill_col: a column naming the skill that should answer (for routing confusion).

    Raises:
        ConfigError: the file is missing or malformed, a column is absent, or ids repeat.
    """
    p = Path(path)
    records = _records(p)
    if not records:
        raise ConfigError("dataset", f"{p} has no rows")
    if id_col is None and "id" in records[0]:
        id_col = "id"
    for col in (input_col, expected_col, id_col, skill_col):
        if col is not None and col not in records[0]:
            raise ConfigError("dataset", f"{p} has no column {col!r}; columns: {', '.join(map(str, records[0]))}")
    rows: list[EvalRow] = []
    seen: set[str] = set()
    for n, r in enumerate(records):
        rid = str(r[id_col]) if id_col else str(n)
        if rid in seen:
            raise ConfigError("dataset", f"{p}: row id {rid!r} appears twice; ids must be unique")
        seen.add(rid)
        expected = r[expected_col]
        rows.append(
            EvalRow(
                id=rid,
                input=str(r[input_col]),
                expected=expected if isinstance(expected, str) else json.dumps(expected),
                skill=str(r[skill_col]) if skill_col and r.get(skill_col) not in (None, "") else None,
            )
        )
    return rows


def split_rows(rows: Sequence[EvalRow], holdout: float, seed: int = 0) -> tuple[list[EvalRow], list[EvalRow]]:
    """A seeded shuffle split into (calibration, held-out); ``holdout`` is the held-out share."""
    if not 0.0 < holdout < 1.0:
        raise ConfigError("holdout", f"must be between 0 and 1 (exclusive), got {holdout}")
    order = list(rows)
    random.Random(seed).shuffle(order)
    cut = max(1, min(len(order) - 1, round(len(order) * (1.0 - holdout))))
    return order[:cut], order[cut:]
