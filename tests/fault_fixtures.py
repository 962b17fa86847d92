"""Fixtures that run the fault-injection model server in another process.

Each server is started once per session on a free loopback port and killed at the
end; the function-scoped fixtures reset its faults, settings and log before each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from slmgraph.testing import FaultServer


@pytest.fixture(scope="session")
def _fault_proc() -> Iterator[FaultServer]:
    with FaultServer.start() as server:
        yield server


@pytest.fixture(scope="session")
def _fault_proc_b() -> Iterator[FaultServer]:
    with FaultServer.start() as server:
        yield server


@pytest.fixture
def fault_server(_fault_proc: FaultServer) -> Iterator[FaultServer]:
    """A fault server with no faults, no latency and an empty request log."""
    _fault_proc.reset()
    yield _fault_proc
    _fault_proc.reset()


@pytest.fixture
def fault_server_b(_fault_proc_b: FaultServer) -> Iterator[FaultServer]:
    """A second, independent fault server (for host pools and fallbacks)."""
    _fault_proc_b.reset()
    yield _fault_proc_b
    _fault_proc_b.reset()
