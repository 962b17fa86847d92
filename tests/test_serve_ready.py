"""A server process is ready before it accepts requests: every served model has
its client library imported and its client made on the serving loop
(``Model.aprepare``), without a request to the model; a model that cannot get ready
does not stop the server. ``slmgraph serve`` does the imports once before forking,
and leaves no client of its short-lived loop behind."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from pathlib import Path

import httpx

from slmgraph.models import Message, OllamaModel
from slmgraph.serve import ServeConfig, create_app
from slmgraph.serve._server import _preload
from slmgraph.testing import FunctionModel

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("serve_helpers", HERE / "test_serve.py")
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)

BODY = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}


class Preparing(FunctionModel):
    """Records each ``aprepare`` (with the loop it ran on) next to its calls."""

    def __init__(self, events: list, *, fail: bool = False) -> None:
        super().__init__(ts.echo, name="preparing")
        self.events, self.fail = events, fail

    async def aprepare(self) -> None:
        self.events.append(("prepare", asyncio.get_running_loop()))
        if self.fail:
            raise RuntimeError("no client library here")

    async def complete(self, messages, *, schema=None, settings=None):
        self.events.append(("call", asyncio.get_running_loop()))
        return await super().complete(messages, schema=schema, settings=settings)


def test_every_model_is_prepared_on_the_serving_loop_before_the_first_request():
    events: list = []
    app = create_app(ts.chat_graph(Preparing(events)), ServeConfig())
    with ts.running(app) as base:
        assert [kind for kind, _ in events] == ["prepare"]  # through the graph's wrappers, before any request
        assert httpx.post(f"{base}/v1/chat/completions", json=BODY).status_code == 200
    assert [kind for kind, _ in events] == ["prepare", "call"]
    assert events[0][1] is events[1][1]  # the loop that serves the calls


def test_a_model_that_cannot_get_ready_is_logged_and_the_server_still_serves(caplog):
    events: list = []
    app = create_app(ts.chat_graph(Preparing(events, fail=True)), ServeConfig())
    with caplog.at_level(logging.WARNING, logger="slmgraph.serve"), ts.running(app) as base:
        assert httpx.post(f"{base}/v1/chat/completions", json=BODY).status_code == 200
    assert [kind for kind, _ in events] == ["prepare", "call"]
    assert any("could not get ready" in r.getMessage() and "no client library here" in r.getMessage()
               for r in caplog.records)


async def test_ollama_prepare_makes_the_loops_client_without_a_request(httpserver):
    model = OllamaModel("m", host=f"http://{httpserver.host}:{httpserver.port}")
    await model.aprepare()
    client = model._client
    assert client is not None and model._client_loop is asyncio.get_running_loop()
    assert httpserver.log == []  # nothing was sent
    httpserver.expect_request("/api/chat").respond_with_json(
        {"model": "m", "message": {"role": "assistant", "content": "hi"}, "done": True})
    assert (await model.complete([Message("user", "x")])).text == "hi"
    assert model._client is client  # the prepared client serves the call
    await model.aclose()


def test_preload_before_forking_leaves_no_client_of_its_own_loop(httpserver):
    events: list = []
    ollama = OllamaModel("m", host=f"http://{httpserver.host}:{httpserver.port}")
    graphs = {"a": ts.chat_graph(ollama), "b": ts.chat_graph(Preparing(events), name="b")}
    _preload(graphs)
    assert [kind for kind, _ in events] == ["prepare"]
    assert ollama._client is None  # closed with the preload's loop; each process makes its own
    assert httpserver.log == []

