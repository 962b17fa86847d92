"""The fault server process: an API port that can go down, and a control port that cannot.

Control endpoints (on both ports; the control port keeps answering while the API
port is down):

- ``POST /_control/faults``: ``{"queue": [...], "rate": r, "faults": [...], "seed": n}``
- ``POST /_control/config``: ``{"latency", "parallel", "max_queue", "reply", "chunks",
  "token_latency", "models"}``
- ``POST /_control/reset``: back to the start-up settings; clears faults and the log.
- ``POST /_control/down`` / ``POST /_control/up``: stop listening on the API port (clients
  get "connection refused"; open connections are reset) and listen again.
- ``GET /_control/log``: every request the API port received, with its body.
- ``GET /_control/stats``: open connections, busy slots, rejections.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import _wire as wire
from ._http import read_request, reset, respond
from ._server import FaultState, serve

__all__ = ["FaultApp"]


class FaultApp:
    def __init__(self, host: str, port: int, control_port: int, **defaults: Any) -> None:
        self.host, self.port, self.control_port = host, port, control_port
        self.state = FaultState(**defaults)
        self.api: asyncio.Server | None = None
        self.control: asyncio.Server | None = None
        self.api_writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.control = await asyncio.start_server(self._on_control, self.host, self.control_port)
        self.control_port = self.control.sockets[0].getsockname()[1]
        await self._listen()

    async def _listen(self) -> None:
        self.api = await asyncio.start_server(self._on_api, self.host, self.port, reuse_address=True)
        self.port = self.api.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None
        for writer in list(self.api_writers):
            reset(writer)

    async def _on_api(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.api_writers.add(writer)
        try:
            while (req := await read_request(reader)) is not None:
                if req.path.startswith("/_control/"):
                    keep = await self._control(req, writer)
                else:
                    keep = await serve(req, self.state, reader, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.api_writers.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _on_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (req := await read_request(reader)) is not None:
                await self._control(req, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _control(self, req, writer) -> bool:
        state, body = self.state, req.json() or {}
        try:
            if req.path == "/_control/log":
                out: Any = state.log
            elif req.path == "/_control/stats":
                out = state.stats(len(self.api_writers))
            elif req.path == "/_control/faults":
                state.script(body)
                out = {"queued_faults": len(state.queue), "rate": state.rate}
            elif req.path == "/_control/config":
                state.configure(body)
                out = state.config
            elif req.path == "/_control/reset":
                state.reset()
                out = state.config
            elif req.path == "/_control/down":
                await self.down()
                out = {"listening": False}
            elif req.path == "/_control/up":
                if self.api is None:
                    await self._listen()
                out = {"listening": True, "port": self.port}
            else:
                await respond(writer, 404, wire.dumps({"error": f"no control endpoint {req.path}"}))
                return True
        except (ValueError, TypeError) as exc:
            await respond(writer, 400, wire.dumps({"error": str(exc)}))
            return True
        await respond(writer, 200, wire.dumps(out))
        return True
