"""Row 16: PII bound for a cloud model is redacted or blocked before it leaves.

The "cloud" is a real HTTP server (pytest-httpserver, loopback) speaking the
OpenAI chat API. The graph is built from a config whose large model is a remote
URL, so the factory puts the gate in front of it; the wire is then pointed at the
recording server. Every request body the server received is scanned for the raw
values with patterns independent of the detectors.
"""

import asyncio
import json
import re

import pytest
from werkzeug import Request, Response

from slmgraph import RulesRouter, Skill, build_graph, load_config, models_from_config
from slmgraph.models._base import Message
from slmgraph.models._openai import OpenAIModel
from slmgraph.privacy import PrivacyBlockedError, PrivacyGate
from slmgraph.testing import synthetic_pii_corpus
from slmgraph.testing import ScriptedModel
from pydantic import BaseModel

CLOUD = "https://llm.example.com/v1"


class Cloud:
    """Records each request body; replies with ``reply(last user content)``."""

    def __init__(self, httpserver, reply=lambda text: text):
        self.bodies: list[str] = []
        self.reply = reply
        httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(self)
        self.url = f"http://{httpserver.host}:{httpserver.port}/v1"

    def __call__(self, request: Request) -> Response:
        body = request.get_data(as_text=True)
        self.bodies.append(body)
        last = json.loads(body)["messages"][-1]["content"]
        payload = {
            "id": "c1", "object": "chat.completion", "created": 0, "model": "big",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply(last)}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
        return Response(json.dumps(payload), content_type="application/json")


def gated_large(cloud: Cloud, policy: dict) -> PrivacyGate:
    cfg = load_config(env={}, overrides={
        "small": {"provider": "ollama", "model": "m"},
        "large": {"provider": "openai", "model": "big", "base_url": CLOUD, "api_key": "sk-test"},
        "privacy": policy,
    })
    large = models_from_config(cfg)["large"]
    assert isinstance(large, PrivacyGate)  # the factory gated the remote endpoint by itself
    inner = large.inner
    while not isinstance(inner, OpenAIModel):
        inner = inner.inner
    assert inner.display_url == CLOUD
    inner.base_url = cloud.url  # the same wire, now into the recording server
    return large


def leaked(bodies: list[str], value: str) -> bool:
    joined = "\n".join(bodies)
    compact = re.sub(r"[\s-]", "", value)
    squeezed = re.sub(r"[\s-]", "", joined)
    return value in joined or (len(compact) >= 7 and compact.isalnum() and compact in squeezed)


def _luhn(d: str) -> bool:  # written again here, independent of slmgraph.privacy
    s = sum(int(c) if i % 2 == 0 else sum(divmod(int(c) * 2, 10)) for i, c in enumerate(reversed(d)))
    return s % 10 == 0


def independent_scan(text: str) -> list[str]:
    """PII-looking strings found by patterns of this test's own: e-mail addresses,
    Luhn-valid 13-19 digit runs, mod-97-valid IBANs, SSN-shaped numbers, IPv4."""
    hits = re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text)
    for m in re.finditer(r"\d(?:[ -]?\d){12,18}", text):
        if _luhn(re.sub(r"\D", "", m.group())):
            hits.append(m.group())
    for m in re.finditer(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", text):
        s = m.group().replace(" ", "")
        if int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1:
            hits.append(m.group())
    hits += re.findall(r"\b[1-8]\d{2}-\d{2}-\d{4}\b", text)
    hits += re.findall(r"\b(?:[1-9]\d?\d?\.){3}[1-9]\d?\d?\b(?!\.)", text)
    return hits


def _outside_spans(item) -> str:
    cut, pos = [], 0
    for _, s, e in sorted(item.spans, key=lambda t: t[1]):
        cut += [item.text[pos:s], "|"]
        pos = e
    return "".join(cut + [item.text[pos:]])


def test_no_pii_reaches_the_cloud_under_redact(httpserver):
    cloud = Cloud(httpserver)
    large = gated_large(cloud, {"action": "redact", "names": "builtin"})
    corpus = synthetic_pii_corpus(300, seed=11)

    async def run():
        return [await large.complete([Message("user", item.text)]) for item in corpus]

    replies = asyncio.run(run())
    assert len(cloud.bodies) == len(corpus)
    counts = {"values": 0, "leaked": 0, "names": 0, "names_leaked": 0}
    for item, reply in zip(corpus, replies):
        assert reply.text == item.text  # the echoed placeholders came back as the values
        for kind, s, e in item.spans:
            key = "names" if kind == "name" else "values"
            counts[key] += 1
            counts[key + "_leaked" if key == "names" else "leaked"] += leaked(cloud.bodies, item.text[s:e])
    # A hit that the corpus also holds outside every labelled value is a decoy the scan
    # cannot tell apart (a Luhn-valid run inside a mod-97-failing "ref" IBAN), not a leak.
    decoys = "\n".join(_outside_spans(item) for item in corpus)
    assert [h for h in independent_scan("\n".join(cloud.bodies)) if h not in decoys] == []
    print(f"\nPII values sent: {counts['values']}, reaching the cloud: {counts['leaked']}; "
          f"names sent: {counts['names']}, reaching the cloud: {counts['names_leaked']} (gazetteer misses)")
    assert counts["leaked"] == 0
    assert counts["names_leaked"] < counts["names"] * 0.5
    assert len(independent_scan("\n".join(i.text for i in corpus))) > 200  # the scan does catch raw values (plain formats)


def test_block_sends_nothing_with_pii(httpserver):
    cloud = Cloud(httpserver)
    large = gated_large(cloud, {"action": "block"})
    # names are found only by a name detector; these texts hold at least one other kind
    corpus = [i for i in synthetic_pii_corpus(80, seed=3) if any(k != "name" for k, _, _ in i.spans)]
    assert len(corpus) > 50
    for item in corpus:
        with pytest.raises(PrivacyBlockedError):
            large.complete_sync([Message("user", item.text)])
    assert cloud.bodies == []
    assert large.complete_sync([Message("user", "what is 2 + 2?")]).text == "what is 2 + 2?"
    assert len(cloud.bodies) == 1


class Out(BaseModel):
    label: str


def escalating_graph(large):
    skill = Skill(name="triage", description="triage", instructions="Label it.", output_type=Out)
    return build_graph(
        [skill], models={"small": ScriptedModel([]), "large": large},
        router=RulesRouter([], default=None), checkpoint=None,
    )


def test_graph_escalation_is_redacted_and_the_answer_restored(httpserver):
    cloud = Cloud(httpserver, reply=lambda text: json.dumps({"action": "final", "answer": "Refund sent to <IBAN_1>."}))
    large = gated_large(cloud, {"action": "redact", "kinds": {"card": "block"}})
    result = escalating_graph(large).invoke("Refund me to GB82 WEST 1234 5698 7654 32 please, mail me at kim@example.com")
    assert result.status == "escalated"
    assert result.answer == "Refund sent to GB82 WEST 1234 5698 7654 32."
    assert len(cloud.bodies) == 1
    assert "GB82" not in cloud.bodies[0] and "kim@example.com" not in cloud.bodies[0]
    assert "<IBAN_1>" in cloud.bodies[0] and "<EMAIL_1>" in cloud.bodies[0]
    record = large.audit_log[-1]
    assert (record.outcome, record.redacted) == ("sent", {"iban": 1, "email": 1})


def test_graph_escalation_blocked_ends_as_escalation_failed(httpserver):
    cloud = Cloud(httpserver)
    large = gated_large(cloud, {"action": "redact", "kinds": {"card": "block"}})
    result = escalating_graph(large).invoke("My card 4111 1111 1111 1111 was charged twice")
    assert result.status == "escalation_failed"
    assert "1 card" in result.escalation_detail and "4111" not in result.escalation_detail
    assert cloud.bodies == []


def test_the_audit_goes_to_the_privacy_logger(httpserver, caplog):
    cloud = Cloud(httpserver)
    large = gated_large(cloud, {"action": "redact"})
    with caplog.at_level("INFO", logger="slmgraph.privacy"):
        large.complete_sync([Message("user", "ssn 123-45-6789")])
    (rec,) = [r for r in caplog.records if r.name == "slmgraph.privacy"]
    assert rec.privacy_audit["redacted"] == {"us_ssn": 1}
    assert rec.privacy_audit["placeholders"] == ["<US_SSN_1>"]
    assert "123-45-6789" not in rec.getMessage()
