"""The help-desk triage ready graph: sort a support message into one intent, or escalate.

One skill, :func:`~slmgraph.skills.classify_skill`, over a labelled example bank:
Banking77-style intents when the caller gives them, and a small built-in bank
otherwise. A message that fits no intent escalates with the nearest intents and
a proposed new intent name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .._errors import ConfigError
from ..agents._escalation import EscalationAgent
from ..config import Config
from ..ledger import PriceTable
from ..models._base import Model
from ..models._embed import Embedder, default_embedder
from ..skills._classify import classify_skill
from ._blueprints import BUILTIN_CATEGORIES
from ._graph import SLMGraph, build_graph

__all__ = ["helpdesk_graph", "HELPDESK_EXAMPLES"]

#: The built-in example bank: a few messages for each of ``BUILTIN_CATEGORIES``.
HELPDESK_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("My new card still hasn't shown up in the post.", "card_arrival"),
    ("How long does it take for a card to be delivered?", "card_arrival"),
    ("I ordered a card two weeks ago and have nothing yet.", "card_arrival"),
    ("Someone took my wallet and my card was in it.", "card_lost_or_stolen"),
    ("I can't find my card anywhere, please block it.", "card_lost_or_stolen"),
    ("My card was stolen yesterday.", "card_lost_or_stolen"),
    ("The shop said my card payment was declined.", "card_payment_declined"),
    ("Why does my card keep getting rejected at the till?", "card_payment_declined"),
    ("My payment didn't go through even though I have money.", "card_payment_declined"),
    ("The ATM didn't give me my cash but took the money.", "cash_withdrawal"),
    ("How much can I take out at a cash machine?", "cash_withdrawal"),
    ("Is there a fee for withdrawing cash abroad?", "cash_withdrawal"),
    ("What exchange rate do you use for dollars?", "exchange_rate"),
    ("The currency conversion rate looks wrong.", "exchange_rate"),
    ("How do you work out the rate when I pay in euros?", "exchange_rate"),
    ("I returned an item, when do I get my money back?", "refund_request"),
    ("The merchant promised a refund but it is not here.", "refund_request"),
    ("Can I get a refund for a cancelled order?", "refund_request"),
    ("My bank transfer is still pending after two days.", "transfer_pending"),
    ("Why hasn't my transfer gone through yet?", "transfer_pending"),
    ("The money I sent is stuck as pending.", "transfer_pending"),
    ("I was charged twice for the same purchase.", "wrong_charge"),
    ("There is a payment on my statement I did not make.", "wrong_charge"),
    ("I was charged the wrong amount at a shop.", "wrong_charge"),
    ("I can't log in to my account.", "account_access"),
    ("The app says my password is wrong and locked me out.", "account_access"),
    ("I forgot my passcode, how do I get back in?", "account_access"),
    ("I moved house, how do I change my address?", "change_personal_details"),
    ("I need to update my phone number.", "change_personal_details"),
    ("How can I change the name on my account?", "change_personal_details"),
    ("My top-up failed but the money left my bank.", "top_up_failed"),
    ("Why won't my top up go through?", "top_up_failed"),
    ("I tried to add money to my account and it was declined.", "top_up_failed"),
    ("I want to close my account.", "close_account"),
    ("How do I delete my account and all my data?", "close_account"),
    ("Please cancel my account, I'm leaving.", "close_account"),
)


def helpdesk_graph(
    models: Mapping[str, Model],
    *,
    config: Config | None = None,
    prices: PriceTable | None = None,
    embedder: Embedder | None = None,
    labels: Sequence[str] | None = None,
    examples: Sequence[tuple[str, str]] | None = None,
    top_k: int = 5,
) -> SLMGraph:
    """Help-desk triage: each support message gets one intent, or escalates.

    Args:
        models: models by binding key (``"small"``; ``"large"`` to answer escalations).
        config: graph settings (route threshold, step limit, checkpoint file).
        prices: the ledger's price table.
        embedder: embeds the example bank and each message; default
            :func:`~slmgraph.models.default_embedder` (the packaged offline encoder).
        labels: the intent set; default: the labels of ``examples``, or
            ``BUILTIN_CATEGORIES`` with the built-in bank.
        examples: labelled messages ``(text, intent)``, e.g. the Banking77 train
            split; default: :data:`HELPDESK_EXAMPLES`.
        top_k: candidate intents the small model chooses among.
    """
    cfg = config or Config()
    if examples is None:
        chosen = list(labels) if labels is not None else list(BUILTIN_CATEGORIES)
        keep = set(chosen)
        examples = [(t, lb) for t, lb in HELPDESK_EXAMPLES if lb in keep]
        labels = chosen
    elif labels is None:
        labels = list(dict.fromkeys(lb for _, lb in examples))
    if not labels:
        raise ConfigError("helpdesk.labels", "the help desk needs at least one intent")
    skill = classify_skill(
        labels,
        examples,
        embedder=embedder or default_embedder(),
        top_k=top_k,
        name="triage",
        description="sort a customer-support message into one help-desk intent",
        # the bank's vectors and head are kept beside the checkpoint file
        cache=(Path(cfg.checkpoint).parent / "embeddings") if cfg.checkpoint else None,
    )
    return build_graph(
        [skill],
        models=models,
        route_threshold=cfg.route_threshold,
        escalation=EscalationAgent(max_steps=cfg.max_steps, tools=()),
        prices=prices,
        checkpoint=cfg.checkpoint,
        name="helpdesk",
    )
