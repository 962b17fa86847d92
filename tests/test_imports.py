"""Lazy imports: ``slmgraph --help`` and ``import slmgraph`` load no LangGraph, backend
SDK, LangChain module or llama.cpp, and product modules never load the test kit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("langgraph", "openai", "ollama", "llama_cpp", "langchain_core")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})  # fmt: skip


def _imported(importtime_stderr: str) -> set[str]:
    """Top-level packages named in ``-X importtime`` output."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_cli_help_imports_no_graph_runtime_backend_sdk_or_langchain():
    done = _run("-X", "importtime", "-m", "slmgraph.cli", "--help")
    assert done.returncode == 0 and "usage: slmgraph" in done.stdout
    imported = _imported(done.stderr)
    assert "slmgraph" in imported and "pydantic" in imported  # the parse worked
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_import_slmgraph_is_light_and_names_load_on_first_use():
    code = (
        "import json, sys, slmgraph; before = sorted(m for m in %r if m in sys.modules); "
        "slmgraph.Skill; slmgraph.RetryPolicy; skills = sorted(m for m in %r if m in sys.modules); "
        "slmgraph.OpenAIModel; print(json.dumps([before, skills, 'openai' in sys.modules]))"
    ) % (HEAVY, HEAVY)
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr
    before, after_skills, openai_loaded = json.loads(done.stdout)
    assert before == [] and after_skills == [] and openai_loaded


def test_a_malformed_ollama_host_does_not_break_import():
    code = "import slmgraph; from slmgraph import OllamaModel, models_from_config; print('ok')"
    done = _run("-c", code, env={"OLLAMA_HOST": "http://[::bad::"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_product_modules_never_import_the_test_kit():
    code = (
        "import pathlib, sys, importlib, slmgraph\n"
        "root = pathlib.Path(slmgraph.__file__).parent\n"
        "mods = [p.relative_to(root).with_suffix('').parts for p in root.rglob('*.py')]\n"
        "names = ['.'.join(('slmgraph', *(m[:-1] if m[-1] == '__init__' else m))) for m in mods\n"
        "         if 'testing' not in m and m[-1] != '__main__']\n"
        "for n in names: importlib.import_module(n)\n"
        "assert len(names) > 50, names\n"
        "print(sorted(m for m in sys.modules if m.startswith('slmgraph.testing')))\n"
    )
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
