"""The extract skill: find contract clauses of given types, each with a verbatim
quote and its character offsets.

A small model is asked only for each clause's type and quote. The skill then
locates every quote in the text itself: a quote that does not occur verbatim is a
failed check (re-asked once with the quote named, then the request escalates), so
a hallucinated quote is never returned, and offsets never come from the model.
A contract longer than the model's context window is split into overlapping
chunks of whole paragraphs; each chunk is extracted and checked on its own, its
offsets are shifted to the whole document, and the results are merged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from .._context import DEFAULT_REPLY_RESERVE
from .._errors import ConfigError
from ._run import run_skill, skill_messages
from ._skill import Accepted, AcceptancePolicy, EscalationReason, Example, Rejected, Skill, TextInput

__all__ = ["extract_skill", "Clause", "Extraction", "DEFAULT_CLAUSE_TYPES", "split_chunks", "locate_quote"]

#: The clause types looked for when none are given.
DEFAULT_CLAUSE_TYPES: tuple[str, ...] = (
    "termination",
    "governing_law",
    "limitation_of_liability",
    "confidentiality",
    "payment_terms",
)

# What each well-known type means, for the prompt; other types are shown by name.
_MEANINGS = {
    "termination": "how or when the agreement can be ended",
    "governing_law": "which law or courts govern the agreement",
    "limitation_of_liability": "caps on or exclusions of a party's liability or damages",
    "confidentiality": "keeping information secret",
    "payment_terms": "fees, invoices, when and how payment is due",
    "indemnification": "one party covering another's losses or claims",
    "assignment": "transferring the agreement to someone else",
}

_EXAMPLE_TEXT = (
    "The Supplier will deliver the goods to the Buyer's warehouse.\n\n"
    "Either party may terminate this Agreement with 30 days' written notice.\n\n"
    "The Buyer shall pay each invoice within 15 days of receipt."
)
_EXAMPLE_QUOTES = {
    "termination": "Either party may terminate this Agreement with 30 days' written notice.",
    "payment_terms": "The Buyer shall pay each invoice within 15 days of receipt.",
}

#: Tokens kept free for one repair turn (the model's reply plus the re-ask).
_REPAIR_ROOM = 256 + 96
_MIN_CHUNK_TOKENS = 48


class Clause(BaseModel):
    """One clause found: its type, the quote as it appears in the text, and where.

    ``text[start:end] == quote`` always holds for the text the skill was given.
    """

    type: str
    quote: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class Extraction(BaseModel):
    """The clauses found, in document order."""

    clauses: list[Clause] = Field(default_factory=list)


def locate_quote(text: str, quote: str, *, after: int = 0) -> tuple[int, int] | None:
    """Where ``quote`` (surrounding whitespace ignored) occurs verbatim in ``text``.

    Prefers the first occurrence at or after ``after``, else the first anywhere.
    Returns ``(start, end)`` with ``text[start:end] == quote.strip()``, or ``None``.
    """
    needle = quote.strip()
    if not needle:
        return None
    at = text.find(needle, after)
    if at < 0:
        at = text.find(needle)
    return None if at < 0 else (at, at + len(needle))


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_BREAK = re.compile(r"(?<=[.;:!?])\s+")


def _pieces(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[_Span]:
    """Split ``text[start:end]`` at ``pattern``; the separators belong to no piece."""
    out, at = [], start
    for m in pattern.finditer(text, start, end):
        if m.start() > at:
            out.append(_Span(at, m.start()))
        at = m.end()
    if at < end:
        out.append(_Span(at, end))
    return out


def _units(text: str, budget: int, count: Any) -> list[_Span]:
    """Paragraphs; a paragraph over ``budget`` tokens is split into sentences, and a
    sentence still over budget into fixed windows of characters."""
    units: list[_Span] = []
    for para in _pieces(text, 0, len(text), _PARAGRAPH_BREAK):
        if count(text[para.start:para.end]) <= budget:
            units.append(para)
            continue
        for sent in _pieces(text, para.start, para.end, _SENTENCE_BREAK):
            size = count(text[sent.start:sent.end])
            if size <= budget:
                units.append(sent)
                continue
            width = max(1, (sent.end - sent.start) * budget // (size + 1))
            units.extend(_Span(a, min(a + width, sent.end)) for a in range(sent.start, sent.end, width))
    return units


def split_chunks(text: str, budget: int, count: Any = len, *, overlap: int = 1) -> list[tuple[int, int]]:
    """Split ``text`` into chunks of at most ``budget`` tokens (by ``count``), made of
    whole paragraphs where possible; each chunk repeats the last ``overlap``
    paragraphs of the one before, so a clause at a boundary is seen whole.

    Returns:
        ``(start, end)`` character offsets; each chunk is ``text[start:end]``.
    """
    units = _units(text, budget, count)
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        j = i + 1
        while j < len(units) and count(text[units[i].start:units[j].end]) <= budget:
            j += 1
        chunks.append((units[i].start, units[j - 1].end))
        if j >= len(units):
            break
        # Start the next chunk `overlap` units back, but always move forward.
        i = max(i + 1, j - overlap)
    return chunks


def _chunk_output_type(clause_types: Sequence[str]) -> type[BaseModel]:
    kind = Literal.__getitem__(tuple(clause_types))  # type: ignore[attr-defined]
    found = create_model(
        "FoundClause",
        type=(kind, Field(description="the clause type")),
        quote=(str, Field(description="the clause copied exactly, character for character")),
    )
    return create_model("FoundClauses", clauses=(list[found], Field(max_length=12)))  # type: ignore[valid-type]


def _verbatim_check(min_quote_words: int):
    def check(data: TextInput, output: Any) -> str | None:
        problems = []
        for c in output.clauses:
            q = c.quote.strip()
            if locate_quote(data.text, q) is None:
                shown = q if len(q) <= 100 else q[:97] + "..."
                problems.append(f"the quote {shown!r} does not occur verbatim in the text")
            elif len(q.split()) < min_quote_words:
                problems.append(f"the quote {q!r} is a fragment, not a whole clause")
        if not problems:
            return None
        return "; ".join(problems[:3]) + (
            ". Copy each clause exactly as written in the text, character for character, or leave it out"
        )
    return check


def _render(out: Extraction) -> str:
    if not out.clauses:
        return "no clauses of the requested types found"
    return "\n".join(f"{c.type} [{c.start}:{c.end}]: {c.quote}" for c in out.clauses)


def _merge(found: list[Clause], text: str) -> list[Clause]:
    """Drop duplicates; clauses of one type whose spans overlap become their union."""
    merged: list[Clause] = []
    for c in sorted(found, key=lambda c: (c.type, c.start, -c.end)):
        last = merged[-1] if merged else None
        if last is not None and last.type == c.type and c.start < last.end:
            if c.end > last.end:
                merged[-1] = Clause(type=c.type, quote=text[last.start:c.end], start=last.start, end=c.end)
            continue
        merged.append(c)
    return sorted(merged, key=lambda c: (c.start, c.end, c.type))


def extract_skill(
    clause_types: Sequence[str] = DEFAULT_CLAUSE_TYPES,
    *,
    model: str = "small",
    max_repairs: int = 1,
    chunk_tokens: int = 480,
    min_quote_words: int = 3,
    concurrency: int = 4,
) -> Skill:
    """Find clauses of ``clause_types`` in a contract.

    Input: the contract text. Output: :class:`Extraction`, each :class:`Clause`
    with its type, verbatim quote and ``start``/``end`` character offsets computed
    by the skill (``text[start:end] == quote``).

    Args:
        clause_types: snake_case clause types to look for.
        model: binding key of the model.
        max_repairs: re-asks after a quote that is not in the text, or invalid JSON;
            after that the request escalates (``failed_check`` / ``invalid_output``).
        chunk_tokens: the most contract tokens shown in one call; texts over this, or
            over what the model's context window leaves room for, are chunked.
        min_quote_words: quotes shorter than this are fragments and fail the check.
        concurrency: chunks extracted at once.
    """
    types = tuple(dict.fromkeys(clause_types))
    if not types:
        raise ConfigError("clause_types", "extract needs at least one clause type")
    for t in types:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", t):
            raise ConfigError("clause_types", f"{t!r} must be snake_case")
    if chunk_tokens < _MIN_CHUNK_TOKENS:
        raise ConfigError("chunk_tokens", f"must be at least {_MIN_CHUNK_TOKENS}")
    found_type = _chunk_output_type(types)
    listing = "\n".join(f"- {t}: {_MEANINGS[t]}" if t in _MEANINGS else f"- {t}" for t in types)
    example_quotes = [(t, q) for t, q in _EXAMPLE_QUOTES.items() if t in types]
    examples = [
        Example(_EXAMPLE_TEXT, found_type.model_validate({"clauses": [{"type": t, "quote": q} for t, q in example_quotes]}))
    ] if example_quotes else []
    policy = AcceptancePolicy(max_repairs=max_repairs, check=_verbatim_check(min_quote_words))
    chunk_skill = Skill(
        name="extract",
        description="find contract clauses",
        instructions=(
            "You find clauses in contract text. The clause types are:\n"
            f"{listing}\n"
            "For every clause of these types in the text, give its type and copy the clause "
            "sentence into quote exactly as written, character for character. Never reword "
            "or shorten a quote. Leave out text of other types. If there is none, reply "
            'with {"clauses": []}.'
        ),
        output_type=found_type,
        examples=examples,
        acceptance=policy,
        model=model,
    )

    runner = _ExtractRunner(chunk_skill, types, chunk_tokens, min_quote_words, concurrency)
    return Skill(
        name="extract",
        description="find contract clauses (" + ", ".join(types) + ") and quote each one verbatim with its offsets",
        instructions=chunk_skill.instructions,
        output_type=Extraction,
        acceptance=policy,
        model=model,
        runner=runner,
        render=_render,
    )


class _ExtractRunner:
    """The composite run: chunk, extract and verify each chunk, shift, merge.

    Chunks run ``concurrency`` at a time. After the first rejected chunk, chunks not
    yet started are skipped: the request escalates anyway, so their calls would be
    wasted. The rejection's draft keeps only clauses whose quotes were verified.
    """

    def __init__(self, chunk_skill: Skill, types: tuple[str, ...], chunk_tokens: int, min_words: int, concurrency: int):
        self.chunk_skill = chunk_skill
        self.types = types
        self.chunk_tokens = chunk_tokens
        self.min_words = min_words
        self.concurrency = max(1, concurrency)

    def budget(self, sub: Skill, ctx: Any) -> tuple[int, Any]:
        """Contract tokens per call: what the context window leaves after the prompt,
        the reply and one repair turn, capped at ``chunk_tokens``."""
        bound = ctx.model(sub.model)
        overhead = sum(bound.count_tokens(m.content) + 4 for m in skill_messages(sub, TextInput(text="")))
        budget = min(self.chunk_tokens, bound.context_window - overhead - _REPAIR_ROOM - DEFAULT_REPLY_RESERVE)
        if budget < _MIN_CHUNK_TOKENS:
            raise ConfigError(f"models.{sub.model}", f"a context window of {bound.context_window} tokens leaves "
                              f"no room for contract text after the {overhead}-token extraction prompt")
        return budget, bound.count_tokens

    def located(self, chunk: str, offset: int, pairs: list[tuple[str, str]]) -> list[Clause]:
        """Clauses whose quotes occur verbatim in ``chunk``, with document offsets."""
        clauses, after = [], 0
        for kind, quote in pairs:
            span = locate_quote(chunk, quote, after=after)
            if span is None or kind not in self.types or len(quote.split()) < self.min_words:
                continue  # only possible in a rejected draft; never returned
            after = span[1]
            clauses.append(Clause(type=kind, quote=chunk[span[0]:span[1]], start=offset + span[0], end=offset + span[1]))
        return clauses

    async def __call__(self, skill: Skill, data: BaseModel, ctx: Any, node: str) -> Accepted | Rejected:
        text: str = data.text  # type: ignore[attr-defined]
        if not text.strip():
            return Rejected(EscalationReason.BAD_INPUT, "the contract text is empty", text, 0)
        sub = self.chunk_skill if skill.model == self.chunk_skill.model else self.chunk_skill.clone(model=skill.model)
        budget, count = self.budget(sub, ctx)
        spans = split_chunks(text, budget, count)
        gate = asyncio.Semaphore(self.concurrency)
        failed: list[tuple[int, Rejected]] = []

        async def one(i: int, start: int, end: int) -> tuple[int, list[Clause]]:
            async with gate:
                if failed:
                    return 0, []
                out = await run_skill(sub, TextInput(text=text[start:end]), ctx, node=node)
            if isinstance(out, Accepted):
                pairs = [(c.type, c.quote) for c in out.output.clauses]
            else:
                failed.append((i, out))
                items = out.draft.get("clauses") if isinstance(out.draft, dict) else None
                pairs = [(c.get("type"), c.get("quote")) for c in items or () if isinstance(c, dict)]
                pairs = [(k, q) for k, q in pairs if isinstance(k, str) and isinstance(q, str)]
            return out.attempts, self.located(text[start:end], start, pairs)

        results = await asyncio.gather(*(one(i, a, b) for i, (a, b) in enumerate(spans)))
        merged = Extraction(clauses=_merge([c for _, found in results for c in found], text))
        attempts = sum(n for n, _ in results)
        if not failed:
            return Accepted(merged, None, attempts)
        i, first = min(failed, key=lambda f: f[0])
        where = f"chunk {i + 1} of {len(spans)} (characters {spans[i][0]}-{spans[i][1]})" if len(spans) > 1 else "the text"
        return Rejected(first.reason, f"{where}: {first.detail}", merged.model_dump(), attempts)

