"""The one hardening seam: a hand-built model passed to build_graph is retried,
breaker-guarded and privacy-gated, against the real fault server in another process,
or refused at build when it leaves the machine with no privacy policy."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from slmgraph import (
    CircuitOpenError,
    ConfigError,
    FallbackModel,
    GuardedModel,
    OllamaModel,
    OpenAIModel,
    RetryingModel,
    Skill,
    SlmGraphError,
    build_graph,
    harden,
    load_config,
    models_from_config,
)
from slmgraph.models._wrapper import unwrap
from slmgraph.privacy import PrivacyGate, PrivacyPolicy
from slmgraph.testing import ScriptedModel

CHAT = "/v1/chat/completions"


class Echo(BaseModel):
    text: str


ECHO = Skill(name="echo", description="repeat the request", instructions="Repeat it.", output_type=Echo)
REDACT = PrivacyPolicy(action="redact")


def remote(server) -> OpenAIModel:
    """A model the graph must treat as off this machine (the server is on loopback,
    so ``local=False`` says what a cloud endpoint would be)."""
    return OpenAIModel("fault-model", base_url=server.openai_url, local=False)


def layers(model) -> list[type]:
    return [type(m) for m in unwrap(model)]


def test_a_remote_model_without_a_privacy_policy_is_refused_at_build(fault_server):
    with pytest.raises(ConfigError) as info:
        build_graph([ECHO], models={"small": remote(fault_server)}, checkpoint=None)
    assert info.value.field == "privacy" and "small" in str(info.value) and fault_server.openai_url in str(info.value)
    assert fault_server.log() == []  # refused before any call


def test_the_same_refusal_comes_from_the_config_path(fault_server):
    cfg = load_config(overrides={"small": {"provider": "openai", "model": "m", "base_url": "https://api.example.com/v1",
                                           "api_key": "k"}, "privacy": {"action": "allow"}}, env={})  # fmt: skip
    # a config without [privacy] is refused when it is loaded ...
    with pytest.raises(ConfigError, match="privacy"):
        models_from_config(cfg.model_copy(update={"privacy": None}))
    # ... and the same model built by hand is refused by the same seam
    with pytest.raises(ConfigError, match="privacy"):
        harden(OpenAIModel("m", base_url="https://api.example.com/v1", api_key="k"))


async def test_a_hand_built_remote_model_is_retried_and_privacy_gated(fault_server):
    fault_server.configure(reply='{"text": "$USER"}')
    # two 503s answered with Retry-After: 0, so the retries do not wait
    fault_server.faults([{"kind": "status", "status": 503, "retry_after": 0}] * 2)
    g = build_graph([ECHO], models={"small": remote(fault_server)}, checkpoint=None, privacy=REDACT)
    bound = g.spec.models["small"]
    assert layers(bound) == [PrivacyGate, RetryingModel, GuardedModel, OpenAIModel]
    r = await g.ainvoke("write to ada@example.com please")
    assert r.status == "answered"
    sent = fault_server.log(CHAT)
    assert len(sent) == 3  # the first try and two retries
    bodies = [str(e["body"]) for e in sent]
    assert all("ada@example.com" not in b for b in bodies) and all("<EMAIL_1>" in b for b in bodies)
    assert r.output_json == {"text": "write to ada@example.com please"}  # restored on the way back


async def test_a_hand_built_remote_model_is_breaker_guarded(fault_server):
    fault_server.faults([{"kind": "status", "status": 503, "retry_after": 0, "times": 100}])
    g = build_graph([ECHO], models={"small": remote(fault_server)}, checkpoint=None, privacy=REDACT)
    breaker = next(m for m in unwrap(g.spec.models["small"]) if isinstance(m, GuardedModel)).breaker
    with pytest.raises(SlmGraphError):  # 3 attempts, all 503
        await g.ainvoke("hello")
    with pytest.raises(CircuitOpenError):  # 2 more make 5 failures in a row: open
        await g.ainvoke("hello")
    assert breaker.state == "open" and len(fault_server.log(CHAT)) == 5
    with pytest.raises(CircuitOpenError):  # while open, nothing reaches the server
        await g.ainvoke("hello")
    assert len(fault_server.log(CHAT)) == 5


def test_harden_is_idempotent_and_config_models_are_not_wrapped_twice(fault_server, tmp_path):
    once = harden(remote(fault_server), privacy=REDACT)
    assert harden(once, privacy=REDACT) is once
    cfg = load_config(overrides={"small": {"provider": "ollama", "model": "fault-model", "host": fault_server.url}},
                      env={})  # fmt: skip
    models = models_from_config(cfg)
    assert layers(models["small"]) == [RetryingModel, GuardedModel, OllamaModel]
    g = build_graph([ECHO], models=models, checkpoint=None)
    assert g.spec.models["small"] is models["small"]


def test_models_on_one_endpoint_share_one_breaker_and_in_process_models_are_left_alone(fault_server):
    a = OllamaModel("fault-model", host=fault_server.url)
    b = OllamaModel("other", host=fault_server.url)
    scripted = ScriptedModel([])
    g = build_graph([ECHO], models={"small": a, "coder": b, "test": scripted}, checkpoint=None)
    guard = {k: next(m for m in unwrap(g.spec.models[k]) if isinstance(m, GuardedModel)) for k in ("small", "coder")}
    assert guard["small"].breaker is guard["coder"].breaker and guard["small"].limit is guard["coder"].limit
    assert g.spec.models["test"] is scripted  # nothing to retry or break in-process


def test_harden_false_uses_the_models_as_given(fault_server):
    bare = remote(fault_server)
    g = build_graph([ECHO], models={"small": bare}, checkpoint=None, harden=False)
    assert g.spec.models["small"] is bare


def test_a_fallback_has_each_member_hardened_and_one_gate_in_front(fault_server, fault_server_b):
    chain = FallbackModel([remote(fault_server), OllamaModel("fault-model", host=fault_server_b.url)])
    out = harden(chain, privacy=REDACT)
    assert isinstance(out, PrivacyGate) and isinstance(out.inner, FallbackModel)
    assert [layers(m) for m in out.inner.members] == [
        [RetryingModel, GuardedModel, OpenAIModel], [RetryingModel, GuardedModel, OllamaModel],
    ]  # fmt: skip
    assert not out.local and out.endpoint == fault_server.openai_url


async def test_an_explicit_limit_holds_for_an_in_process_model():
    """``harden(in_process, limit=2)`` used to return the model as it was, so a fan-out
    of 10 ran 10 calls at once."""
    import asyncio

    from slmgraph.models._base import Message
    from slmgraph.testing import FunctionModel

    now = peak = 0

    async def slow(messages, schema):
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.01)
        now -= 1
        return '{"text": "ok"}'

    limited = harden(FunctionModel(slow), limit=2)
    assert harden(limited, limit=2) is limited
    await asyncio.gather(*(limited.complete([Message("user", "hi")]) for _ in range(10)))
    assert peak == 2
    assert harden(ScriptedModel([])).__class__ is ScriptedModel  # no limit asked: as given
