"""Row 23: PII written in Unicode variants (no-break and zero-width characters,
fullwidth digits, dots and line breaks, lower case, a ``00`` prefix, diacritics,
apostrophes, capitals, internationalised addresses) is found on the folded text and
redacted in the original; tool results the escalation agent sends to a remote
model pass the same gate (a real OpenAI wire into a recording server)."""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata

import pytest
from pydantic import BaseModel

from slmgraph import EscalationAgent, Rule, RulesRouter, Skill, build_graph
from slmgraph.models._base import Message
from slmgraph.privacy import (
    GazetteerNameDetector,
    PrivacyGate,
    PrivacyPolicy,
    default_detectors,
    find_pii,
    scrub,
)
from slmgraph.privacy._normalize import fold
from slmgraph.testing import FunctionModel, synthetic_pii_corpus

from test_privacy_egress import Cloud, gated_large

# (kind, value as written) — each a format the gate let through before folding.
VARIANTS = [
    ("iban", "de89 3704 0044 0532 0130 00"),
    ("iban", "DE89-3704-0044-0532-0130-00"),
    ("iban", "gb29-nwbk-6016-1331-9268-19"),
    ("iban", "DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000"),
    ("card", "4111\u00a01111\u00a01111\u00a01111"),
    ("card", "4111.1111.1111.1111"),
    ("card", "4111  1111  1111  1111"),
    ("card", "4111\n1111\n1111\n1111"),
    ("card", "4111\r\n1111\r\n1111\r\n1111"),
    ("card", "41\u200b11\u200b1111\u200b1111\u200b1111"),
    ("card", "４１１１ １１１１ １１１１ １１１１"),
    ("card", "5500\u202f0000\u202f0000\u202f0004"),
    ("card", "3782\u2060822463\u206010005"),
    ("email", "józef.müller@bücher.example"),
    ("email", "почта@пример.испытание"),
    ("email", "用户@例子.测试"),
    ("email", "zoë＠example.com"),
    ("phone", "0044 20 7946 0958"),
    ("phone", "0033 1 23 45 67 89"),
    ("phone", "+44\u00a020\u00a07946\u00a00958"),
    ("phone", "+1\u2011415\u2011555\u20112671"),
    ("name", "José Núñez"),
    ("name", "Zoë O'Brien"),
    ("name", "Seán McDonald"),
    ("name", "Maria O\u2019Neill"),
    ("name", "JOHN SMITH"),
    ("name", "Jose\u0301 Mu\u0308ller"),  # decomposed accents
    ("es_dni", "12345678z"),
    ("es_dni", "x1234567l"),
    ("uk_nino", "ab 12 34 56 c"),
    ("uk_nino", "ab123456c"),
    ("us_ssn", "123\u00a045\u00a06789"),
    ("ca_sin", "130\u2013692\u2013544"),
]


def detectors():
    return default_detectors() + [GazetteerNameDetector()]


@pytest.mark.parametrize(("kind", "value"), VARIANTS, ids=[repr(v) for _, v in VARIANTS])
def test_each_variant_is_found_with_its_original_characters(kind, value):
    text = f"Please note: {value} (thanks)"
    found = [(f.kind, f.value) for f in find_pii(text, detectors())]
    assert found == [(kind, value)]


def test_folding_maps_every_character_back():
    text = 'a\u200bb ４２ e\u0301 — x\\ny “\u00a0”'
    folded = fold(text)
    assert folded.text == "ab 42 é - x\ny “ ”"
    start, end = folded.span(folded.text.index("42"), folded.text.index("42") + 2)
    assert text[start:end] == "４２"
    s, e = folded.span(folded.text.index("\n"), folded.text.index("\n") + 1)
    assert text[s:e] == "\\n"  # a JSON escape maps back to both of its characters
    assert fold("plain ascii text").span(0, 5) == (0, 5)


def test_redaction_replaces_the_original_characters_and_restores_them():
    gate = PrivacyGate(FunctionModel(lambda m, s: m[-1].content, name="cloud"), PrivacyPolicy(action="redact", names="builtin"))
    values = [v for _, v in VARIANTS]
    text = " | ".join(values)
    (sent,), red = gate.check([Message("user", text)])[0], gate.check([Message("user", text)])[1]
    for value in values:
        assert value not in sent.content
    assert set(re.sub(r"<[A-Z_]+_\d+>", "", sent.content)) <= set(" |")  # nothing but placeholders is left
    assert red.restore(sent.content) == text


def test_a_json_brief_hides_no_card_behind_escapes():
    """The escalation brief and tool results are JSON: a line break is written ``\\n``."""
    brief = json.dumps({"request": "card 4111\n1111\n1111\n1111 and mail zoë@exämple.de"}, ensure_ascii=True)
    assert "\\n" in brief and "\\u00eb" in brief
    found = [f.kind for f in find_pii(brief, detectors())]
    assert found == ["card", "email"]


def test_the_log_filter_scrubs_variants_too():
    line = "INSERT ... ('4111\u00a01111\u00a01111\u00a01111', 'de89-3704-0044-0532-0130-00')"
    assert scrub(line, default_detectors()) == "INSERT ... ('<CARD>', '<IBAN>')"


def _canon(s: str) -> str:
    """Letters and digits only, folded by this test's own rule (NFKC, lower case)."""
    return "".join(c for c in unicodedata.normalize("NFKC", s).lower() if c.isalnum())


def test_the_grown_corpus_reaches_a_remote_model_with_no_value(httpserver):
    """Every synthetic text, variants included, through the real OpenAI wire: the
    recording server sees none of the checksum-confirmed values in any form."""
    cloud = Cloud(httpserver)
    large = gated_large(cloud, {"action": "redact"})
    corpus = [c for c in synthetic_pii_corpus(300, seed=11) if any(k != "name" for k, _, _ in c.spans)]

    async def send_all() -> None:
        for item in corpus:
            reply = await large.complete([Message("user", item.text)])
            assert reply.text == item.text  # the echo comes back restored

    asyncio.run(send_all())
    contents = [m["content"] for b in cloud.bodies for m in json.loads(b)["messages"]]
    sent = _canon("\n".join(contents))
    values = [item.text[s:e] for item in corpus for k, s, e in item.spans if k not in ("name",)]
    leaked = [v for v in values if len(_canon(v)) >= 6 and _canon(v) in sent]
    print(f"\n{len(values)} values in {len(corpus)} texts; reached the remote model: {len(leaked)}")
    assert leaked == []


class Order(BaseModel):
    order: str
    refund_to: str
    card: str
    contact: str


def test_tool_results_the_escalation_agent_sends_pass_the_gate(httpserver):
    """A skill called as a tool returns PII in disguised formats; the large model
    (gated, remote) never receives them, and the final answer has them back."""
    iban, card, mail = "gb29-nwbk-6016-1331-9268-19", "4111\u00a01111\u00a01111\u00a01111", "józef@bücher.example"
    steps = iter([
        json.dumps({"action": "call_skill", "skill": "lookup", "input": "order 17"}),
        None,  # the final answer echoes what the tool returned (placeholders, restored by the gate)
    ])

    def reply(last: str) -> str:
        step = next(steps)
        if step is not None:
            return step
        return json.dumps({"action": "final", "answer": "Refunding: " + last})

    cloud = Cloud(httpserver, reply=reply)
    large = gated_large(cloud, {"action": "redact"})
    small = FunctionModel(lambda m, s: {"order": "17", "refund_to": iban, "card": card, "contact": mail}, name="tiny")
    lookup = Skill(name="lookup", description="look an order up", instructions="Look it up.", output_type=Order)
    graph = build_graph([lookup], models={"small": small, "large": large}, checkpoint=None,
                        router=RulesRouter([Rule("lookup", (r"^lookup",))]), escalation=EscalationAgent(tools=["lookup"]))
    result = graph.invoke("compare my two orders and refund the difference")
    assert result.status == "escalated", result.message
    assert [c["skill"] for c in result.tool_calls] == ["lookup"]
    tool_turns = [m["content"] for b in cloud.bodies[1:2] for m in json.loads(b)["messages"] if "Result of lookup" in m["content"]]
    assert tool_turns, "the tool result went to the large model"
    everything = "\n".join(m["content"] for b in cloud.bodies for m in json.loads(b)["messages"])
    for value in (iban, card, mail):
        assert _canon(value) not in _canon(everything), value
    assert "<IBAN_1>" in everything and "<CARD_1>" in everything and "<EMAIL_1>" in everything
    assert iban in result.answer and card in result.answer and mail in result.answer
