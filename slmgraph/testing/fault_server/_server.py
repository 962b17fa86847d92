"""The fault server: model endpoints that misbehave on command.

Model calls (``/api/chat``, ``/api/embed``, ``/v1/chat/completions``) take the next
scripted fault from a queue, else a random one at a set rate, else succeed after the
configured latency in one of ``parallel`` slots, with at most ``max_queue`` waiting
(then 503, as Ollama does with ``OLLAMA_NUM_PARALLEL`` and ``OLLAMA_MAX_QUEUE``).

Fault kinds (``{"kind": ..., options}``):

- ``reset``: read the request, then close the connection with a TCP reset.
- ``hang``: read the request, never answer (until the client gives up).
- ``stall``: send ``after`` stream chunks (or part of a body), then go silent.
- ``cut``: send ``after`` chunks, then drop the connection (``clean=true``: end the
  body properly but without Ollama's ``done`` record / OpenAI's ``[DONE]``).
- ``status``: answer ``status`` (500, 503, 429, 400, ...) with the protocol's error
  body, and ``Retry-After: retry_after`` when given.
- ``malformed``: answer 200 with ``body="html"`` (a proxy's error page) or ``"json"``
  (JSON cut short).
- ``error_record``: a 200 stream whose second record is ``{"error": ...}``.
- ``slow``: succeed, after ``latency`` seconds instead of the configured latency.
- ``ok``: succeed (a placeholder in a queue).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from typing import Any

from . import _wire as wire
from ._http import Request, end_chunked, reset, respond, send_chunk, start_chunked, wait_gone

__all__ = ["FaultState", "serve"]

MODEL_PATHS = ("/api/chat", "/api/embed", "/v1/chat/completions")
KINDS = {"ok", "reset", "hang", "stall", "cut", "status", "malformed", "error_record", "slow"}
_BUSY = "server busy, please try again.  maximum pending requests exceeded"


class FaultState:
    """Configuration, scripted faults, counters and the request log of one server."""

    def __init__(self, **defaults: Any) -> None:
        self.defaults = {"latency": 0.0, "parallel": 4, "max_queue": 512, "reply": "ok", "chunks": 4,
                         "token_latency": 0.0, "models": ["fault-model"], **defaults}  # fmt: skip
        self.reset()

    def reset(self) -> None:
        self.config = dict(self.defaults)
        self.queue: deque[dict[str, Any]] = deque()
        self.rate = 0.0
        self.rate_faults: list[dict[str, Any]] = []
        self.rng = random.Random(0)
        self.log: list[dict[str, Any]] = []
        self.active = self.waiting = self.max_active = self.rejected = self.served = 0
        self.slots = asyncio.Semaphore(int(self.config["parallel"]))

    def configure(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - set(self.defaults)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        self.config.update(changes)
        if "parallel" in changes:
            self.slots = asyncio.Semaphore(int(self.config["parallel"]))

    def script(self, spec: dict[str, Any]) -> None:
        """``{"queue": [fault, ...], "rate": 0.2, "faults": [fault, ...], "seed": 1}``."""
        for fault in spec.get("queue", []):
            _check(fault)
            self.queue.extend([fault] * int(fault.get("times", 1)))
        if "rate" in spec:
            self.rate = float(spec["rate"])
            self.rate_faults = [_check(f) for f in spec.get("faults", [{"kind": "status", "status": 503}])]
        if "seed" in spec:
            self.rng = random.Random(spec["seed"])

    def next_fault(self) -> dict[str, Any] | None:
        if self.queue:
            return self.queue.popleft()
        if self.rate and self.rng.random() < self.rate:
            return self.rng.choice(self.rate_faults)
        return None

    def stats(self, open_connections: int) -> dict[str, Any]:
        return {"open_connections": open_connections, "active": self.active, "waiting": self.waiting,
                "max_active": self.max_active, "rejected": self.rejected, "served": self.served,
                "requests": len(self.log), "queued_faults": len(self.queue)}  # fmt: skip


def _check(fault: dict[str, Any]) -> dict[str, Any]:
    if fault.get("kind") not in KINDS:
        raise ValueError(f"unknown fault kind {fault.get('kind')!r}; one of {sorted(KINDS)}")
    return fault


class _Call:
    """What one model request asks for, protocol-neutral."""

    def __init__(self, req: Request, body: Any, state: FaultState) -> None:
        self.req, self.state = req, state
        body = body if isinstance(body, dict) else {}
        self.openai = req.path.startswith("/v1/")
        self.embed = req.path == "/api/embed"
        self.model = str(body.get("model", ""))
        self.stream = bool(body.get("stream", not self.openai)) and not self.embed
        self.usage_chunk = bool((body.get("stream_options") or {}).get("include_usage"))
        self.inputs = body.get("input", "")
        messages = body.get("messages") or []
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        self.prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
        self.text = str(state.config["reply"]).replace("$USER", json.dumps(str(user))[1:-1])

    def error_body(self, status: int, message: str) -> bytes:
        return wire.dumps(wire.openai_error(message, status=status) if self.openai else wire.ollama_error(message))

    def full_body(self, seconds: float) -> bytes:
        if self.embed:
            return wire.dumps(wire.ollama_embed(self.model, self.inputs))
        if self.openai:
            return wire.dumps(wire.openai_chat(self.model, self.text, self.prompt_tokens))
        return wire.dumps(wire.ollama_chat(self.model, self.text, self.prompt_tokens, seconds))

    def records(self, seconds: float) -> tuple[list[bytes], bytes]:
        """The stream's content records, and its terminating record(s)."""
        pieces = wire.split_reply(self.text, int(self.state.config["chunks"]))
        if self.openai:
            body = [b"data: " + wire.dumps(wire.openai_chunk(self.model, p)) + b"\n\n" for p in pieces]
            end = b"data: " + wire.dumps(wire.openai_chunk(self.model, None, "stop")) + b"\n\n"
            if self.usage_chunk:
                end += b"data: " + wire.dumps(wire.openai_usage_chunk(self.model, self.text, self.prompt_tokens)) + b"\n\n"
            return body, end + b"data: [DONE]\n\n"
        body = [wire.dumps(wire.ollama_chunk(self.model, p)) + b"\n" for p in pieces]
        return body, wire.dumps(wire.ollama_done(self.model, self.text, self.prompt_tokens, seconds)) + b"\n"


async def serve_model_call(call: _Call, fault: dict[str, Any] | None, reader, writer) -> bool:
    """Answer one model request under ``fault``; ``False`` when the connection is done."""
    state, kind = call.state, (fault or {}).get("kind", "ok")
    if kind == "reset":
        reset(writer)
        return False
    if kind == "hang":
        await wait_gone(reader)
        return False
    if kind == "status":
        status = int(fault.get("status", 500))
        headers = {"Retry-After": _num(fault["retry_after"])} if fault.get("retry_after") is not None else {}
        await respond(writer, status, call.error_body(status, fault.get("message") or f"injected HTTP {status}"),
                      headers=headers)  # fmt: skip
        return True
    if kind == "malformed":
        html = fault.get("body", "html") == "html"
        body = b"<html><body><h1>502 Bad Gateway</h1></body></html>" if html else b'{"model": "x", "message": {"role'
        if call.stream:
            await start_chunked(writer, "text/html" if html else "application/x-ndjson")
            await send_chunk(writer, (b"data: " + body + b"\n\n") if call.openai and not html else body + b"\n")
            await end_chunked(writer)
        else:
            await respond(writer, 200, body, content_type="text/html" if html else "application/json")
        return True
    if call.model not in state.config["models"]:
        status, what = 404, f"model '{call.model}' not found"
        await respond(writer, status, call.error_body(status, what + (", try pulling it first" if not call.openai else "")))
        return True
    # Everything else runs in a slot, as a real server would.
    if state.active >= int(state.config["parallel"]) and state.waiting >= int(state.config["max_queue"]):
        state.rejected += 1
        await respond(writer, 503, call.error_body(503, _BUSY))
        return True
    state.waiting += 1
    try:
        await state.slots.acquire()
    finally:
        state.waiting -= 1
    state.active += 1
    state.max_active = max(state.max_active, state.active)
    try:
        latency = float(fault.get("latency", 0.0)) if kind == "slow" else float(state.config["latency"])
        started = time.perf_counter()
        if latency and await wait_gone(reader, latency):
            return False
        return await _answer(call, fault, kind, reader, writer, time.perf_counter() - started)
    finally:
        state.active -= 1
        state.slots.release()


async def _answer(call: _Call, fault, kind: str, reader, writer, seconds: float) -> bool:
    after = int((fault or {}).get("after", 1))
    if not call.stream:
        if kind == "error_record":  # a 200 whose JSON is an error, not a reply
            await respond(writer, 200, call.error_body(500, "injected error record"))
            return True
        body = call.full_body(seconds)
        if kind in ("stall", "cut"):
            await respond(writer, 200, body, send_bytes=len(body) // 2)
            if kind == "stall":
                await wait_gone(reader)
            else:
                reset(writer)
            return False
        await respond(writer, 200, body)
        call.state.served += 1
        return True
    records, end = call.records(seconds)
    await start_chunked(writer, "text/event-stream" if call.openai else "application/x-ndjson")
    token_latency = float(call.state.config["token_latency"])
    for i, record in enumerate(records):
        if kind in ("stall", "cut", "error_record") and i == after:
            break
        if i and token_latency and await wait_gone(reader, token_latency):
            return False
        await send_chunk(writer, record)
    if kind == "stall":
        await wait_gone(reader)
        return False
    if kind == "cut":
        if fault.get("clean"):
            await end_chunked(writer)
            return True
        reset(writer)
        return False
    if kind == "error_record":
        err = {"error": {"message": "injected error record"}} if call.openai else wire.ollama_error("injected error record")
        await send_chunk(writer, (b"data: " + wire.dumps(err) + b"\n\n") if call.openai else wire.dumps(err) + b"\n")
        await end_chunked(writer)
        return True
    await send_chunk(writer, end)
    await end_chunked(writer)
    call.state.served += 1
    return True


def _num(value: Any) -> str:
    f = float(value)
    return str(int(f)) if f == int(f) else str(f)


async def serve(req: Request, state: FaultState, reader, writer) -> bool:
    """Answer one request on the API port; ``False`` when the connection is done."""
    body = req.json()
    entry = {"seq": len(state.log), "t": time.time(), "method": req.method, "path": req.path, "body": body,
             "fault": None}  # fmt: skip
    state.log.append(entry)
    if req.method == "POST" and req.path in MODEL_PATHS:
        fault = state.next_fault()
        entry["fault"] = fault["kind"] if fault else None
        return await serve_model_call(_Call(req, body, state), fault, reader, writer)
    models = list(state.config["models"])
    if req.method == "GET" and req.path == "/api/tags":
        await respond(writer, 200, wire.dumps(wire.ollama_tags(models)))
    elif req.method == "GET" and req.path == "/v1/models":
        await respond(writer, 200, wire.dumps(wire.openai_models(models)))
    elif req.method == "GET" and req.path == "/api/version":
        await respond(writer, 200, wire.dumps({"version": "0.0.0-fault"}))
    elif req.path in ("/", ""):
        await respond(writer, 200, b"Ollama is running", content_type="text/plain")
    else:
        await respond(writer, 404, wire.dumps({"error": f"no route {req.method} {req.path}"}))
    return True
