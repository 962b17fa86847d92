"""PII detectors and the privacy gate (reliability matrix row 16).

Run with ``-s`` to print the detector figures on the synthetic labelled set.
"""

import asyncio

import pytest

from slmgraph.models._base import Message
from slmgraph.privacy import (
    DetectorUnavailableError,
    Finding,
    GazetteerNameDetector,
    PrivacyBlockedError,
    PrivacyGate,
    PrivacyPolicy,
    default_detectors,
    find_pii,
    iban_ok,
    is_local_endpoint,
    luhn_ok,
)
from slmgraph.testing import FunctionModel, ScriptedModel, evaluate, synthetic_pii_corpus


def kinds(text, names=False):
    dets = default_detectors() + ([GazetteerNameDetector()] if names else [])
    return [(f.kind, f.value) for f in find_pii(text, dets)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("mail jane.doe+x@example.co.uk now", [("email", "jane.doe+x@example.co.uk")]),
        ("card 4111 1111 1111 1111.", [("card", "4111 1111 1111 1111")]),
        ("amex 3782-822463-10005", [("card", "3782-822463-10005")]),
        ("IBAN GB82 WEST 1234 5698 7654 32 thanks", [("iban", "GB82 WEST 1234 5698 7654 32")]),
        ("iban DE89370400440532013000", [("iban", "DE89370400440532013000")]),
        ("SSN 123-45-6789", [("us_ssn", "123-45-6789")]),
        ("NINO AB 12 34 56 C", [("uk_nino", "AB 12 34 56 C")]),
        ("DNI 12345678Z", [("es_dni", "12345678Z")]),
        ("SIN 130 692 544", [("ca_sin", "130 692 544")]),
        ("from 203.0.113.9 and 2001:db8::8a2e:370:7334", [("ipv4", "203.0.113.9"), ("ipv6", "2001:db8::8a2e:370:7334")]),
        ("call (415) 555-2671 or +44 20 7946 0958", [("phone", "(415) 555-2671"), ("phone", "+44 20 7946 0958")]),
    ],
)
def test_each_detector_finds_its_kind(text, expected):
    assert kinds(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",          # fails Luhn
        "iban DE89370400440532013001",       # fails mod-97
        "SSN 000-45-6789 and 666-12-3456",   # never issued
        "DNI 12345678A",                     # wrong check letter
        "on 2024-03-15 at 12:30:45",         # date and time
        "version 10.0.0.256",                # not an address
        "order 4829-1123-9981",              # not a phone format
        "invoice 1234 5678 9012",            # no check passes
    ],
)
def test_lookalikes_are_not_pii(text):
    assert kinds(text) == []


def test_checksums():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")
    assert not iban_ok("DE8937040044053201300")  # one digit short for Germany


def test_names_need_a_surname_or_an_honorific():
    assert kinds("Please ask Maria Gonzalez or Dr. Okafor.", names=True) == [("name", "Maria Gonzalez"), ("name", "Okafor")]
    assert kinds("Grace period: Mark the date. Will do.", names=True) == []


def test_detector_figures_on_the_synthetic_set():
    """Recall/precision on 600 synthetic labelled texts (1,199 PII values, about a third
    of them in Unicode or formatting variants; hard negatives)."""
    corpus = synthetic_pii_corpus(600, seed=7)
    detectors = default_detectors() + [GazetteerNameDetector()]
    figures = evaluate(corpus, lambda t: find_pii(t, detectors))
    print("\nkind      gold  recall  predicted  precision")
    for kind, f in sorted(figures.items()):
        print(f"{kind:8} {f['gold']:5}  {f['recall']:.3f}  {f['predicted']:9}  {f['precision']:.3f}")
    checked = ("email", "card", "iban", "us_ssn", "uk_nino", "es_dni", "ca_sin", "ipv6", "phone")
    for kind in checked:  # formats with a checksum or strict rules: nothing missed, nothing invented
        assert figures[kind]["recall"] == 1.0, kind
        assert figures[kind]["precision"] == 1.0, kind
    assert figures["ipv4"]["recall"] == 1.0  # a 4-part build number is an address to a pattern
    assert figures["name"]["recall"] > 0.7  # the gazetteer misses given names it does not know
    assert figures["all"]["recall"] > 0.95 and figures["all"]["precision"] > 0.9


# -- the gate --------------------------------------------------------------------------

TEXT = "I am Maria Gonzalez, card 4111 1111 1111 1111, mail maria@example.com, mail maria@example.com again"


def echo():
    return FunctionModel(lambda msgs, schema: msgs[-1].content, name="cloud")


def test_redact_sends_placeholders_and_restores_them():
    inner = echo()
    gate = PrivacyGate(inner, PrivacyPolicy(action="redact", names="builtin"))
    reply = gate.complete_sync([Message("user", TEXT)])
    sent = inner.calls[0].messages[0].content
    assert sent == "I am <NAME_1>, card <CARD_1>, mail <EMAIL_1>, mail <EMAIL_1> again"
    assert reply.text == TEXT  # restored in the answer
    record = gate.audit_log[-1]
    assert record.outcome == "sent"
    assert record.redacted == {"name": 1, "card": 1, "email": 2}
    assert set(record.placeholders) == {"<NAME_1>", "<CARD_1>", "<EMAIL_1>"}
    assert "4111" not in repr(record) and "maria@" not in repr(record)


def test_restores_inside_parsed_json_and_keeps_numbering_across_a_growing_conversation():
    inner = FunctionModel(lambda msgs, schema: {"to": "<EMAIL_1>", "note": "< EMAIL_2 >"}, name="cloud")
    gate = PrivacyGate(inner, PrivacyPolicy())
    msgs = [Message("user", "a@example.com")]
    reply = gate.complete_sync(msgs, schema={"type": "object"})
    assert reply.parsed == {"to": "a@example.com", "note": "< EMAIL_2 >"}  # unknown placeholder left alone
    gate.complete_sync([*msgs, Message("assistant", "ok"), Message("user", "also b@example.com")])
    assert [m.content for m in inner.calls[1].messages] == ["<EMAIL_1>", "ok", "also <EMAIL_2>"]


def test_placeholder_text_in_the_input_is_never_reused():
    inner = echo()
    gate = PrivacyGate(inner, PrivacyPolicy())
    reply = gate.complete_sync([Message("user", "literal <EMAIL_1> and real x@example.com")])
    assert inner.calls[0].messages[0].content == "literal <EMAIL_1> and real <EMAIL_2>"
    assert reply.text == "literal <EMAIL_1> and real x@example.com"


def test_block_refuses_before_the_call():
    inner = echo()
    gate = PrivacyGate(inner, PrivacyPolicy(action="redact", kinds={"card": "block"}))
    with pytest.raises(PrivacyBlockedError) as info:
        gate.complete_sync([Message("user", TEXT)])
    assert inner.calls == []  # blocking, not beside the call
    assert info.value.counts == {"card": 1}
    assert "4111" not in str(info.value)
    assert gate.audit_log[-1].outcome == "blocked"


def test_allow_sends_values_and_audits_them():
    inner = echo()
    gate = PrivacyGate(inner, PrivacyPolicy(action="allow", kinds={"national_id": "redact"}))
    gate.complete_sync([Message("user", "x@example.com SSN 123-45-6789")])
    assert inner.calls[0].messages[0].content == "x@example.com SSN <US_SSN_1>"
    assert gate.audit_log[-1].allowed == {"email": 1}


def test_the_check_runs_before_the_inner_call_starts():
    order = []

    class Slow:
        kinds = ("name",)

        def available(self):
            return None

        def find(self, text):
            order.append("detect")
            return []

    async def fn(msgs, schema):
        order.append("call")
        return "ok"

    gate = PrivacyGate(FunctionModel(fn), PrivacyPolicy(names="external"), name_detector=Slow())
    gate.complete_sync([Message("user", "hi")])
    assert order == ["detect", "call"]


class Missing:
    kinds = ("name",)

    def available(self):
        return "the NER model is not installed"

    def find(self, text):
        raise AssertionError("never called when unavailable")


class Broken:
    kinds = ("name",)

    def available(self):
        return None

    def find(self, text):
        raise RuntimeError("model crashed")


def test_fails_closed_without_the_name_detector_the_policy_needs():
    with pytest.raises(DetectorUnavailableError, match="no name_detector"):
        PrivacyGate(echo(), PrivacyPolicy(names="external"))


@pytest.mark.parametrize("detector, why", [(Missing(), "not installed"), (Broken(), "RuntimeError")])
def test_fails_closed_when_the_detector_cannot_run(detector, why):
    inner = echo()
    gate = PrivacyGate(inner, PrivacyPolicy(names="external"), name_detector=detector)
    with pytest.raises(DetectorUnavailableError, match=why):
        gate.complete_sync([Message("user", "hello")])
    assert inner.calls == []


def test_stream_restores_placeholders_split_across_chunks():
    class Chunky(ScriptedModel):
        async def stream(self, messages, *, schema=None, settings=None):
            from slmgraph.models._base import StreamChunk

            self._record(messages, schema, settings)
            text = messages[-1].content
            for i in range(0, len(text), 3):
                yield StreamChunk(delta=text[i:i + 3])

    inner = Chunky()
    gate = PrivacyGate(inner, PrivacyPolicy())

    async def collect():
        return "".join([c.delta async for c in gate.stream([Message("user", "to x@example.com and y@example.org!")])])

    assert asyncio.run(collect()) == "to x@example.com and y@example.org!"
    assert inner.calls[0].messages[0].content == "to <EMAIL_1> and <EMAIL_2>!"


def test_count_tokens_counts_what_is_sent():
    inner = echo()
    gate = PrivacyGate(inner, PrivacyPolicy())
    text = "reach me at a.very.long.address.indeed@subdomain.example.com"
    assert gate.count_tokens(text) == inner.count_tokens("reach me at <EMAIL_1>")


@pytest.mark.parametrize(
    "url, local",
    [
        ("http://127.0.0.1:11434", True), ("http://localhost:8000/v1", True), ("http://[::1]:8080", True),
        ("127.0.0.2:11434", True), ("embedded", True), ("0.0.0.0:11434", True), ("https://api.openai.com/v1", False),
        ("http://192.168.1.20:11434", False), ("http://10.0.0.5", False), ("http://gpu-box:11434", False),
        ("http://localhost.evil.com", False), (None, False),
    ],
)
def test_local_means_loopback_or_embedded(url, local):
    assert is_local_endpoint(url) is local


def test_finding_is_plain_data():
    assert Finding("email", 0, 3, "a@b") == Finding("email", 0, 3, "a@b")


def test_privacy_exports_resolve():
    import slmgraph.privacy as p

    for name in p.__all__:
        assert hasattr(p, name), name
    assert issubclass(p.PrivacyBlockedError, p.PrivacyError)
    from slmgraph import EscalationError, SlmGraphError

    assert issubclass(p.PrivacyError, EscalationError) and issubclass(p.DetectorUnavailableError, SlmGraphError)
