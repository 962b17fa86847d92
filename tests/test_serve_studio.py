"""langgraph.json: every graph it names loads the way LangGraph's dev server loads it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from langgraph.graph.state import CompiledStateGraph

ROOT = Path(__file__).resolve().parents[1]


def load_like_langgraph(spec: str):
    """``"./path/file.py:attr"`` -> the attribute, as ``langgraph_api.graph`` does it:
    the file is executed as a module of its own, and the name is read from the
    module's ``__dict__`` (a module ``__getattr__`` would not be consulted)."""
    path, _, attr = spec.rpartition(":")
    file = (ROOT / path).resolve()
    modname = path.replace("/", "__").replace(".py", "").lstrip(".")
    modspec = importlib.util.spec_from_file_location(modname, file)
    module = importlib.util.module_from_spec(modspec)
    sys.modules[modname] = module
    try:
        modspec.loader.exec_module(module)
        return module.__dict__[attr]
    finally:
        sys.modules.pop(modname, None)


def _ready_graph_names() -> set[str]:
    """The ready graphs slmgraph ships, read in a fresh process (other tests register
    graphs of their own in ``GRAPHS``)."""
    out = subprocess.run(
        [sys.executable, "-c", "import json; from slmgraph.graphs import GRAPHS; print(json.dumps(sorted(GRAPHS)))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return set(json.loads(out.stdout))


def _studio_graphs(monkeypatch) -> dict[str, CompiledStateGraph]:
    for var in ("SLMGRAPH_LARGE_MODEL", "SLMGRAPH_CHECKPOINT", "SLMGRAPH_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert config["dependencies"] == ["."]
    return {graph_id: load_like_langgraph(spec) for graph_id, spec in config["graphs"].items()}


def test_langgraph_json_names_every_ready_graph(monkeypatch):
    names = set(json.loads((ROOT / "langgraph.json").read_text())["graphs"])
    ready = _ready_graph_names()
    assert {"quickstart", "contract_pipeline"} <= ready
    assert names == ready, f"missing from langgraph.json: {sorted(ready - names)}; unknown: {sorted(names - ready)}"


def test_langgraph_json_names_compiled_graphs_that_load(monkeypatch):
    from slmgraph.config import Config
    from slmgraph.graphs import graph_from_config

    for graph_id, graph in _studio_graphs(monkeypatch).items():
        assert isinstance(graph, CompiledStateGraph), graph_id
        assert graph.checkpointer is None  # the LangGraph server brings its own
        # The ready graph of that name, whatever its shape (routed or a pipeline).
        built = graph_from_config(graph_id, Config()).compile()
        assert set(graph.nodes) == set(built.nodes), graph_id
        assert graph.name == graph_id


def test_studio_can_build_the_input_form_of_each_graph(monkeypatch):
    for graph_id, graph in _studio_graphs(monkeypatch).items():
        assert "request" in graph.get_input_jsonschema()["properties"], graph_id


def test_studio_reads_the_config_file_named_by_the_environment(monkeypatch, tmp_path):
    toml = tmp_path / "slm.toml"
    toml.write_text("route_threshold = 0.9\n[small]\nprovider = \"ollama\"\nmodel = \"qwen2.5:0.5b\"\n")
    monkeypatch.setenv("SLMGRAPH_CONFIG", str(toml))
    from slmgraph.serve import studio

    graph = studio.compiled("quickstart")
    assert isinstance(graph, CompiledStateGraph)
    toml.write_text("no_such_field = 1\n")
    with pytest.raises(Exception, match="no_such_field"):
        studio.compiled("quickstart")
