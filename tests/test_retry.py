"""The one retry layer: transient faults are retried, bounded; others never."""

from __future__ import annotations

import pytest

from slmgraph import (
    ConfigError,
    InvalidModelOutputError,
    Message,
    ModelHTTPError,
    ModelNotFoundError,
    ModelTimeoutError,
    ModelUnavailableError,
    RetryingModel,
    RetryPolicy,
)
from slmgraph.testing import ScriptedModel

FAST = RetryPolicy(attempts=3, initial_s=0.0, max_s=0.0)
HI = [Message("user", "hi")]


@pytest.mark.parametrize(
    "fault",
    [
        ModelUnavailableError("down"),
        ModelTimeoutError("slow"),
        ModelHTTPError("busy", status_code=503),
        ModelHTTPError("rate", status_code=429),
    ],
)
async def test_transient_faults_are_retried_then_succeed(fault):
    inner = ScriptedModel([fault, fault, "ok"])
    reply = await RetryingModel(inner, FAST).complete(HI)
    assert reply.text == "ok" and len(inner.calls) == 3


async def test_attempts_are_bounded_and_the_last_error_is_raised():
    inner = ScriptedModel([ModelUnavailableError(f"down {i}") for i in range(5)])
    with pytest.raises(ModelUnavailableError, match="down 2"):
        await RetryingModel(inner, FAST).complete(HI)
    assert len(inner.calls) == 3 and inner.remaining == 2


@pytest.mark.parametrize(
    "fault",
    [
        ModelNotFoundError("no model; try `ollama pull x`"),
        ModelHTTPError("bad request", status_code=400),
        InvalidModelOutputError("not json"),
        ValueError("a bug"),
    ],
)
async def test_non_transient_faults_are_never_retried(fault):
    inner = ScriptedModel([fault, "ok"])
    with pytest.raises(type(fault)):
        await RetryingModel(inner, FAST).complete(HI)
    assert len(inner.calls) == 1


def test_wrapper_keeps_the_model_identity_and_extras():
    inner = ScriptedModel([], name="tiny", context_window=321)
    wrapped = RetryingModel(inner, FAST)
    assert (wrapped.name, wrapped.context_window, wrapped.provider) == ("tiny", 321, "test")
    assert wrapped.count_tokens("abcdef") == inner.count_tokens("abcdef")
    assert wrapped.calls is inner.calls  # backend extras pass through


def test_bad_policy_names_the_field():
    with pytest.raises(ConfigError, match="retry.attempts"):
        RetryPolicy(attempts=0)


async def test_a_stream_failing_before_its_first_chunk_is_retried():
    inner = ScriptedModel([ModelUnavailableError("cut"), "hello"])
    chunks = [c async for c in RetryingModel(inner, FAST).stream(HI)]
    assert chunks[-1].reply.text == "hello" and len(inner.calls) == 2
