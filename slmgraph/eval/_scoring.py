"""Scorers: compare a prediction with the expected output, giving a score in [0, 1].

- ``exact``: the answer text equals the expected text (whitespace and case ignored).
- ``label`` (the default): the accepted output's ``label_field`` equals the expected
  label; an output without that field is compared by its answer text, and an
  escalated request by the large model's answer.
- ``"module:function"``: any callable ``(expected, predicted) -> float``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError

__all__ = ["Scorer", "exact_match", "load_scorer", "predictions"]

#: ``(expected, predicted) -> score in [0, 1]``; ``predicted`` is ``None`` when there was no answer.
ScoreFn = Callable[[str, "str | None"], float]


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact_match(expected: str, predicted: str | None) -> float:
    """1.0 when the texts are equal ignoring case and runs of whitespace."""
    return float(predicted is not None and _norm(predicted) == _norm(expected))


@dataclass(frozen=True, slots=True)
class Scorer:
    """A named score function and the output field predictions are read from.

    Attributes:
        name: ``exact``, ``label`` or the ``module:function`` spec.
        fn: the score function.
        label_field: the output field holding the label (``label`` scorer), or ``None``
            to use the answer text.
    """

    name: str
    fn: ScoreFn
    label_field: str | None = None

    def __call__(self, expected: str, predicted: str | None) -> float:
        value = float(self.fn(expected, predicted))
        if not 0.0 <= value <= 1.0:
            raise ConfigError("scorer", f"scorer {self.name!r} returned {value}; scores must be in [0, 1]")
        return value


def load_scorer(spec: str = "label", *, label_field: str = "label") -> Scorer:
    """``"exact"``, ``"label"`` or ``"module:function"``.

    Raises:
        ConfigError: the spec names nothing importable.
    """
    if spec == "exact":
        return Scorer("exact", exact_match)
    if spec == "label":
        return Scorer("label", exact_match, label_field)
    module, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError("scorer", f"unknown scorer {spec!r}; use exact, label or module:function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("scorer", f"cannot import {spec!r}: {exc}") from None
    return Scorer(spec, fn)


def _pick(value: Any, field: str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        key = field or "label"
        if key in value:
            inner = value[key]
            return inner if isinstance(inner, str) or inner is None else json.dumps(inner)
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def predictions(state: dict[str, Any], label_field: str | None) -> tuple[str | None, str | None]:
    """(final prediction, the small model's own prediction) from a run's result fields.

    The final prediction is what the graph answered (``None`` when it could not). The
    small model's prediction is its accepted output, or its draft when the request
    escalated (``None`` when it produced nothing, e.g. "none fits").
    """
    status = state.get("status")
    output = state.get("output")
    if output is not None:
        has_field = label_field is not None and isinstance(output, dict) and label_field in output
        small = _pick(output, label_field) if has_field else state.get("answer")
    else:
        draft = state.get("draft")
        small = _pick(draft, label_field) if isinstance(draft, dict) else _pick(draft, None)
    if status == "answered":
        final = small
    elif status == "escalated":
        final = state.get("answer")
    else:
        final = None
    return final, small
