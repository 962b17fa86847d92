"""A model server that fails on command, in its own process, for reliability tests.

It speaks the Ollama (``/api/chat`` JSON and NDJSON, ``/api/tags``, ``/api/embed``) and
OpenAI (``/v1/models``, ``/v1/chat/completions`` JSON and SSE) wire protocols, takes
scripted faults over a control port, and logs every request body it receives::

    from slmgraph.testing.fault_server import FaultServer

    with FaultServer.start(latency=0.05, parallel=1) as server:
        server.faults(queue=[{"kind": "status", "status": 503, "retry_after": 1}])
        model = OllamaModel("fault-model", host=server.url)
        ...
        assert len(server.log()) == 2

Run it by hand with ``python -m slmgraph.testing.fault_server --port 11435``. The fault kinds
are listed in :mod:`slmgraph.testing.fault_server._server`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

__all__ = ["FaultServer"]


class FaultServer:
    """A running fault server subprocess and its control client.

    Attributes:
        url: the API root, e.g. ``http://127.0.0.1:40123`` (an Ollama host).
        openai_url: ``url + "/v1"``, an OpenAI ``base_url``.
        control_url: the control port, which answers even while the API port is down.
    """

    def __init__(self, proc: subprocess.Popen, url: str, control_url: str) -> None:
        self.proc = proc
        self.url = url
        self.openai_url = url + "/v1"
        self.control_url = control_url
        self._http = httpx.Client(base_url=control_url, timeout=10.0)

    @classmethod
    def start(
        cls,
        *,
        port: int = 0,
        latency: float = 0.0,
        parallel: int = 4,
        max_queue: int = 512,
        reply: str = "ok",
        models: tuple[str, ...] = ("fault-model",),
    ) -> FaultServer:
        """Start ``python -m slmgraph.testing.fault_server`` and wait until it listens."""
        # Import this package as a top-level one, so the child skips importing all of
        # slmgraph (langgraph and friends take seconds); it needs only the stdlib.
        here = Path(__file__).resolve().parent
        boot = f"import sys; sys.path.insert(0, {str(here.parent)!r}); from {here.name}.__main__ import main; main()"
        cmd = [
            sys.executable, "-c", boot, "--port", str(port),
            "--latency", str(latency), "--parallel", str(parallel), "--max-queue", str(max_queue),
            "--reply", reply, "--models", ",".join(models),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY "):
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise RuntimeError(f"the fault server did not start: {line}{err[-2000:]}")
        _, url, control = line.split()
        return cls(proc, url, control)

    # -- control --------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self._http.post(path, json=body or {})
        if r.status_code != 200:
            raise ValueError(f"fault server rejected {path}: {r.text}")
        return r.json()

    def faults(self, queue: list[dict[str, Any]] | None = None, *, rate: float | None = None,
               kinds: list[dict[str, Any]] | None = None, seed: int | None = None) -> None:  # fmt: skip
        """Script faults: ``queue`` for the next model calls in order, then ``kinds``
        at random with probability ``rate``."""
        spec: dict[str, Any] = {"queue": queue or []}
        if rate is not None:
            spec["rate"] = rate
            if kinds:
                spec["faults"] = kinds
        if seed is not None:
            spec["seed"] = seed
        self._post("/_control/faults", spec)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change latency, parallel, max_queue, reply, chunks, token_latency or models."""
        return self._post("/_control/config", changes)

    def reset(self) -> None:
        """Start-up settings again, no faults, empty log, API port listening."""
        self._post("/_control/reset")
        self._post("/_control/up")

    def down(self) -> None:
        """Stop listening: new connections are refused, open ones reset."""
        self._post("/_control/down")

    def up(self) -> None:
        """Listen again on the same port."""
        self._post("/_control/up")

    def log(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every request received (``method``, ``path``, ``body``, ``fault``), oldest first."""
        entries = self._http.get("/_control/log").json()
        return [e for e in entries if path is None or e["path"] == path]

    def stats(self) -> dict[str, Any]:
        """``open_connections``, ``active``, ``waiting``, ``max_active``, ``rejected``, ``served``."""
        return self._http.get("/_control/stats").json()

    # -- lifetime -------------------------------------------------------------------

    def stop(self) -> None:
        """Kill the server process and wait for it."""
        self._http.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
