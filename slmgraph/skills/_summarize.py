"""The ``summarize`` skill: map-reduce summaries of documents longer than the small
model's context window.

The document is cut into chunks by token count (the bound model's tokenizer and
window, leaving room for the instructions and the reply), each chunk is summarised
on the small model (map, concurrently), and the partial summaries are combined
(reduce). Every partial summary passes a cheap check (a few words, shorter than
its text, naming one of its most frequent terms) or is re-asked. While the partial summaries together are still too long for one prompt,
they are combined in groups, for at most ``max_rounds`` rounds; after that the
request escalates, as it does when the final summary fails the acceptance check.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from .._context import DEFAULT_REPLY_RESERVE, RunContext
from .._errors import ConfigError
from ..models._base import Model
from ._run import run_skill, skill_messages
from ._skill import AcceptancePolicy, Accepted, EscalationReason, Rejected, Skill, TextInput

__all__ = ["COMMAND_PATTERN", "SummaryOutput", "PartSummary", "summarize_skill", "split_into_chunks", "summary_problem"]


class PartSummary(BaseModel):
    """What the small model writes for one chunk, or for a group of partial summaries."""

    summary: str = Field(max_length=600, description="a faithful summary in your own words, at most three sentences")


class SummaryOutput(BaseModel):
    """The summary of a whole document."""

    summary: str
    chunks: int = Field(description="how many chunks the document was cut into")
    rounds: int = Field(description="how many reduce rounds combined the chunk summaries (0: one chunk)")


_MAP = (
    "You summarise documents. The user sends one part of a longer document. Write a "
    "faithful summary of this part in your own words, in at most three sentences: keep "
    "names, numbers and decisions; do not copy sentences; add nothing that is not in the text."
)
_REDUCE = (
    "You combine partial summaries of consecutive parts of one document into a single "
    "summary of the whole document, in at most four sentences. Cover every part, keep "
    "names, numbers and decisions, and add nothing that is not in the parts."
)
#: A leading summarise command ("summarize:", "please summarise this report:", "tl;dr:").
COMMAND_PATTERN = r"^\s*(?:please\s+)?(?:summari[sz]e|tl;?dr)\b[^\n:]{0,40}?(?::|\s-\s)"
_COMMAND = re.compile(COMMAND_PATTERN + r"\s*", re.IGNORECASE)
_PART_HEADER = re.compile(r"^Part \d+ of \d+:\n")
#: Per-message overhead counted by the context size check.
_PER_MESSAGE = 4
_MIN_CHUNK = 64


def _budget(model: Model, skill: Skill, max_repairs: int) -> int:
    """Tokens a chunk may take so that the prompt, the reply and (with repairs) one
    repair turn fit the model's window."""
    overhead = sum(model.count_tokens(m.content) + _PER_MESSAGE for m in skill_messages(skill, TextInput(text="")))
    repair = DEFAULT_REPLY_RESERVE + 64 if max_repairs else 0
    return model.context_window - DEFAULT_REPLY_RESERVE - overhead - repair - 16


_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_into_chunks(text: str, budget: int, count_tokens: Callable[[str], int]) -> list[str]:
    """Cut ``text`` into chunks of at most ``budget`` tokens, at paragraph, then
    sentence, then word boundaries (a word longer than the budget is cut by characters).

    Raises:
        ConfigError: ``budget`` is too small to hold any text.
    """
    if budget < 1:
        raise ConfigError("summarize", f"no room for text in the prompt (budget {budget} tokens)")

    def pieces(block: str, level: int) -> list[str]:
        if count_tokens(block) <= budget:
            return [block]
        if level == 0:
            parts = [p.strip() for p in _PARAGRAPH.split(block) if p.strip()]
        elif level == 1:
            parts = [p for p in _SENTENCE.split(block) if p]
        elif level == 2:
            parts = block.split()
        else:  # one huge "word": cut by characters
            step = max(1, len(block) * budget // (2 * count_tokens(block)))
            return [block[i:i + step] for i in range(0, len(block), step)]
        if len(parts) <= 1:
            return pieces(block, level + 1)
        return [q for p in parts for q in pieces(p, level + 1)]

    parts = pieces(text.strip(), 0) if text.strip() else []
    if not parts:
        return []
    # Even chunks: as many as the budget needs, each about the same size, so no
    # prompt is fuller than it has to be.
    total = count_tokens(" ".join(parts))
    n = -(-total // budget)
    limit = min(budget, -(-total * 23 // (20 * n)))  # 15% slack over an even share
    chunks: list[str] = []
    current: list[str] = []
    for piece in parts:
        candidate = " ".join([*current, piece])
        if current and count_tokens(candidate) > limit:
            chunks.append(" ".join(current))
            current = [piece]
        else:
            current.append(piece)
    if current:
        chunks.append(" ".join(current))
    return chunks


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOP = frozenset(
    "that this with from have were they their there which would about into than then them these those "
    "will been also more most some such when what where while your yours each other only over very just "
    "after before being both could does doing down further here itself many might must once same should "
    "under until upon whom whose within without again because between during through above below".split()
)


def _terms(text: str) -> list[str]:
    return [w.lower().rstrip("s'") for w in _WORD.findall(text) if w.lower() not in _STOP]


def _shingles(words: Sequence[str], n: int = 6) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def summary_problem(source: str, chunks: Sequence[str], summary: str, count_tokens: Callable[[str], int]) -> str | None:
    """The acceptance check of a final summary: ``None`` if it stands, else why not.

    A summary must have at least three words, be shorter than the source, mention
    at least one of the source's five most frequent content words, and, for a
    document of several chunks, must not be a copy of the first chunk.
    """
    words = summary.split()
    if len(words) < 3:
        return "the summary is empty or shorter than three words"
    if count_tokens(summary) >= count_tokens(source):
        return "the summary is not shorter than the document"
    key = [t for t, _ in Counter(_terms(source)).most_common(5)]
    if key and not set(key) & set(_terms(summary)):
        return f"the summary mentions none of the document's key terms ({', '.join(key)})"
    if len(chunks) > 1 and len(words) >= 12:
        mine = _shingles([w.lower() for w in words])
        first = _shingles([w.lower() for w in chunks[0].split()])
        if mine and len(mine & first) / len(mine) >= 0.6:
            return "the summary copies the first part of the document instead of covering all of it"
    return None


def summarize_skill(
    *, model: str = "small", chunk_tokens: int = 768, max_rounds: int = 3, max_repairs: int = 1, concurrency: int = 4,
) -> Skill:
    """Summarise a document of any length on a small model (map-reduce).

    Args:
        model: binding key of the model that writes the summaries.
        chunk_tokens: the most tokens of text in one prompt (less when the model's
            window is smaller). Small models summarise short passages better, and
            a short prompt is evaluated faster.
        max_rounds: reduce rounds allowed before a still-too-long set of partial
            summaries escalates.
        max_repairs: re-asks per summary call after invalid output or a failed check.
        concurrency: chunk summaries in flight at once (an embedded engine runs
            them one at a time anyway).

    The input is the document as text; a leading "summarize:" is dropped. The output
    is a :class:`SummaryOutput`; the run's answer is the summary text.
    """
    if max_rounds < 1:
        raise ConfigError("summarize.max_rounds", "must be >= 1")
    if chunk_tokens < _MIN_CHUNK:
        raise ConfigError("summarize.chunk_tokens", f"must be >= {_MIN_CHUNK}")
    if concurrency < 1:
        raise ConfigError("summarize.concurrency", "must be >= 1")

    async def runner(skill: Skill, data: TextInput, ctx: RunContext, node: str) -> Accepted | Rejected:
        source = _COMMAND.sub("", data.text, count=1).strip()
        bound = ctx.model(skill.model)
        def part_check(part: TextInput, out: PartSummary) -> str | None:
            text = _PART_HEADER.sub("", part.text, count=1)
            return summary_problem(text, [text], out.summary, bound.count_tokens)

        policy = AcceptancePolicy(max_repairs=max_repairs, check=part_check)
        mapper = Skill(name=f"{skill.name}_map", description="summarise one part", instructions=_MAP,
                       output_type=PartSummary, acceptance=policy, model=skill.model)
        reducer = mapper.clone(name=f"{skill.name}_reduce", instructions=_REDUCE)
        room = min(_budget(bound, mapper, max_repairs), _budget(bound, reducer, max_repairs))
        budget = min(room, chunk_tokens)
        if room < _MIN_CHUNK:
            raise ConfigError(f"models.{skill.model}", f"a context window of {bound.context_window} tokens "
                              "leaves no room to summarise; bind a model with a larger window")
        if not source:
            return Rejected(EscalationReason.BAD_INPUT, "there is no text to summarise", data.text, 0)
        chunks = split_into_chunks(source, budget, bound.count_tokens)
        calls = 0
        gate = asyncio.Semaphore(concurrency)

        def check(_: TextInput, out: PartSummary) -> str | None:
            return summary_problem(source, chunks, out.summary, bound.count_tokens)

        async def one(sub: Skill, text: str) -> Accepted | Rejected:
            nonlocal calls
            async with gate:
                calls += 1
                return await run_skill(sub, text, ctx, node=node)

        if len(chunks) == 1:
            single = await one(mapper.clone(acceptance=AcceptancePolicy(max_repairs=max_repairs, check=check)), source)
            return _finish(single, chunks, 0, calls, [])
        outcomes = await asyncio.gather(*(
            one(mapper, f"Part {i} of {len(chunks)}:\n{c}") for i, c in enumerate(chunks, 1)
        ))
        failed = [(i, out) for i, out in enumerate(outcomes, 1) if isinstance(out, Rejected)]
        if failed:
            i, out = failed[0]
            return Rejected(
                out.reason,
                f"{len(failed)} of {len(chunks)} parts could not be summarised; part {i}: {out.detail}",
                {"partial_summaries": [o.output.summary if isinstance(o, Accepted) else None for o in outcomes],
                 "failed_drafts": {str(j): o.draft for j, o in failed}, "chunks": len(chunks)},
                calls,
            )
        parts = [out.output.summary for out in outcomes]  # type: ignore[union-attr]
        final = reducer.clone(acceptance=AcceptancePolicy(max_repairs=max_repairs, check=check))
        for rounds in range(1, max_rounds + 1):
            combined = _join(parts)
            if bound.count_tokens(combined) <= budget:
                return _finish(await one(final, combined), chunks, rounds, calls, parts)
            if rounds == max_rounds:
                break
            groups = _groups(parts, budget, bound.count_tokens)
            if len(groups) >= len(parts):
                break  # no group holds two summaries: another round cannot shrink them
            merged = await asyncio.gather(*(one(reducer, _join(g)) for g in groups))
            for out in merged:
                if isinstance(out, Rejected):
                    return Rejected(out.reason, f"combining the partial summaries failed: {out.detail}",
                                    {"partial_summaries": parts, "chunks": len(chunks), "rounds": rounds}, calls)
            parts = [out.output.summary for out in merged]  # type: ignore[union-attr]
        need = bound.count_tokens(_join(parts))
        return Rejected(
            EscalationReason.FAILED_CHECK,
            f"the combined summaries still take {need} tokens after {rounds} reduce round(s); "
            f"one prompt holds {budget}",
            {"partial_summaries": parts, "chunks": len(chunks)},
            calls,
        )

    return Skill(
        name="summarize",
        description="summarise a document, article, report or long text, even one longer than the model's context",
        instructions=_MAP,
        output_type=SummaryOutput,
        model=model,
        runner=runner,
        render=lambda o: o.summary,
    )


def _join(parts: Sequence[str]) -> str:
    return "\n\n".join(f"Part {i}: {p}" for i, p in enumerate(parts, 1))


def _groups(parts: Sequence[str], budget: int, count: Callable[[str], int]) -> list[list[str]]:
    groups: list[list[str]] = []
    for part in parts:
        if groups and count(_join([*groups[-1], part])) <= budget:
            groups[-1].append(part)
        else:
            groups.append([part])
    return groups


def _finish(out: Accepted | Rejected, chunks: Sequence[str], rounds: int, calls: int, parts: list[str]) -> Accepted | Rejected:
    if isinstance(out, Rejected):
        summary = out.draft.get("summary", out.draft) if isinstance(out.draft, dict) else out.draft
        draft = {"summary": summary, "partial_summaries": parts, "chunks": len(chunks), "rounds": rounds}
        return Rejected(out.reason, f"the final summary was not accepted: {out.detail}", draft, calls, out.confidence)
    return Accepted(SummaryOutput(summary=out.output.summary, chunks=len(chunks), rounds=rounds), out.confidence, calls)
