"""The extract skill and the contract review graph: verbatim quotes, offsets the
skill computes itself, chunking of long contracts, and escalation."""

from __future__ import annotations

import re

import pytest

from slmgraph import Accepted, ConfigError, EscalationReason, LlamaCppModel, Rejected, RunContext, run_skill
from slmgraph.graphs.contracts import contract_review_graph
from slmgraph.skills._extract import Extraction, extract_skill, locate_quote, split_chunks
from slmgraph.testing import FunctionModel, ScriptedModel

CONTRACT = (
    "SUPPLY AGREEMENT\n\n"
    "The Seller will ship the parts each week.\n\n"
    "Either party may terminate this Agreement with 60 days' written notice.\n\n"
    "This Agreement is governed by the laws of Ireland."
)
TERMINATION = "Either party may terminate this Agreement with 60 days' written notice."
LAW = "This Agreement is governed by the laws of Ireland."


@pytest.fixture(autouse=True)
def _no_checkpoint_files(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the graph's default checkpoint file lands in tmp


def ctx(model) -> RunContext:
    return RunContext(models={"small": model})


def clause(kind: str, quote: str) -> dict:
    return {"type": kind, "quote": quote}


# --- verbatim check and offsets ------------------------------------------------------------


async def test_verbatim_quotes_are_accepted_with_offsets_computed_from_the_text():
    # The model's own offsets (if any) are ignored; surrounding whitespace is trimmed.
    reply = {"clauses": [clause("governing_law", f"  {LAW}\n"), {**clause("termination", TERMINATION), "start": 3}]}
    model = ScriptedModel([reply])
    out = await run_skill(extract_skill(), CONTRACT, ctx(model))
    assert isinstance(out, Accepted)
    got = [(c.type, c.quote, c.start, c.end) for c in out.output.clauses]
    t, g = CONTRACT.index(TERMINATION), CONTRACT.index(LAW)
    assert got == [
        ("termination", TERMINATION, t, t + len(TERMINATION)),  # sorted by position
        ("governing_law", LAW, g, g + len(LAW)),
    ]
    assert all(CONTRACT[c.start:c.end] == c.quote for c in out.output.clauses)
    assert len(model.calls) == 1
    assert "start" not in model.calls[0].schema["$defs"]["FoundClause"]["properties"]  # never asked for


async def test_a_hallucinated_quote_is_re_asked_naming_it():
    fake = "Either party may end this deal at any time."
    model = ScriptedModel([{"clauses": [clause("termination", fake)]}, {"clauses": [clause("termination", TERMINATION)]}])
    out = await run_skill(extract_skill(), CONTRACT, ctx(model))
    assert isinstance(out, Accepted) and [c.quote for c in out.output.clauses] == [TERMINATION]
    repair = model.calls[1].messages[-1].content
    assert fake in repair and "does not occur verbatim" in repair


async def test_a_hallucinated_quote_is_never_returned_and_escalates():
    fake = "The Buyer shall pay within 10 days."
    bad = {"clauses": [clause("governing_law", LAW), clause("payment_terms", fake)]}
    model = ScriptedModel([bad, bad])
    out = await run_skill(extract_skill(max_repairs=1), CONTRACT, ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.FAILED_CHECK
    assert fake in out.detail
    # The draft keeps only the verified clause, located in the text.
    g = CONTRACT.index(LAW)
    assert out.draft == {"clauses": [{"type": "governing_law", "quote": LAW, "start": g, "end": g + len(LAW)}]}
    assert fake not in repr(out.draft)
    assert len(model.calls) == 2


@pytest.mark.parametrize(
    "quote",
    [
        "either party may terminate this Agreement with 60 days' written notice.",  # case differs
        "Either party may terminate this  Agreement with 60 days' written notice.",  # inner spacing differs
        "Either party may terminate this Agreement with 60 days written notice.",  # punctuation dropped
        "terminate",  # occurs, but a fragment
        "   ",
    ],
)
async def test_anything_but_an_exact_whole_clause_fails_the_check(quote):
    model = ScriptedModel([{"clauses": [clause("termination", quote)]}])
    out = await run_skill(extract_skill(max_repairs=0), CONTRACT, ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.FAILED_CHECK
    assert out.draft == {"clauses": []}


async def test_no_clauses_is_an_accepted_empty_answer_and_invalid_types_are_repaired():
    model = ScriptedModel([{"clauses": [clause("warranty", LAW)]}, {"clauses": []}])
    out = await run_skill(extract_skill(), CONTRACT, ctx(model))
    assert isinstance(out, Accepted) and out.output == Extraction(clauses=[])
    assert "type" in model.calls[1].messages[-1].content  # the validation error names the field


async def test_empty_text_is_bad_input_without_a_model_call():
    model = ScriptedModel([])
    out = await run_skill(extract_skill(), "  \n ", ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.BAD_INPUT
    assert model.calls == []


def test_clause_types_are_validated():
    with pytest.raises(ConfigError):
        extract_skill(())
    with pytest.raises(ConfigError):
        extract_skill(["Governing Law"])
    skill = extract_skill(["termination", "indemnification"])
    assert "indemnification" in skill.instructions and "confidentiality" not in skill.instructions


def test_locate_quote_prefers_occurrences_after_a_position():
    text = "Pay now. Pay now. Done."
    assert locate_quote(text, "Pay now.") == (0, 8)
    assert locate_quote(text, "Pay now.", after=1) == (9, 17)
    assert locate_quote(text, "Pay now.", after=18) == (0, 8)  # else the first anywhere
    assert locate_quote(text, "pay now.") is None
    assert locate_quote(text, " \n") is None


async def test_a_repeated_quote_maps_to_successive_occurrences():
    text = "Fees are due monthly in advance.\n\nFees are due monthly in advance."
    q = "Fees are due monthly in advance."
    model = ScriptedModel([{"clauses": [clause("payment_terms", q), clause("payment_terms", q)]}])
    out = await run_skill(extract_skill(), text, ctx(model))
    assert isinstance(out, Accepted)
    assert [(c.start, c.end) for c in out.output.clauses] == [(0, len(q)), (len(q) + 2, 2 * len(q) + 2)]


# --- chunking ------------------------------------------------------------------------------


def words(s: str) -> int:
    return len(s.split())


def test_split_chunks_keeps_paragraphs_whole_overlaps_and_covers_the_text():
    paras = [f"Paragraph {i} " + "word " * 6 + "end." for i in range(10)]  # 9 words each
    text = "\n\n".join(paras)
    chunks = split_chunks(text, 30, words)
    assert len(chunks) > 1
    for a, b in chunks:
        assert words(text[a:b]) <= 30
        assert text[a:b].startswith("Paragraph") and text[a:b].endswith("end.")  # whole paragraphs
    for (a1, b1), (a2, b2) in zip(chunks, chunks[1:]):
        assert a1 < a2 < b1 < b2  # each chunk repeats the end of the one before
    assert chunks[0][0] == 0 and chunks[-1][1] == len(text)
    assert all(any(a <= text.index(p) and text.index(p) + len(p) <= b for a, b in chunks) for p in paras)


def test_split_chunks_splits_an_oversized_paragraph_by_sentences_then_characters():
    text = "One two three. Four five six. Seven eight nine.\n\n" + "x" * 50
    chunks = split_chunks(text, 4, words)
    pieces = [text[a:b] for a, b in chunks]
    assert pieces == ["One two three.", "Four five six.", "Seven eight nine.\n\n" + "x" * 50]
    chars = split_chunks("y" * 100, 10, len)
    assert all(b - a <= 10 for a, b in chars) and chars[0][0] == 0 and chars[-1][1] == 100


def long_contract(n: int) -> tuple[str, list[str]]:
    paras, clauses = [], []
    for i in range(n):
        paras.append(f"Section {i}. The parties agree on operational detail number {i} " + "and related matters " * 8 + ".")
        if i % 3 == 1:
            q = f"Either party may terminate section {i} with {i} days of notice."
            paras[-1] += " " + q
            clauses.append(q)
    return "\n\n".join(paras), clauses


def finder(messages, schema):
    """A fake model that quotes every termination sentence in the chunk it is shown."""
    chunk = messages[-1].content
    return {"clauses": [clause("termination", q) for q in re.findall(r"Either party may terminate[^.]*\.", chunk)]}


async def test_a_long_contract_is_chunked_and_offsets_shift_to_the_whole_document():
    text, expected = long_contract(24)
    model = FunctionModel(finder, context_window=1600)
    assert model.count_tokens(text) > model.context_window  # could never fit one prompt
    out = await run_skill(extract_skill(chunk_tokens=200), text, ctx(model))
    assert isinstance(out, Accepted)
    assert len(model.calls) > 3
    for call in model.calls:  # every chunk fit, with room to reply
        assert sum(model.count_tokens(m.content) + 4 for m in call.messages) <= 1600 - 256
    got = out.output.clauses
    assert [c.quote for c in got] == expected  # each once, in document order, overlaps merged
    assert all(text[c.start:c.end] == c.quote for c in got)
    assert [c.start for c in got] == [text.index(q) for q in expected]
    seen = sum(len(finder(c.messages, None)["clauses"]) for c in model.calls)
    assert seen > len(expected)  # some clause sat in an overlap and was reported twice


async def test_overlapping_spans_of_one_type_are_merged_into_their_union():
    text = "Alpha beta gamma delta epsilon zeta eta theta."
    model = ScriptedModel([{"clauses": [clause("termination", "Alpha beta gamma delta"), clause("termination", "gamma delta epsilon zeta"),
                                        clause("confidentiality", "gamma delta epsilon")]}])
    out = await run_skill(extract_skill(), text, ctx(model))
    assert isinstance(out, Accepted)
    got = [(c.type, c.quote, c.start, c.end) for c in out.output.clauses]
    assert got == [("termination", "Alpha beta gamma delta epsilon zeta", 0, 35),
                   ("confidentiality", "gamma delta epsilon", 11, 30)]


async def test_a_rejected_chunk_escalates_the_contract_and_later_chunks_are_skipped():
    text, expected = long_contract(24)

    def liar(messages, schema):
        chunk = [m.content for m in messages if m.role == "user" and m.content.startswith("Section")][-1]
        if "Section 7." in chunk:
            return {"clauses": [clause("termination", "Either party may walk away whenever it likes.")]}
        return finder(messages, schema)

    model = FunctionModel(liar, context_window=1600)
    out = await run_skill(extract_skill(chunk_tokens=200, concurrency=1), text, ctx(model))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.FAILED_CHECK
    assert re.search(r"chunk \d+ of \d+ \(characters \d+-\d+\)", out.detail)
    assert "walk away" in out.detail and "walk away" not in repr(out.draft)
    shown = [c.messages[-1].content for c in model.calls]
    assert "Section 23." not in "".join(shown)  # chunks after the failure never ran
    assert all(text[c["start"]:c["end"]] == c["quote"] for c in out.draft["clauses"])
    assert out.draft["clauses"] and {c["quote"] for c in out.draft["clauses"]} <= set(expected)


async def test_a_context_window_too_small_for_the_prompt_is_a_config_error():
    with pytest.raises(ConfigError):
        await run_skill(extract_skill(), CONTRACT, ctx(ScriptedModel([], context_window=400)))


# --- the contract review graph -------------------------------------------------------------


async def test_contract_review_graph_answers_with_clauses_and_offsets():
    small = ScriptedModel([{"clauses": [clause("termination", TERMINATION)]}])
    r = await contract_review_graph({"small": small}).ainvoke(CONTRACT)
    t = CONTRACT.index(TERMINATION)
    assert (r.status, r.route) == ("answered", "extract")
    assert r.output_json == {"clauses": [{"type": "termination", "quote": TERMINATION, "start": t, "end": t + len(TERMINATION)}]}
    assert r.answer == f"termination [{t}:{t + len(TERMINATION)}]: {TERMINATION}"
    assert [e.skill for e in r.ledger] == ["extract"]


async def test_contract_review_graph_escalates_a_hallucination_with_only_verified_clauses():
    bad = {"clauses": [clause("termination", TERMINATION), clause("governing_law", "Governed by the laws of Mars.")]}
    small = ScriptedModel([bad, bad])
    large = ScriptedModel([{"action": "final", "answer": "termination: " + TERMINATION}], name="big")
    r = await contract_review_graph({"small": small, "large": large}).ainvoke(CONTRACT)
    assert (r.status, r.escalation_reason) == ("escalated", "failed_check")
    assert [c["quote"] for c in r.draft["clauses"]] == [TERMINATION]
    brief = large.calls[0].messages[-1].content
    assert "failed_check" in brief and "Mars" in brief  # the large model is told which quote failed
    alone = await contract_review_graph({"small": ScriptedModel([bad, bad])}).ainvoke(CONTRACT)
    assert alone.status == "escalation_needed" and alone.answer is None and alone.output_json is None


async def test_contract_review_graph_takes_a_contract_longer_than_the_small_context():
    text, expected = long_contract(24)
    small = FunctionModel(finder, context_window=1600)
    g = contract_review_graph({"small": small}, clause_types=["termination"])
    r = await g.ainvoke(text)
    assert r.status == "answered"
    assert [c["quote"] for c in r.output_json["clauses"]] == expected
    assert all(text[c["start"]:c["end"]] == c["quote"] for c in r.output_json["clauses"])
    assert len(r.ledger) == len(small.calls) > 3


# --- the real embedded model ---------------------------------------------------------------


@pytest.mark.embedded
async def test_real_model_returns_only_verbatim_quotes_or_escalates():
    text = "Either party may terminate this Agreement with 30 days' written notice.\n\nThis Agreement is governed by the laws of Spain."
    model = LlamaCppModel()
    out = await run_skill(extract_skill(["termination", "governing_law"], max_repairs=0), text, ctx(model))
    if isinstance(out, Accepted):
        for c in out.output.clauses:
            assert text[c.start:c.end] == c.quote and c.type in ("termination", "governing_law")
    else:
        assert out.reason in (EscalationReason.FAILED_CHECK, EscalationReason.INVALID_OUTPUT)
        assert all(text[c["start"]:c["end"]] == c["quote"] for c in out.draft["clauses"])
    assert out.attempts == 1
