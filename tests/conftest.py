"""Shared fixtures: one real llama_cpp.server per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from slmgraph.models._llamacpp import default_gguf_path

try:
    from tests.llama_server import llama_server
except ImportError:  # tests/ is on sys.path instead of its parent
    from llama_server import llama_server


@pytest.fixture(autouse=True)
def _embedding_cache_in_tmp(tmp_path, monkeypatch):
    """Banks cache their vectors under the test's own folder, never the repository's."""
    monkeypatch.setenv("SLMGRAPH_EMBED_CACHE", str(tmp_path / "embeddings"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The ``/v1`` URL of a real ``python -m llama_cpp.server`` serving the bundled GGUF."""
    with llama_server(default_gguf_path(), n_ctx=2048) as url:
        yield url


# Fault-injection server fixtures (reliability tests).
try:
    from tests.fault_fixtures import _fault_proc, _fault_proc_b, fault_server, fault_server_b  # noqa: F401
except ImportError:  # tests/ is on sys.path instead of its parent
    from fault_fixtures import _fault_proc, _fault_proc_b, fault_server, fault_server_b  # noqa: F401


# A real PostgreSQL server for the `postgres` tests (tests/pg_server.py).
try:
    from tests.pg_server import pg_server
except ImportError:  # tests/ is on sys.path instead of its parent
    from pg_server import pg_server


@pytest.fixture(scope="session")
def pg():
    """A PostgreSQL server started for this test session (initdb into a temp dir)."""
    with pg_server() as server:
        yield server


@pytest.fixture
def pg_dsn(pg, request):
    """A fresh database on the session's server, for one test."""
    import re
    import uuid

    name = "t_" + re.sub(r"\W", "_", request.node.name)[:40].lower() + "_" + uuid.uuid4().hex[:6]
    return pg.createdb(name)
