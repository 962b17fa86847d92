"""Row 17: logs, error messages and checkpoints written on error paths carry no raw PII
when the policy says redact.

A graph escalates a request full of PII to a gated "cloud" model (the real
``OpenAIModel`` against a loopback HTTP server) that fails with HTTP 500 and, like
a verbose server, echoes the request in its error body. Then the raised error
(with its whole chain), every log record at DEBUG (the openai SDK logs request
bodies at DEBUG), and the SQLite checkpoint file are scanned for the raw values.
The request itself is the run's input and is checkpointed as given (that is how
a run resumes); every other channel and every error write must be clean.
"""

import asyncio
import contextlib
import io
import json
import logging
import sqlite3
import traceback

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel
from werkzeug import Request, Response

from slmgraph import ModelHTTPError, RetryingModel, RetryPolicy, RulesRouter, Skill, build_graph
from slmgraph.models._openai import OpenAIModel
from slmgraph.privacy import PrivacyGate, PrivacyPolicy, redact_logs
from slmgraph.testing import ScriptedModel

RAW = ["kim.lee@example.com", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", "123-45-6789", "+44 20 7946 0958"]
REQUEST = (f"Order for Kim: mail {RAW[0]}, card {RAW[1]}, refund to {RAW[2]}, "
           f"SSN {RAW[3]}, phone {RAW[4]}")
INPUT_CHANNELS = {"__start__", "request", "messages"}
# Shaped like a Query, with text where the order id's integer belongs.
BAD_REQUEST = json.dumps({"order_id": REQUEST, "email": "kim"})


def failing_cloud(httpserver) -> tuple[PrivacyGate, list[str]]:
    bodies: list[str] = []

    def handler(request: Request) -> Response:
        body = request.get_data(as_text=True)
        bodies.append(body)
        echo = json.loads(body)["messages"][-1]["content"]
        return Response(json.dumps({"error": {"message": f"internal error while processing {echo}"}}),
                        status=500, content_type="application/json")

    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(handler)
    inner = OpenAIModel("big", base_url=f"http://{httpserver.host}:{httpserver.port}/v1", api_key="sk-test")
    retrying = RetryingModel(inner, RetryPolicy(attempts=2, initial_s=0, max_s=0))
    return PrivacyGate(retrying, PrivacyPolicy(action="redact")), bodies


class Query(BaseModel):
    order_id: int
    email: str


class Out(BaseModel):
    status: str


def graph(large, path):
    # The request's order id is not an integer: the skill rejects it (BAD_INPUT) and
    # the run escalates; the cloud then fails.
    skill = Skill(name="order", description="order status", instructions="Look it up.", output_type=Out, input_type=Query)
    return build_graph([skill], models={"small": ScriptedModel([]), "large": large},
                       router=RulesRouter([], default="order"), checkpoint=path)


def raw_in(text: str) -> list[str]:
    return [v for v in RAW if v in text]


def checkpoint_leaks(path) -> list[str]:
    """Raw values in the checkpoint file outside the run's input channels."""
    serde = JsonPlusSerializer()
    found = []
    with sqlite3.connect(path) as db:
        for channel, type_, value in db.execute("select channel, type, value from writes"):
            if channel not in INPUT_CHANNELS:
                found += [f"writes.{channel}: {v}" for v in raw_in(value.decode("utf-8", "replace"))]
                found += [f"writes.{channel}: {v}" for v in raw_in(repr(serde.loads_typed((type_, value))))]
        for type_, blob in db.execute("select type, checkpoint from checkpoints"):
            values = serde.loads_typed((type_, blob)).get("channel_values", {})
            rest = {k: v for k, v in values.items() if k not in INPUT_CHANNELS}
            found += [f"checkpoint: {v}" for v in raw_in(repr(rest))]
    return found


@contextlib.contextmanager
def captured_logs(filtered: bool):
    """Every record from every logger at DEBUG, formatted with its traceback."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old = root.level
    if filtered:
        redact_logs(PrivacyPolicy(action="redact"), handlers=[handler])
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def test_no_raw_pii_in_errors_logs_or_checkpoints_on_a_failed_escalation(httpserver, tmp_path):
    large, bodies = failing_cloud(httpserver)
    path = tmp_path / "cp.sqlite"
    with captured_logs(filtered=True) as out, pytest.raises(ModelHTTPError) as info:
        asyncio.run(graph(large, path).ainvoke(BAD_REQUEST, thread_id="t1"))

    assert len(bodies) == 2  # two attempts, both through the gate
    assert all(raw_in(b) == [] for b in bodies)
    assert "<EMAIL_1>" in bodies[0]  # the placeholders did go out

    exc = info.value
    chain = "".join(traceback.format_exception(exc)) + repr(exc) + json.dumps(exc.ledger)
    assert "internal error while processing" in chain  # the echo is there ...
    assert raw_in(chain) == []                        # ... with placeholders only

    logs = out.getvalue()
    assert "INSERT OR REPLACE INTO writes" in logs  # aiosqlite logged each checkpoint write ...
    assert "<EMAIL>" in logs                        # ... the request's among them, scrubbed
    assert "Building HTTP request" in logs          # the openai SDK's DEBUG records were captured
    assert raw_in(logs) == []

    data = path.read_bytes()
    assert RAW[0].encode() in data  # the input is checkpointed as given: the scan can see values
    assert checkpoint_leaks(path) == []
    with sqlite3.connect(path) as db:
        channels = {c for (c,) in db.execute("select channel from writes")}
    assert "escalation_detail" in channels  # the BAD_INPUT detail was written, clean


def test_the_bad_input_detail_does_not_echo_the_request(tmp_path):
    large = ScriptedModel([{"action": "final", "answer": "done"}], name="big")
    result = graph(PrivacyGate(large, PrivacyPolicy()), tmp_path / "cp.sqlite").invoke(BAD_REQUEST)
    assert result.status == "escalated"
    assert result.escalation_reason == "bad_input"
    assert "order_id: Input should be a valid integer" in result.escalation_detail
    assert raw_in(result.escalation_detail) == []
    sent = large.calls[0].messages[-1].content
    assert raw_in(sent) == [] and "<CARD_1>" in sent


def test_without_the_log_filter_debug_logs_do_carry_the_request(httpserver, tmp_path):
    """Why the filter exists: at DEBUG, aiosqlite logs the checkpointed request as it is."""
    large, _ = failing_cloud(httpserver)
    with captured_logs(filtered=False) as out, pytest.raises(ModelHTTPError):
        asyncio.run(graph(large, tmp_path / "cp.sqlite").ainvoke(BAD_REQUEST, thread_id="t1"))
    leaked = sum(out.getvalue().count(v) for v in RAW)
    print(f"\nraw PII strings in DEBUG logs without the filter: {leaked}")
    assert leaked > 0
