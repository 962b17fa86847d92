"""``slmgraph serve --workers N``: N server processes on one port.

The parent binds the socket once and forks N children; each child runs its own
uvicorn server (its own event loop, graphs and database pool) accepting on the
shared socket, so the kernel spreads connections over them. The parent only
supervises: a child that dies is replaced, and SIGTERM / SIGINT are passed on to
every child, which drains as a single server does.

The processes share state only through the graphs' store. With PostgreSQL
(``checkpoint = "postgresql://..."``) a run whose process died is finished by
another one: every server looks for orphaned runs periodically (see
:class:`~slmgraph.serve._host.GraphHost`). A SQLite file works too, on one machine.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable

__all__ = ["run_workers"]

log = logging.getLogger("slmgraph.serve")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_workers(n: int, host: str, port: int, child: Callable[[socket.socket], None]) -> None:
    """Fork ``n`` processes each calling ``child(sock)`` on one bound socket, and
    supervise them until SIGTERM / SIGINT (then wait for all to exit)."""
    sock = _bind(host, port)
    stopping = False
    children: set[int] = set()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the child: default signal handling, then serve
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                child(sock)
            except BaseException:  # noqa: BLE001 - reported, then the child exits
                log.exception("server process %d failed", os.getpid())
                code = 1
            os._exit(code)
        children.add(pid)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for _ in range(n):
            spawn()
        while children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            children.discard(pid)
            if not stopping:
                log.warning("server process %d exited (status %d); starting another", pid, status)
                time.sleep(0.2)
                spawn()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sock.close()
