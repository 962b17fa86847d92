"""Test doubles for graphs and skills: no model server needed.

Use these in your own tests::

    from slmgraph.testing import ScriptedModel
    graph = build_graph([triage], models={"small": ScriptedModel([{"label": "refund"}])})
"""

from ._watchdog import LoopWatchdog
from .models._testing import FunctionModel, ModelCall, Reply, ScriptedModel

__all__ = ["ScriptedModel", "FunctionModel", "ModelCall", "Reply", "LoopWatchdog"]
