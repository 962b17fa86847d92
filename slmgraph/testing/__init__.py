"""Test infrastructure, public so that users can test their own graphs with no model
server: test doubles, a fault-injecting model server, and synthetic data.

- :class:`ScriptedModel`, :class:`FunctionModel`: models that reply from a script
  or a function, recording every call (:class:`ModelCall`)::

      from slmgraph.testing import ScriptedModel
      graph = build_graph([triage], models={"small": ScriptedModel([{"label": "refund"}])})

- :class:`FaultServer` (:mod:`slmgraph.testing.fault_server`): a model server in
  another process that speaks Ollama's and OpenAI's wire protocols and fails on
  command (refused connections, hangs, stalls, 5xx, 429 with ``Retry-After``,
  malformed bodies, cut streams), logging every request body.
- :func:`synthetic_pii_corpus` and :func:`evaluate`: labelled PII texts with hard
  negatives, and recall/precision of a detector on them.
- :func:`synthetic_transaction_log`: a transaction log with planted anomalies.
- :class:`LoopWatchdog`: measures the event loop's scheduling delay, so a test can
  show that nothing blocked the loop (``async with LoopWatchdog() as dog``).

Product modules never import this package.
"""

from .._watchdog import LoopWatchdog
from ._models import FunctionModel, ModelCall, Reply, ScriptedModel
from ._pii_corpus import LabelledText, evaluate, synthetic_pii_corpus
from ._transaction_log import ANOMALY_KINDS, SyntheticLog, synthetic_transaction_log
from .fault_server import FaultServer

__all__ = [
    "ScriptedModel",
    "FunctionModel",
    "ModelCall",
    "Reply",
    "FaultServer",
    "LabelledText",
    "synthetic_pii_corpus",
    "evaluate",
    "SyntheticLog",
    "synthetic_transaction_log",
    "ANOMALY_KINDS",
    "LoopWatchdog",
]
