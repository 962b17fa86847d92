"""Shared set-up for the learning-loop tests: a help desk on the hashing embedder,
the first-candidate small tier and an oracle large model."""

from __future__ import annotations

from pathlib import Path

from slmgraph.eval import OracleModel
from slmgraph import EscalationAgent, build_graph
from slmgraph.graphs._blueprints import BUILTIN_CATEGORIES
from slmgraph.graphs.helpdesk import HELPDESK_EXAMPLES
from slmgraph.skills._classify import classify_skill
from slmgraph.learn import SqliteLearningStore, with_learning
from slmgraph.ledger import Price, PriceTable
from slmgraph.learn._doubles import first_candidate_model
from slmgraph.models._embed import HashingEmbedder

EMBEDDER = HashingEmbedder()


def triage(threshold: float = 0.5, embedder=EMBEDDER, margin=None):
    """The help desk's classify skill on the built-in bank, with a fixed "none fits" bar."""
    return classify_skill(BUILTIN_CATEGORIES, HELPDESK_EXAMPLES, embedder=embedder, none_threshold=threshold,
                          decisive_margin=margin, name="triage", description="sort a help-desk message")


def helpdesk(tmp: Path, answers: dict[str, str], *, checkpoint: bool | str = True, small=None, skill=None, store=None, **learn):
    """(learning graph, store, oracle) in ``tmp`` (``checkpoint``: a DSN, or a file in ``tmp``)."""
    oracle = OracleModel(answers, cost_per_call=0.002)
    base = build_graph(
        [skill or triage()], models={"small": small or first_candidate_model(), "large": oracle},
        escalation=EscalationAgent(tools=()), prices=PriceTable(prices={"oracle": Price(per_call_usd=0.002)}), checkpoint=checkpoint if isinstance(checkpoint, str) else (tmp / "ck.sqlite" if checkpoint else None), name="helpdesk",
    )
    store = store or SqliteLearningStore(tmp / "learn.sqlite")
    return with_learning(base, store, **learn), store, oracle
