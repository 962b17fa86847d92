"""The summarize skill: chunking by tokens, map, hierarchical reduce, escalation."""

from __future__ import annotations

import asyncio

import pytest

from slmgraph import Accepted, EscalationReason, Rejected, RunContext, build_graph, run_skill
from slmgraph._context import DEFAULT_REPLY_RESERVE
from slmgraph.skills._summarize import SummaryOutput, split_into_chunks, summarize_skill, summary_problem
from slmgraph.testing import FunctionModel, ScriptedModel

TOPICS = ("harbour", "library", "tram", "market", "park", "school")


def document(paragraphs: int) -> str:
    return "\n\n".join(
        f"Meeting {i}. The council discussed the {t} plan in detail. Residents asked about the {t} "
        f"budget, the timeline and the noise. The council agreed to publish a report on the {t} next month."
        for i, t in ((i, TOPICS[i % len(TOPICS)]) for i in range(1, paragraphs + 1))
    )


def is_map(messages) -> bool:
    return messages[0].content.startswith("You summarise documents")


def summarizer(map_reply=None, reduce_reply=None, **kw) -> FunctionModel:
    """Map calls answer with a short summary naming the part; reduce calls with a
    summary that names the council (the document's most frequent term)."""

    def fn(messages, schema):
        if is_map(messages):
            return {"summary": map_reply or "The council discussed a local plan and a report."}
        return {"summary": reduce_reply or "The council reviewed plans for the harbour, library and tram."}

    return FunctionModel(fn, **kw)


def prompt_tokens(model, call) -> int:
    return sum(model.count_tokens(m.content) + 4 for m in call.messages)


def map_inputs(model) -> list[str]:
    return [c.messages[-1].content.split("\n", 1)[1] for c in model.calls if is_map(c.messages)]


async def test_a_short_document_is_summarised_in_one_call():
    text = document(2)
    small = ScriptedModel([{"summary": "The council discussed the harbour and library plans."}])
    out = await run_skill(summarize_skill(), f"summarize: {text}", RunContext({"small": small}))
    assert isinstance(out, Accepted)
    assert out.output == SummaryOutput(summary="The council discussed the harbour and library plans.", chunks=1, rounds=0)
    assert len(small.calls) == 1
    assert small.calls[0].messages[-1].content == text  # the "summarize:" command is dropped


async def test_a_long_document_is_chunked_so_every_prompt_fits_the_window():
    text = document(40)
    small = summarizer(context_window=1024)
    assert small.count_tokens(text) > 2 * small.context_window
    out = await run_skill(summarize_skill(), text, RunContext({"small": small}))
    assert isinstance(out, Accepted) and out.output.chunks > 3
    for call in small.calls:
        assert prompt_tokens(small, call) <= small.context_window - DEFAULT_REPLY_RESERVE
    # the map prompts hold the whole document, in order, once
    assert " ".join(map_inputs(small)).split() == text.split()
    assert len(map_inputs(small)) == out.output.chunks


async def test_map_summaries_run_concurrently_within_the_limit():
    in_flight, peak = 0, 0

    async def fn(messages, schema):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return {"summary": "The council discussed a plan." if is_map(messages) else "The council met about plans."}

    small = FunctionModel(fn, context_window=1024)
    out = await run_skill(summarize_skill(concurrency=3), document(30), RunContext({"small": small}))
    assert isinstance(out, Accepted)
    assert peak == 3


async def test_chunk_tokens_caps_each_prompt_below_a_large_window():
    small = summarizer()  # an 8,192-token window
    out = await run_skill(summarize_skill(chunk_tokens=300), document(40), RunContext({"small": small}))
    assert isinstance(out, Accepted) and out.output.chunks >= 8
    assert all(small.count_tokens(text) <= 300 for text in map_inputs(small))


async def test_a_part_that_cannot_be_summarised_escalates_and_keeps_the_other_parts():
    def fn(messages, schema):
        if any(m.content.startswith("Part 2 of") for m in messages):
            return {"summary": 42}
        return {"summary": "The council discussed a plan."}

    small = FunctionModel(fn, context_window=1024)
    out = await run_skill(summarize_skill(), document(12), RunContext({"small": small}))
    assert isinstance(out, Rejected) and out.reason == EscalationReason.INVALID_OUTPUT
    assert out.detail.startswith("1 of ") and "part 2:" in out.detail
    parts = out.draft["partial_summaries"]
    assert parts[1] is None and parts[0] == parts[2] == "The council discussed a plan."
    assert out.draft["failed_drafts"] == {"2": {"summary": 42}}
    assert all(is_map(c.messages) for c in small.calls)


async def test_a_partial_summary_that_ignores_its_part_is_re_asked():
    replies = iter(["Part 1 of 2", "The council discussed the harbour plan."])

    def fn(messages, schema):
        if is_map(messages) and "Part 1 of" in messages[1].content:
            return {"summary": next(replies)}
        if is_map(messages):
            return {"summary": "The council discussed the library budget."}
        return {"summary": "The council discussed the harbour and library plans."}

    small = FunctionModel(fn, context_window=1024)
    out = await run_skill(summarize_skill(chunk_tokens=200), document(4), RunContext({"small": small}))
    assert isinstance(out, Accepted) and out.output.chunks == 2
    retry = [c for c in small.calls if is_map(c.messages) and len(c.messages) > 2]
    assert len(retry) == 1 and "mentions none of the document's key terms" in retry[0].messages[-1].content


async def test_reduce_is_hierarchical_while_the_summaries_do_not_fit():
    long_part = "The council discussed the plan, its budget, its timeline, the noise and the report. " * 2
    small = summarizer(map_reply=long_part, context_window=1024)
    out = await run_skill(summarize_skill(max_rounds=4), document(60), RunContext({"small": small}))
    assert isinstance(out, Accepted) and out.output.rounds >= 2
    reduce_calls = [c for c in small.calls if not is_map(c.messages)]
    assert len(reduce_calls) > 1
    # the last call combined the outputs of the previous round, not the chunk summaries
    assert "council reviewed plans" in reduce_calls[-1].messages[-1].content
    assert all(prompt_tokens(small, c) <= small.context_window - DEFAULT_REPLY_RESERVE for c in small.calls)


async def test_reduce_escalates_when_the_summaries_are_still_too_long():
    long_part = "The council discussed the plan, its budget, its timeline, the noise and the report. " * 2
    small = summarizer(map_reply=long_part, context_window=1024)
    out = await run_skill(summarize_skill(max_rounds=1), document(40), RunContext({"small": small}))
    assert isinstance(out, Rejected) and out.reason == EscalationReason.FAILED_CHECK
    assert "still take" in out.detail and "1 reduce round" in out.detail
    assert out.draft["partial_summaries"] == [long_part] * out.draft["chunks"]
    assert all(is_map(c.messages) for c in small.calls)  # nothing was combined


async def test_reduce_that_cannot_shrink_the_summaries_escalates():
    huge = "The council discussed the plan and the budget at length. " * 9
    small = summarizer(map_reply=huge, reduce_reply=huge, context_window=1024)
    out = await run_skill(summarize_skill(max_rounds=5), document(30), RunContext({"small": small}))
    assert isinstance(out, Rejected) and "still take" in out.detail


async def test_a_final_summary_that_copies_the_first_part_is_repaired_then_escalated():
    text = document(30)
    copy = None

    def fn(messages, schema):
        nonlocal copy
        if is_map(messages):
            copy = copy or messages[-1].content.split("\n", 1)[1][:400]
            return {"summary": "The council discussed a local plan."}
        return {"summary": copy}

    small = FunctionModel(fn, context_window=1024)
    g = build_graph([summarize_skill()], models={"small": small}, checkpoint=None)
    out = await run_skill(g.skills["summarize"], text, RunContext({"small": small}))
    assert isinstance(out, Rejected) and out.reason == EscalationReason.FAILED_CHECK
    assert "copies the first part" in out.detail
    assert out.draft["summary"] == copy and out.draft["chunks"] > 1
    finals = [c for c in small.calls if not is_map(c.messages)]
    assert len(finals) == 2 and "fails a check" in finals[1].messages[-1].content


async def test_the_graph_answers_with_the_summary_text():
    small = ScriptedModel([{"summary": "The council discussed two plans."}])
    g = build_graph([summarize_skill()], models={"small": small}, checkpoint=None)
    r = await g.ainvoke(f"summarize: {document(2)}")
    assert (r.status, r.answer) == ("answered", "The council discussed two plans.")
    assert r.output_json == {"summary": "The council discussed two plans.", "chunks": 1, "rounds": 0}
    assert [e.skill for e in r.ledger] == ["summarize_map"]


async def test_an_off_topic_summary_escalates_through_the_graph():
    small = ScriptedModel([{"summary": "Cats are popular pets in many homes."}], repeat_last=True)
    g = build_graph([summarize_skill()], models={"small": small}, checkpoint=None)
    r = await g.ainvoke(document(2))
    assert (r.status, r.escalation_reason) == ("escalation_needed", "failed_check")
    assert "key terms" in r.escalation_detail and "council" in r.escalation_detail


def test_summary_problem_catches_the_typical_failures():
    text = document(6)
    chunks = split_into_chunks(text, 150, len)
    count = len
    assert summary_problem(text, chunks, "The council discussed six local plans.", count) is None
    assert "three words" in summary_problem(text, chunks, "  ", count)
    assert "not shorter" in summary_problem("The council met.", ["The council met."], "The council met again today.", count)
    assert "key terms" in summary_problem(text, chunks, "Something happened somewhere.", count)
    assert "copies the first part" in summary_problem(text, chunks, chunks[0], count)


def test_chunks_respect_the_budget_and_keep_every_word_in_order():
    text = document(12) + "\n\n" + "x" * 500 + " tail words here."
    count = ScriptedModel().count_tokens
    chunks = split_into_chunks(text, 60, count)
    assert all(count(c) <= 60 for c in chunks)
    even = [count(c) for c in split_into_chunks(document(12), 200, count)]
    assert len(even) > 2 and min(even) >= 0.6 * max(even)  # no tiny leftover chunk
    assert "".join("".join(chunks).split()) == "".join(text.split())
    with pytest.raises(Exception, match="no room"):
        split_into_chunks(text, 0, count)


async def test_a_window_too_small_to_summarise_is_a_config_error():
    from slmgraph import ConfigError

    with pytest.raises(ConfigError, match="larger window"):
        await run_skill(summarize_skill(), document(2), RunContext({"small": ScriptedModel([], context_window=512)}))


async def test_an_empty_document_is_bad_input():
    out = await run_skill(summarize_skill(), "summarize:   ", RunContext({"small": ScriptedModel([])}))
    assert isinstance(out, Rejected) and out.reason == EscalationReason.BAD_INPUT


# -- the real embedded model ----------------------------------------------------------


@pytest.fixture(scope="module")
def smol():
    from slmgraph import LlamaCppModel

    return LlamaCppModel()


@pytest.mark.embedded
def test_chunks_fit_by_the_real_tokenizer(smol):
    text = document(50)
    assert smol.count_tokens(text) > smol.context_window
    chunks = split_into_chunks(text, 500, smol.count_tokens)
    assert len(chunks) > 2 and all(smol.count_tokens(c) <= 500 for c in chunks)


@pytest.mark.embedded
async def test_embedded_summary_is_valid_or_escalates(smol):
    text = document(3)
    ctx = RunContext({"small": smol})
    out = await run_skill(summarize_skill(), f"summarize: {text}", ctx)
    assert 1 <= len(ctx.recorder.dump()) <= 2  # one call, at most one repair
    if isinstance(out, Accepted):
        assert (out.output.chunks, out.output.rounds) == (1, 0)
        assert summary_problem(text, [text], out.output.summary, smol.count_tokens) is None
    else:
        assert out.reason in (EscalationReason.FAILED_CHECK, EscalationReason.INVALID_OUTPUT)
        assert out.detail and out.draft["chunks"] == 1
