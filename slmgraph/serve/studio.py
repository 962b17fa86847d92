"""Module-level compiled graphs for LangGraph's own tooling (``langgraph dev``, Studio).

``langgraph.json`` at the repository root names every ready graph (every name in
``slmgraph.graphs.GRAPHS``) as an attribute of this file, e.g.
``"contract_pipeline": "./slmgraph/serve/studio.py:contract_pipeline"``. LangGraph
executes this file as a module of its own and reads the names from its namespace,
so each graph is a plain module-level name: a new ready graph needs a line here
and one in ``langgraph.json`` (a test fails until both are there). Graphs are built
from the usual configuration (``SLMGRAPH_*`` / ``OLLAMA_HOST`` / ``OPENAI_*``
environment, or the TOML file named by ``SLMGRAPH_CONFIG``), and compiled
*without* a checkpointer: the LangGraph server brings its own persistence.

Input in Studio: ``{"request": "..."}`` for every graph: a support message for
``quickstart`` and ``helpdesk``, the contract text for ``contract_review`` and
``contract_pipeline``, a statement for ``transaction_review``, a question for
``assistant``.
"""

from __future__ import annotations

from slmgraph.serve._studio import compiled, ready

__all__ = [
    "compiled", "quickstart", "contract_review", "contract_pipeline", "transaction_review", "helpdesk", "assistant",
]

quickstart = ready("quickstart")
contract_review = ready("contract_review")
contract_pipeline = ready("contract_pipeline")
transaction_review = ready("transaction_review")
helpdesk = ready("helpdesk")
assistant = ready("assistant")
