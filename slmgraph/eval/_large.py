"""Offline large models for evaluation: the gold label as an "oracle", or recorded answers.

No large model is reachable on an offline machine, yet routing can only be judged
against one. Both models here implement the :class:`~slmgraph.models.Model` seam,
so a graph binds them as ``"large"`` like any backend:

- :class:`OracleModel`: answers every request with its gold answer (a perfect large
  model), at a fixed price per call.
- :class:`RecordedModel`: answers with answers recorded earlier from a real large
  model (a JSON-lines file ``{"id"|"input": ..., "output": ...}``).

The eval runner tells them which dataset row is running through a context variable
(:func:`current_row`); outside a run they look the request text up instead.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError, UserError
from ..models._base import Message, Model, ModelReply, ModelSettings, Usage
from ._data import EvalRow, read_json_lines

__all__ = ["OracleModel", "RecordedModel", "OfflineLargeModel", "current_row", "load_recorded", "DEFAULT_CALL_COST"]

#: USD per oracle/recorded call unless told otherwise (a ~1k-token call on a frontier model).
DEFAULT_CALL_COST = 0.001

_ROW: contextvars.ContextVar[EvalRow | None] = contextvars.ContextVar("slmgraph_eval_row", default=None)


def current_row() -> contextvars.ContextVar[EvalRow | None]:
    """The context variable holding the dataset row being evaluated (set by the runner)."""
    return _ROW


def _request_of(messages: Sequence[Message]) -> str:
    """The request text: the escalation agent sends a JSON brief with ``"request"``."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    try:
        brief = json.loads(last)
    except (json.JSONDecodeError, TypeError):
        return last
    return str(brief.get("request", last)) if isinstance(brief, dict) else last


class OfflineLargeModel(Model):
    """Shared behaviour: find the answer for the current request, wrap it as a reply.

    Attributes:
        kind: ``"oracle"`` or ``"recorded"``; reports say which was used.
        cost_per_call: the flat USD price of one call (priced through the ledger).
    """

    kind = "offline"
    context_window = 1_000_000

    def __init__(self, name: str, cost_per_call: float) -> None:
        if cost_per_call < 0:
            raise ConfigError("large.cost_per_call", "must be >= 0")
        self.name = name
        self.provider = self.kind
        self.cost_per_call = cost_per_call
        self.calls = 0

    def answer_for(self, row: EvalRow | None, request: str) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def complete(
        self, messages: Sequence[Message], *, schema: dict[str, Any] | None = None, settings: ModelSettings | None = None
    ) -> ModelReply:
        started = time.perf_counter()
        request = _request_of(messages)
        answer = self.answer_for(_ROW.get(), request)
        if answer is None:
            fix = (
                "add it to the recorded answers file, or evaluate with the oracle"
                if self.kind == "recorded"
                else "run it through slmgraph eval, or give OracleModel(answers={request: gold})"
            )
            raise UserError(f"the {self.kind} large model has no answer for the request {request[:80]!r}; {fix}")
        self.calls += 1
        props = (schema or {}).get("properties", {})
        if "action" in props:  # the escalation agent's protocol
            value: Any = {"action": "final", "answer": answer}
            text = json.dumps(value, ensure_ascii=False)
        else:
            value, text = None, answer
        prompt = sum(self.count_tokens(m.content) for m in messages)
        return ModelReply(
            text=text,
            parsed=value,
            model=self.name,
            provider=self.provider,
            usage=Usage(prompt, self.count_tokens(text)),
            latency_s=time.perf_counter() - started,
            finish_reason="stop",
        )


class OracleModel(OfflineLargeModel):
    """A perfect large model: it answers with the gold answer of the row being evaluated.

    Args:
        answers: gold answers by request text, for use outside the eval runner.
        cost_per_call: USD charged per call.
        name: the model name recorded in the ledger.
    """

    kind = "oracle"

    def __init__(self, answers: Mapping[str, str] | None = None, *, cost_per_call: float = DEFAULT_CALL_COST, name: str = "oracle") -> None:
        super().__init__(name, cost_per_call)
        self.answers = dict(answers or {})

    def answer_for(self, row: EvalRow | None, request: str) -> str | None:
        if row is not None:
            return row.expected
        return self.answers.get(request)


def load_recorded(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """Read recorded large-model answers: JSON lines with ``output`` and ``id`` and/or
    ``input``. Returns (answers by id, answers by input text)."""
    p = Path(path)
    by_id: dict[str, str] = {}
    by_input: dict[str, str] = {}
    for n, r in enumerate(read_json_lines(p, "large.recorded"), 1):
        if "output" not in r or not ({"id", "input"} & set(r)):
            raise ConfigError("large.recorded", f'{p}: record {n} needs "output" and "id" or "input"')
        out = r["output"] if isinstance(r["output"], str) else json.dumps(r["output"])
        if "id" in r:
            by_id[str(r["id"])] = out
        if "input" in r:
            by_input[str(r["input"])] = out
    return by_id, by_input


class RecordedModel(OfflineLargeModel):
    """A large model replayed from a file of recorded answers (see :func:`load_recorded`).

    Args:
        path: the JSON-lines file.
        cost_per_call: USD charged per call (what the recorded calls cost on average).
        name: the model name recorded in the ledger.
    """

    kind = "recorded"

    def __init__(self, path: str | Path, *, cost_per_call: float = DEFAULT_CALL_COST, name: str = "recorded") -> None:
        super().__init__(name, cost_per_call)
        self.path = Path(path)
        self.by_id, self.by_input = load_recorded(path)

    def answer_for(self, row: EvalRow | None, request: str) -> str | None:
        if row is not None and row.id in self.by_id:
            return self.by_id[row.id]
        return self.by_input.get(row.input if row is not None else request)
