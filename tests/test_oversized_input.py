"""Oversized input (RELIABILITY.md row 14): 1 and 5 MB of text and deeply nested JSON
are refused or chunked on our side, before anything is sent; no request over the
model's token budget leaves; nothing is silently dropped; memory stays bounded.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import pytest
from pydantic import BaseModel

from slmgraph import RequestTooLargeError, RulesRouter, Skill, build_graph
from slmgraph._context import DEFAULT_REPLY_RESERVE
from slmgraph.skills import summarize_skill
from slmgraph.testing import FunctionModel

MB = 1_000_000
WINDOW = 8192


def document(size: int) -> str:
    """Paragraphs with a unique marker each, so coverage can be checked."""
    out, i, total = [], 0, 0
    while total < size:
        p = f"Invoice ledger entry {i}: marker M{i:07d} records a payment of {i % 97} euros for account A{i % 13}."
        out.append(p)
        total += len(p) + 2
        i += 1
    return "\n\n".join(out)


class Audit:
    """A model that records every request and whether it fit the token budget."""

    def __init__(self, reply) -> None:
        self.over_budget = 0
        self.sent: list[str] = []
        self.model = FunctionModel(self._reply, context_window=WINDOW)
        self._fn = reply

    def _reply(self, messages, schema):
        call = self.model.calls[-1]
        reserve = (call.settings.max_tokens if call.settings and call.settings.max_tokens else None) \
            or DEFAULT_REPLY_RESERVE
        tokens = sum(self.model.count_tokens(m.content) + 4 for m in messages)
        self.over_budget += tokens > WINDOW - reserve
        self.sent.append(messages[-1].content)
        return self._fn(messages, schema)


class Echo(BaseModel):
    label: str


PLAIN = Skill(name="plain", description="labels a text", instructions="Label it.", output_type=Echo)


@pytest.mark.parametrize("size", [1 * MB, 5 * MB], ids=["1MB", "5MB"])
async def test_oversized_text_is_refused_before_any_call(tmp_path: Path, size: int) -> None:
    audit = Audit(lambda m, s: {"label": "x"})
    graph = build_graph([PLAIN], models={"small": audit.model}, router=RulesRouter([], default="plain"),
                        checkpoint=tmp_path / "c.sqlite")
    text = document(size)
    tracemalloc.start()
    with pytest.raises(RequestTooLargeError, match="split it into smaller requests") as info:
        await graph.ainvoke(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert audit.model.calls == []  # requests over budget sent: 0 (nothing was sent)
    assert info.value.tokens > info.value.limit == WINDOW - DEFAULT_REPLY_RESERVE
    assert await graph.apending_runs(include_failed=True) == []  # refused, so never accepted
    assert peak < size  # counting does not copy the text
    print(f"\nrow 14: {size // MB} MB refused before sending: {info.value.tokens} tokens > {info.value.limit}; "
          f"calls sent 0; peak extra memory {peak / MB:.2f} MB")


@pytest.mark.parametrize("size", [1 * MB, 5 * MB], ids=["1MB", "5MB"])
async def test_oversized_text_is_chunked_with_every_part_sent_and_none_over_budget(size: int) -> None:
    def summarise(messages, schema):
        return {"summary": "The invoice ledger entries record payments for accounts."}

    audit = Audit(summarise)
    graph = build_graph([summarize_skill(chunk_tokens=4000)], models={"small": audit.model},
                        router=RulesRouter([], default="summarize"), checkpoint=None)
    text = document(size)
    tracemalloc.start()
    result = await graph.ainvoke(text)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert result.status == "answered", result.escalation_detail
    assert audit.over_budget == 0  # requests over token budget sent
    markers = set(re.findall(r"M\d{7}", text))
    sent = set(re.findall(r"M\d{7}", "\n".join(audit.sent)))
    assert sent == markers  # silent truncations: 0 (every paragraph reached the model)
    assert result.output_json["chunks"] > 1
    assert peak < 20 * size  # bounded: a small multiple of the input
    print(f"\nrow 14: {size // MB} MB chunked into {result.output_json['chunks']} parts, {len(audit.model.calls)} calls, "
          f"over budget 0, markers sent {len(sent)}/{len(markers)}, peak memory {peak / MB:.1f} MB "
          f"({peak / size:.1f}x input)")


class Nested(BaseModel):
    data: dict
    note: str = ""


NESTED = Skill(name="nested", description="reads JSON", instructions="Read it.", output_type=Echo,
               input_type=Nested)


async def test_deeply_nested_json_is_refused_or_rejected_typed_never_a_crash(tmp_path: Path) -> None:
    audit = Audit(lambda m, s: {"label": "x"})
    graph = build_graph([NESTED], models={"small": audit.model}, router=RulesRouter([], default="nested"),
                        checkpoint=tmp_path / "c.sqlite")
    huge = json.dumps({"data": {}})[:-2] + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(RequestTooLargeError):
        await graph.ainvoke(huge)
    deep = '{"data": {"a": ' + "[" * 3000 + "]" * 3000 + "}}"  # fits the window, deeper than pydantic allows
    result = await graph.ainvoke(deep)
    assert (result.status, result.escalation_reason) == ("escalation_needed", "bad_input")
    assert audit.model.calls == []
    assert audit.over_budget == 0


def test_the_size_check_counts_only_what_could_be_too_large():
    """A prompt whose bytes cannot exceed the window is not tokenised; one that might
    is counted with the model's own tokenizer, and refused only when it is over."""
    from slmgraph._context import check_fits
    from slmgraph.models._base import Message

    counted: list[str] = []

    class Dense(FunctionModel):  # a tokenizer of one token per character
        def count_tokens(self, text: str) -> int:
            counted.append(text)
            return len(text)

    model = Dense(lambda m, s: "", context_window=DEFAULT_REPLY_RESERVE + 400)
    check_fits(model, [Message("user", "x" * 90)])  # 4 * (90 + 1) <= 400
    assert counted == []
    check_fits(model, [Message("user", "x" * 300)])  # might be over: counted, and fits
    assert counted == ["x" * 300]
    with pytest.raises(RequestTooLargeError):
        check_fits(model, [Message("user", "x" * 397)])  # 397 + 4 > 400
