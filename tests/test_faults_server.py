"""The fault server itself: it speaks both wire protocols well enough for the official
clients, logs what it receives, and enforces its slots and queue like Ollama."""

from __future__ import annotations

import asyncio

import httpx
import ollama
import openai
import pytest

from slmgraph import Message, OllamaModel, OpenAIModel


async def test_the_official_ollama_client_reads_every_endpoint(fault_server):
    client = ollama.AsyncClient(host=fault_server.url)
    assert [m.model for m in (await client.list()).models] == ["fault-model"]
    embedded = await client.embed(model="fault-model", input=["a", "b"])
    assert len(embedded.embeddings) == 2 and embedded.embeddings[0] != embedded.embeddings[1]
    reply = await client.chat(model="fault-model", messages=[{"role": "user", "content": "hi"}])
    assert reply.done and reply.message.content == "ok" and reply.eval_count
    parts = [p async for p in await client.chat(model="fault-model", messages=[], stream=True)]
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    await client.close()


async def test_the_official_openai_client_reads_every_endpoint(fault_server):
    fault_server.configure(reply="hello there")
    client = openai.AsyncOpenAI(base_url=fault_server.openai_url, api_key="x", max_retries=0)
    assert [m.id async for m in client.models.list()] == ["fault-model"]
    done = await client.chat.completions.create(model="fault-model", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "hello there" and done.usage.total_tokens
    stream = await client.chat.completions.create(
        model="fault-model", messages=[], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello there"
    assert chunks[-1].usage is not None
    await client.close()


async def test_every_request_body_is_logged(fault_server):
    model = OpenAIModel("fault-model", base_url=fault_server.openai_url)
    await model.complete([Message("user", "secret words")])
    (entry,) = fault_server.log("/v1/chat/completions")
    assert entry["body"]["messages"] == [{"role": "user", "content": "secret words"}]
    await model.aclose()


async def test_the_reply_can_echo_the_request(fault_server):
    fault_server.configure(reply='{"text": "$USER"}')
    model = OllamaModel("fault-model", host=fault_server.url)
    assert (await model.complete([Message("user", 'say "x"')])).text == '{"text": "say \\"x\\""}'
    await model.aclose()


async def test_slots_and_queue_behave_like_ollama(fault_server):
    fault_server.configure(parallel=1, max_queue=2, latency=1.0)
    async with httpx.AsyncClient(base_url=fault_server.url) as client:
        body = {"model": "fault-model", "messages": [], "stream": False}
        codes = [r.status_code for r in await asyncio.gather(*(client.post("/api/chat", json=body) for _ in range(5)))]
    assert sorted(codes) == [200, 200, 200, 503, 503]
    stats = fault_server.stats()
    assert (stats["max_active"], stats["rejected"]) == (1, 2)


def test_a_bad_fault_is_refused(fault_server):
    with pytest.raises(ValueError, match="unknown fault kind"):
        fault_server.faults([{"kind": "explode"}])
    with pytest.raises(ValueError, match="unknown config keys"):
        fault_server.configure(colour="red")


async def test_down_refuses_connections_and_up_restores_them(fault_server):
    fault_server.down()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(fault_server.url + "/api/tags")
        fault_server.up()
        assert (await client.get(fault_server.url + "/api/tags")).status_code == 200
