"""Ready graphs, by name, for the CLI and the examples."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Literal

from pydantic import BaseModel, Field, create_model

from .._errors import ConfigError
from ..agents._escalation import EscalationAgent
from ..agents._router import ChainRouter, ModelRouter, Rule, RulesRouter
from ..config import Config
from ..ledger import PriceTable
from ..models._base import Model
from ..skills._skill import AcceptancePolicy, Example, Skill
from ._graph import SLMGraph, build_graph

__all__ = ["triage_skill", "sentiment_skill", "quickstart_graph", "GRAPHS", "graph_from_config", "register_graph", "BUILTIN_CATEGORIES"]

#: A small built-in help-desk category list, used when no category list is given.
BUILTIN_CATEGORIES: tuple[str, ...] = (
    "card_arrival",
    "card_lost_or_stolen",
    "card_payment_declined",
    "cash_withdrawal",
    "exchange_rate",
    "refund_request",
    "transfer_pending",
    "wrong_charge",
    "account_access",
    "change_personal_details",
    "top_up_failed",
    "close_account",
)


def triage_skill(categories: Sequence[str] = BUILTIN_CATEGORIES, *, min_confidence: float | None = 0.6) -> Skill:
    """Classify a help-desk ticket into one of ``categories``.

    The output type is built from the list, so a schema-constrained backend can
    only answer with a listed category.
    """
    if not categories:
        raise ConfigError("categories", "triage needs at least one category")
    label = Enum("Category", {c: c for c in categories}, type=str)  # type: ignore[misc]
    output = create_model(
        "TriageOutput",
        category=(label, Field(description="the ticket's category")),
        urgency=(Literal["low", "normal", "high"], Field(description="how urgent the ticket is")),
    )
    examples = []
    if "card_arrival" in categories:
        examples.append(Example("My new card still hasn't come after ten days.", output(category="card_arrival", urgency="normal")))
    return Skill(
        name="triage",
        description="sort a customer-support ticket about banking or cards into a category",
        instructions=(
            "You triage customer-support tickets for a bank. Pick the one category that "
            f"fits the ticket best from: {', '.join(categories)}. Set urgency to high for "
            "lost cards, fraud or blocked money, low for general questions, normal otherwise."
        ),
        output_type=output,
        examples=examples,
        acceptance=AcceptancePolicy(min_confidence=min_confidence, agree_on=lambda o: o.category),
    )


class SentimentOutput(BaseModel):
    sentiment: Literal["positive", "neutral", "negative"]


def sentiment_skill() -> Skill:
    """Rate the sentiment of a short text."""
    return Skill(
        name="sentiment",
        description="rate whether a review, comment or message is positive, neutral or negative",
        instructions="Rate the sentiment the writer expresses in the text.",
        output_type=SentimentOutput,
        examples=[Example("The app is great, support solved it in minutes!", SentimentOutput(sentiment="positive"))],
        acceptance=AcceptancePolicy(min_confidence=0.6),
    )


def quickstart_graph(
    models: Mapping[str, Model], *, config: Config | None = None, prices: PriceTable | None = None,
) -> SLMGraph:
    """Two skills (ticket triage, sentiment); rules catch obvious sentiment requests,
    a small model routes the rest, and the large model takes what they cannot."""
    cfg = config or Config()
    rules = RulesRouter([Rule("sentiment", (r"\b(sentiment|review|rate this|how positive)\b",))])
    return build_graph(
        [triage_skill(), sentiment_skill()],
        models=models,
        router=ChainRouter([rules, ModelRouter("small")]),
        route_threshold=cfg.route_threshold,
        escalation=EscalationAgent(max_steps=cfg.max_steps),
        prices=prices,
        checkpoint=cfg.checkpoint,
        name="quickstart",
    )


GraphFactory = Callable[..., SLMGraph]

#: Ready graphs by name, for ``slmgraph run --graph NAME``: a factory, or
#: ``"module:function"`` imported on first use (so one graph's optional
#: dependencies never slow down or break another).
GRAPHS: dict[str, GraphFactory | str] = {
    "quickstart": quickstart_graph,
    "contract_review": "slmgraph.graphs.contracts:contract_review_graph",
    "contract_pipeline": "slmgraph.graphs.contract_pipeline:contract_pipeline_graph",
    "transaction_review": "slmgraph.graphs.transactions:transaction_review_graph",
    "helpdesk": "slmgraph.graphs.helpdesk:helpdesk_graph",
    "assistant": "slmgraph.graphs.assistant:assistant_graph",
}


def register_graph(name: str, factory: GraphFactory | str) -> None:
    """Make a graph factory ``f(models, *, config, prices) -> SLMGraph`` available
    to ``slmgraph run --graph NAME``."""
    GRAPHS[name] = factory


def _factory(name: str) -> GraphFactory:
    if name not in GRAPHS:
        raise ConfigError("graph", f"unknown graph {name!r}; available: {', '.join(sorted(GRAPHS))}")
    factory = GRAPHS[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = GRAPHS[name] = getattr(importlib.import_module(module), attr)
    return factory


def graph_from_config(name: str, config: Config) -> SLMGraph:
    """Build the ready graph ``name`` with the models and prices of ``config``."""
    from .._factory import models_from_config, prices_from_config

    from ._thresholds import apply_config_thresholds

    factory = _factory(name)
    graph = factory(models_from_config(config), config=config, prices=prices_from_config(config))
    graph = apply_config_thresholds(graph, config)
    if config.learning:  # `[learning] enabled = true`: capture, and serve promoted versions
        from ..learn._config import learning_graph

        graph = learning_graph(graph, config)
    return graph
