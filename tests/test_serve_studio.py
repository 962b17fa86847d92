"""langgraph.json: every graph it names loads the way LangGraph's dev server loads it."""

from __future__ import annotations

import importlib.util
import json
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


def test_langgraph_json_names_compiled_graphs_that_load(monkeypatch):
    for var in ("SLMGRAPH_LARGE_MODEL", "SLMGRAPH_CHECKPOINT", "SLMGRAPH_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert config["dependencies"] == ["."]
    assert config["graphs"], "langgraph.json names no graph"
    for graph_id, spec in config["graphs"].items():
        graph = load_like_langgraph(spec)
        assert isinstance(graph, CompiledStateGraph), graph_id
        assert graph.checkpointer is None  # the LangGraph server brings its own
        assert {"router", "specialist", "escalation"} <= set(graph.nodes), graph_id


def test_studio_can_build_the_input_form_of_each_graph(monkeypatch):
    monkeypatch.delenv("SLMGRAPH_CONFIG", raising=False)
    for spec in json.loads((ROOT / "langgraph.json").read_text())["graphs"].values():
        assert "request" in load_like_langgraph(spec).get_input_jsonschema()["properties"]


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
