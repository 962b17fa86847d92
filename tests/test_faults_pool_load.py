"""Reliability matrix row 12 (concurrent load against a server with few slots), the
host pool, and the transport part of row 18 (bad timeouts, URLs, hosts in config)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from slmgraph import (
    CircuitOpenError,
    ConcurrencyLimit,
    ConfigError,
    GuardedModel,
    Message,
    ModelTimeoutError,
    OllamaModel,
    PooledModel,
    RetryingModel,
    RetryPolicy,
    Skill,
    build_graph,
    load_config,
    models_from_config,
)
from slmgraph.models import FallbackModel

HI = [Message("user", "hi")]
FAST = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)


class Echo(BaseModel):
    text: str


ECHO = Skill(name="echo", description="repeat the request", instructions="Repeat the request.", output_type=Echo)


def chats(server) -> int:
    return len(server.log("/api/chat"))


# -- row 12: concurrent load, server with 2 slots and a queue of 16 ----------------------------


async def test_fifty_concurrent_runs_queue_on_our_side_and_none_is_lost_or_mixed(fault_server):
    fault_server.configure(parallel=2, max_queue=16, latency=0.01, reply='{"text": "$USER"}')
    backend = OllamaModel("fault-model", host=fault_server.url)
    small = RetryingModel(GuardedModel(backend, limit=ConcurrencyLimit(2)), FAST)
    graph = build_graph([ECHO], models={"small": small}, checkpoint=None)
    requests = [f"request number {i}" for i in range(50)]
    results = await asyncio.gather(*(graph.ainvoke(r) for r in requests), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert [r.output_json["text"] for r in results] == requests  # no state bleed between runs
    stats = fault_server.stats()
    assert stats["rejected"] == 0 and stats["max_active"] <= 2 and chats(fault_server) == 50
    await small.aclose()


async def test_without_our_limit_the_same_burst_overflows_the_server_queue(fault_server):
    fault_server.configure(parallel=2, max_queue=16, latency=0.3)
    model = OllamaModel("fault-model", host=fault_server.url)
    results = await asyncio.gather(*(model.complete(HI) for _ in range(50)), return_exceptions=True)
    assert fault_server.stats()["rejected"] > 0  # what the client-side limit prevents
    assert any(isinstance(r, BaseException) for r in results)
    await model.aclose()


# -- host pool ---------------------------------------------------------------------------------


def pool(*servers, clock=None, **kw) -> PooledModel:
    members = [OllamaModel("fault-model", host=s.url, timeout=kw.pop("timeout", 5.0)) for s in servers]
    return PooledModel(members, clock=clock or (lambda: 0.0), **kw)


async def test_the_pool_routes_around_a_dead_host_and_probes_it_back_in(fault_server, fault_server_b):
    now = [0.0]
    p = pool(fault_server, fault_server_b, clock=lambda: now[0], failures=2, cooldown_s=10.0)
    fault_server.down()
    replies = [await p.complete(HI) for _ in range(6)]
    assert [r.text for r in replies] == ["ok"] * 6  # every call answered, by B
    assert chats(fault_server_b) == 6
    assert [h["state"] for h in p.status()] == ["open", "closed"]
    fault_server.up()
    for _ in range(3):
        await p.complete(HI)
    assert chats(fault_server) == 0  # still cooling down: not tried
    now[0] += 10.0
    for _ in range(4):
        await p.complete(HI)
    assert len(fault_server.log("/api/tags")) == 1  # probed once, cheaply
    assert [h["state"] for h in p.status()] == ["closed", "closed"]
    assert chats(fault_server) >= 2  # back in rotation
    await p.aclose()


async def test_a_probe_that_fails_keeps_the_host_out(fault_server, fault_server_b):
    now = [0.0]
    p = pool(fault_server, fault_server_b, clock=lambda: now[0], failures=1, cooldown_s=5.0)
    fault_server.down()
    await p.complete(HI)
    await p.complete(HI)
    now[0] += 5.0
    for _ in range(2):  # A's turn comes within two calls: probed, still down; B answers
        assert (await p.complete(HI)).text == "ok"
    assert p.status()[0]["state"] == "open" and chats(fault_server_b) == 4
    assert p.hosts[0].breaker.retry_in() == pytest.approx(5.0)  # a fresh cooldown
    await p.aclose()


async def test_the_pool_sends_work_to_the_least_loaded_host(fault_server, fault_server_b):
    for s in (fault_server, fault_server_b):
        s.configure(latency=0.2)
    p = pool(fault_server, fault_server_b)
    await asyncio.gather(*(p.complete(HI) for _ in range(8)))
    assert (chats(fault_server), chats(fault_server_b)) == (4, 4)
    assert [h["calls"] for h in p.status()] == [4, 4]
    await p.aclose()


async def test_a_black_holed_host_costs_one_timeout_then_the_call_moves_on(fault_server, fault_server_b):
    fault_server.faults([{"kind": "hang", "times": 5}])
    p = pool(fault_server, fault_server_b, timeout=1.0)
    p.hosts[1].limit.in_flight += 1  # make A the least loaded, so it is tried first
    try:
        assert (await p.complete(HI)).text == "ok"
    finally:
        p.hosts[1].limit.in_flight -= 1
    assert (chats(fault_server), chats(fault_server_b)) == (1, 1)
    await p.aclose()


async def test_when_every_host_is_out_the_error_says_so_and_a_fallback_answers(fault_server, fault_server_b):
    p = pool(fault_server, failures=1, cooldown_s=60.0)
    fault_server.down()
    with pytest.raises(Exception):
        await p.complete(HI)
    with pytest.raises(CircuitOpenError, match="every host"):
        await p.complete(HI)
    chain = FallbackModel([RetryingModel(p, FAST), OllamaModel("fault-model", host=fault_server_b.url)])
    assert (await chain.complete(HI)).text == "ok" and chain.served_by == [1]
    await chain.aclose()


async def test_a_timeout_on_every_host_is_raised_typed(fault_server):
    fault_server.faults([{"kind": "hang"}])
    with pytest.raises(ModelTimeoutError):
        await pool(fault_server, timeout=0.3).complete(HI)


# -- the pool and limits from config --------------------------------------------------------


async def test_a_config_host_pool_is_built_and_serves(tmp_path, fault_server, fault_server_b):
    path = tmp_path / "slmgraph.toml"
    path.write_text(
        "[small]\nprovider = \"ollama\"\nmodel = \"fault-model\"\n"
        f"hosts = [\"{fault_server.url}\", \"{fault_server_b.url}\"]\n"
        "timeout = 5\nconnect_timeout = 1\nidle_timeout = 2\nmax_parallel = 1\n"
        "[models.backup]\nprovider = \"ollama\"\nmodel = \"fault-model\"\n"
        f"host = \"{fault_server_b.url}\"\nmax_parallel = 3\n"
        "[models.chained]\nprovider = \"ollama\"\nmodel = \"fault-model\"\n"
        f"host = \"{fault_server.url}\"\nfallback = [\"backup\"]\n",
        encoding="utf-8",
    )
    models = models_from_config(load_config(path, env={}))
    small = models["small"]
    pooled = small.inner
    assert isinstance(pooled, PooledModel)
    assert [h.model.host for h in pooled.hosts] == [fault_server.url, fault_server_b.url]
    assert [h.limit.limit for h in pooled.hosts] == [1, 1]
    assert pooled.hosts[0].model.connect_timeout == 1 and pooled.hosts[0].model.idle_timeout == 2
    assert isinstance(models["chained"], FallbackModel)
    assert models["backup"].inner.limit.limit == 3
    await asyncio.gather(*(small.complete(HI) for _ in range(4)))
    assert chats(fault_server) + chats(fault_server_b) == 4
    fault_server.down()
    assert (await models["chained"].complete(HI)).text == "ok"
    for m in models.values():
        await m.aclose()


# -- row 18, transport part: bad timeouts, URLs and hosts fail at load, naming the field -----


@pytest.mark.parametrize(
    ("small", "field"),
    [
        ({"timeout": -1}, "small.timeout"),
        ({"timeout": 0}, "small.timeout"),
        ({"connect_timeout": -2}, "small.connect_timeout"),
        ({"idle_timeout": 0}, "small.idle_timeout"),
        ({"max_parallel": 0}, "small.max_parallel"),
        ({"host": "ftp://x"}, "small.host"),
        ({"host": "http://"}, "small.host"),
        ({"host": "http://h:notaport"}, "small.host"),
        ({"provider": "ollama", "hosts": []}, "small.hosts"),
        ({"provider": "ollama", "hosts": ["http://a:1", "not a url at all://"]}, "small.hosts"),
        ({"provider": "ollama", "hosts": ["http://a:1", "http://a:1"]}, "small.hosts"),
        ({"provider": "openai", "hosts": ["http://a:1"]}, "small.hosts"),
        ({"breaker_failures": 0}, "small.breaker_failures"),
        ({"fallback": ["nope"]}, "small.fallback"),
        ({"fallback": ["small"]}, "small.fallback"),
    ],
)
def test_bad_transport_config_fails_at_load_naming_the_field(small, field):
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"small": small}, env={})
    assert info.value.field == field


def test_a_fallback_may_not_leave_the_machine():
    with pytest.raises(ConfigError, match="off the machine") as info:
        load_config(
            overrides={
                "small": {"fallback": ["large"]},
                "large": {"provider": "openai", "model": "gpt-4o-mini", "base_url": "https://api.openai.com/v1"},
                "privacy": {"action": "redact"},  # even with a policy: escalation, not fallback, is the way out
            },
            env={},
        )
    assert info.value.field == "small.fallback"


def test_hosts_override_ollama_host_from_the_environment():
    cfg = load_config(overrides={"small": {"provider": "ollama", "hosts": ["http://127.0.0.1:1", "http://127.0.0.2:2"]}},
                      env={"OLLAMA_HOST": "http://127.0.0.3:3"})  # fmt: skip
    model = models_from_config(cfg)["small"].inner
    assert [h.model.host for h in model.hosts] == ["http://127.0.0.1:1", "http://127.0.0.2:2"]


def test_a_pool_with_a_remote_host_needs_a_privacy_policy():
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"small": {"provider": "ollama", "hosts": ["http://127.0.0.1:1", "http://gpu1:11434"]}},
                    env={})  # fmt: skip
    assert info.value.field == "privacy" and "gpu1" in str(info.value)
    local = load_config(overrides={"small": {"provider": "ollama", "hosts": ["http://127.0.0.1:1", "http://localhost:2"]}},
                        env={})  # fmt: skip
    model = models_from_config(local)["small"]
    assert type(model).__name__ == "RetryingModel"  # all hosts local: no privacy gate in front


def test_defaults_are_safe():
    cfg = load_config(env={})
    assert cfg.large is None  # no escalation unless configured
    assert cfg.small.connect_timeout <= 2.0 and cfg.small.timeout > 0
    assert cfg.small.fallback == [] and cfg.small.hosts is None


# -- per-endpoint guard: the concurrency limit and the half-open probe -------------------------


async def test_the_endpoint_limit_caps_what_the_server_sees(fault_server):
    fault_server.configure(latency=0.3, parallel=8)
    model = GuardedModel(OllamaModel("fault-model", host=fault_server.url), limit=ConcurrencyLimit(3))
    await asyncio.gather(*(model.complete(HI) for _ in range(12)))
    assert fault_server.stats()["max_active"] == 3 and chats(fault_server) == 12
    await model.aclose()


async def test_a_half_open_breaker_lets_exactly_one_probe_through(fault_server):
    from slmgraph import CircuitBreaker

    now = [0.0]
    breaker = CircuitBreaker(failures=1, cooldown_s=5.0, clock=lambda: now[0])
    fault_server.configure(latency=0.1)
    model = GuardedModel(OllamaModel("fault-model", host=fault_server.url), breaker=breaker)
    breaker.failure()
    now[0] = 5.0
    results = await asyncio.gather(*(model.complete(HI) for _ in range(5)), return_exceptions=True)
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 4
    assert chats(fault_server) == 1 and breaker.state == "closed"
    await model.aclose()
