"""Bad input at the command line and in the configuration (RELIABILITY.md rows 18 and
25): invalid UTF-8 on stdin, a malformed OLLAMA_HOST, an API key bound for plain
http on another machine, a corrupted checkpoint file at `serve` start. Each gets
one clear line naming what to fix, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from slmgraph import ConfigError, load_config
from slmgraph._env import check_ollama_host
from slmgraph.serve._server import check_checkpoints

from test_serve import chat_graph


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLMGRAPH_", "OLLAMA_", "OPENAI_"))}
    return {**env, **extra}


def _cli(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmgraph.cli", *args], input=stdin, capture_output=True,
                          env=env or _env(), timeout=300)


def test_invalid_utf8_on_stdin_is_one_clear_line(tmp_path):
    done = _cli("run", "--small-provider", "embedded", "--checkpoint", str(tmp_path / "c.sqlite"),
                stdin=b"refund \xff\xfe my card")
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [
        "slmgraph: error: RequestError: stdin is not UTF-8 text (byte 0xff at offset 7); "
        "convert it (e.g. `iconv -t UTF-8`) or pass the request as arguments"]


def test_a_malformed_ollama_host_is_a_config_error_naming_it():
    for bad in ("localhost:abc", "http://[::1", "http://127.0.0.1:99999999"):
        with pytest.raises(ConfigError) as e:
            check_ollama_host({"OLLAMA_HOST": bad})
        assert e.value.field == "OLLAMA_HOST" and bad in str(e.value)
        with pytest.raises(ConfigError) as e:
            load_config(env={"OLLAMA_HOST": bad})
        assert e.value.field.startswith("OLLAMA_HOST")
    for good in ("127.0.0.1", "0.0.0.0:11434", "http://gpu1:11434", "https://ollama.example/"):
        check_ollama_host({"OLLAMA_HOST": good})
    # Nothing is built at import: --help works; a command names the variable in one line.
    bad = _env(OLLAMA_HOST="localhost:abc")
    assert _cli("--help", env=bad).returncode == 0
    done = _cli("run", "--small-provider", "embedded", "hi", env=bad)
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "OLLAMA_HOST" in err


def test_the_ollama_sdk_is_not_imported_with_a_malformed_host(monkeypatch):
    """The ollama package builds a client from OLLAMA_HOST on import; a bad value is
    a ConfigError naming it, before that import (used by any OllamaModel call)."""
    from slmgraph.models import _ollama

    monkeypatch.setenv("OLLAMA_HOST", "http://[::1")
    with pytest.raises(ConfigError) as e:
        _ollama._sdk()
    assert e.value.field == "OLLAMA_HOST"
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11434")
    assert _ollama._sdk().AsyncClient


LARGE = {"provider": "openai", "model": "big", "api_key": "sk-secret"}


def _large(base_url: str, env: dict[str, str] | None = None, **extra):
    return load_config(env=env or {}, overrides={"large": {**LARGE, "base_url": base_url, **extra},
                                                 "privacy": {"action": "redact"}})


def test_an_api_key_over_plain_http_to_another_machine_is_refused_unless_allowed():
    for url in ("http://10.0.0.5:8000/v1", "http://llm.example.com/v1", "http://192.168.1.20/v1"):
        with pytest.raises(ConfigError) as e:
            _large(url)
        assert e.value.field == "large.base_url" and "cleartext" in str(e.value) and "allow_plain_http" in str(e.value)
    assert _large("http://10.0.0.5:8000/v1", allow_plain_http=True).large.allow_plain_http
    assert _large("https://llm.example.com/v1").large is not None
    assert _large("http://127.0.0.1:8080/v1").large is not None  # loopback: nothing crosses a network
    # The key may come from the environment instead.
    no_key = {**LARGE, "api_key": None, "base_url": "http://10.0.0.5/v1"}
    overrides = {"large": no_key, "privacy": {"action": "redact"}}
    assert load_config(env={}, overrides=overrides).large is not None
    with pytest.raises(ConfigError):
        load_config(env={"OPENAI_API_KEY": "sk-env"}, overrides=overrides)


def test_a_corrupted_checkpoint_at_serve_start_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "checkpoints.sqlite"
    bad.write_bytes(os.urandom(8192))
    done = _cli("serve", "quickstart", "--small-provider", "embedded", "--checkpoint", str(bad), "--port", "0")
    err = done.stderr.decode()
    assert done.returncode == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "not a readable SQLite database" in lines[0]


def test_check_checkpoints_finds_a_damaged_page(tmp_path):
    path = tmp_path / "c.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("row %d " % i * 20,) for i in range(2000)])
    conn.close()
    check_checkpoints({"g": chat_graph(checkpoint=path)})  # whole: passes
    with open(path, "r+b") as f:
        f.seek(4096 * 5)  # a page in the middle of the table
        f.write(b"\xde\xad" * 2048)
    with pytest.raises(ConfigError) as e:
        check_checkpoints({"g": chat_graph(checkpoint=path)})
    assert e.value.field == "checkpoint" and str(path) in str(e.value)
