"""The classify skill: one label out of hundreds, retrieval first, then a small model.

A small model cannot read 200 labels in its prompt, so the skill narrows first:
it embeds its labelled example bank once (cached), retrieves the examples nearest
to the request, keeps the ``top_k`` distinct labels as candidates, and asks the
small model to choose among those candidates or ``"none"``; the choice is
schema-constrained to exactly that list. "None fits" (the model says so, or
retrieval finds nothing close enough) is rejected with ``NONE_FITS`` and a draft
holding the nearest labels and a proposed new label, so the graph escalates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from .._errors import ConfigError
from ..models._embed import Embedder
from ._bank import ExampleBank
from ._run import run_skill
from ._skill import AcceptancePolicy, Accepted, EscalationReason, Rejected, Skill, TextInput

__all__ = ["classify_skill", "ClassifyOutput", "LabelScore", "ExampleBank", "ClassifyRunner", "NONE"]

#: The choice that means "no candidate fits".
NONE = "none"

_INSTRUCTIONS = (
    "You sort short customer messages into labels. You get a message and a few candidate "
    "labels, each with an example message that has that label. Answer with the candidate "
    'label whose example means the same thing as the message. Answer "none" only when '
    "the message is about something none of the candidates covers."
)


class LabelScore(BaseModel):
    """A candidate label and its retrieval similarity (cosine of the nearest example)."""

    label: str
    score: float


class ClassifyOutput(BaseModel):
    """The accepted classification."""

    label: str = Field(description="the chosen label")
    similarity: float = Field(description="retrieval similarity of the chosen label's nearest example")
    confidence: float | None = Field(None, description="the small model's confidence in its choice, when measured")
    candidates: list[LabelScore] = Field(description="the labels the small model chose among, best first")


@lru_cache(maxsize=256)
def _choice_type(candidates: tuple[str, ...]) -> type[BaseModel]:
    """The chooser's output type: ``label`` is one of ``candidates`` or ``"none"``."""
    return create_model(
        "LabelChoice", label=(Literal[candidates + (NONE,)], Field(description="a candidate label, or none"))
    )


class _ProposedLabel(BaseModel):
    label: str = Field(max_length=60, description="a short snake_case name for the message's topic")


_STOP = frozenset(
    "a an the i im i'm me my we our you your it its is are was were be been am do does did "
    "to of in on for at by with from and or but not no can could would should will why how "
    "what when where which who this that there here have has had just still please help hi "
    "hello thanks thank get got".split()
)


def _snake(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit].strip("_")


def derived_label(text: str, words: int = 3) -> str:
    """A snake_case label made of the request's first content words."""
    content = [w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP and len(w) > 1]
    return _snake("_".join(content[:words])) or "other"


def classify_skill(
    labels: Sequence[str],
    examples: Sequence[tuple[str, str]],
    *,
    embedder: Embedder,
    top_k: int = 5,
    name: str = "classify",
    description: str = "classify a message into one label of a fixed label set, or none",
    none_threshold: float | None = None,
    none_quantile: float = 0.05,
    min_confidence: float | None = None,
    decisive_margin: float | Literal["auto"] | None = "auto",
    decisive_precision: float = 0.97,
    propose_with_model: bool = True,
    model: str = "small",
) -> Skill:
    """One label out of ``labels`` (hundreds work), or "none fits".

    Args:
        labels: the label set; ``"none"`` is reserved.
        examples: labelled example texts ``(text, label)``: the retrieval bank.
        embedder: embeds the bank (once, on first use) and each request.
        top_k: distinct candidate labels shown to the small model.
        name, description: the skill's name and the line a router reads.
        none_threshold: below this retrieval similarity the request is "none fits"
            without asking the model. ``None`` calibrates it on the bank (once, on
            first use), per label: the ``none_quantile`` of its examples' similarity
            to the nearest other example of the same label, so that about that
            share of in-domain requests is sent to "none" by retrieval alone (labels
            with fewer than 5 examples use the quantile over the whole bank).
        min_confidence: confidence the small model's choice needs (agreement of
            samples on the embedded engine, logprobs on Ollama); ``None`` accepts any.
        decisive_margin: when the nearest label's similarity beats the runner-up's by
            at least this much, accept it without asking the model (no model call);
            ``None`` always asks. ``"auto"`` (the default) calibrates it on the bank
            (once, on first use): the smallest lead at which retrieval alone picks
            the right label at least ``decisive_precision`` of the time, leave-one-out;
            when no lead is that reliable, the model is always asked.
        decisive_precision: the precision ``"auto"`` aims at.
        propose_with_model: on "none fits", ask the small model for a new label name
            (one extra call); otherwise derive it from the request's words.
        model: binding key of the small model.

    Returns:
        A composite skill. Accepted output: :class:`ClassifyOutput`. "None fits" is
        ``Rejected(NONE_FITS)`` with draft ``{"label": None, "nearest": [...],
        "proposed_label": ..., "why": ...}``.
    """
    labels = list(dict.fromkeys(labels))
    if not labels:
        raise ConfigError("classify.labels", "give at least one label")
    if NONE in labels:
        raise ConfigError("classify.labels", f"{NONE!r} is reserved for 'no label fits'")
    if top_k < 1:
        raise ConfigError("classify.top_k", "must be >= 1")
    unknown = sorted({lb for _, lb in examples} - set(labels))
    if unknown:
        raise ConfigError("classify.examples", f"examples use labels not in the label set: {unknown[:5]}")
    runner = ClassifyRunner(
        labels=frozenset(labels),
        bank=ExampleBank(examples, labels, embedder),
        top_k=top_k,
        none_threshold=none_threshold,
        none_quantile=none_quantile,
        decisive_margin=decisive_margin,
        decisive_precision=decisive_precision,
        propose_with_model=propose_with_model,
    )
    return Skill(
        name=name,
        description=description,
        instructions=_INSTRUCTIONS,
        output_type=ClassifyOutput,
        acceptance=AcceptancePolicy(max_repairs=1, min_confidence=min_confidence, agree_on=lambda o: o.label),
        model=model,
        runner=runner,
        render=lambda o: o.label,
    )


class ClassifyRunner:
    """The classify skill's runner: retrieve, narrow to ``top_k`` labels, let the
    small model choose, or reject as "none fits". Reachable as ``skill.runner``
    (its ``bank`` and :meth:`threshold` are useful for evaluation)."""

    def __init__(
        self,
        *,
        labels: frozenset[str],
        bank: ExampleBank,
        top_k: int,
        none_threshold: float | None,
        none_quantile: float,
        decisive_margin: float | Literal["auto"] | None,
        propose_with_model: bool,
        decisive_precision: float = 0.97,
    ) -> None:
        self.labels = labels
        self.bank = bank
        self.top_k = top_k
        self.neighbours = max(top_k * 10, 20)
        self.none_threshold = none_threshold
        self.none_quantile = none_quantile
        self.label_thresholds: dict[str, float] = {}
        self.decisive_margin = decisive_margin
        self.decisive_precision = decisive_precision
        self.propose_with_model = propose_with_model

    async def threshold(self, label: str | None = None) -> float:
        """The "none fits" similarity threshold for ``label`` (``None``: the whole
        bank's), calibrated on the bank once unless given."""
        if self.none_threshold is None:
            self.none_threshold, self.label_thresholds = await self.bank.calibrate(self.none_quantile)
        return self.label_thresholds.get(label, self.none_threshold) if label else self.none_threshold

    async def margin(self) -> float | None:
        """The lead that lets retrieval answer alone (calibrated once if ``"auto"``)."""
        if self.decisive_margin == "auto":
            self.decisive_margin = await self.bank.calibrate_margin(self.decisive_precision)
        return self.decisive_margin

    async def candidates(self, text: str) -> list[tuple[str, float, int]]:
        """The ``top_k`` distinct labels nearest to ``text``: (label, similarity,
        index of its nearest example), best first."""
        best: dict[str, tuple[str, float, int]] = {}
        for i, score in await self.bank.nearest(text, self.neighbours):
            best.setdefault(self.bank.labels[i], (self.bank.labels[i], score, i))
        return list(best.values())[: self.top_k]

    async def __call__(self, skill: Skill, data: TextInput, ctx: Any, node: str) -> Accepted | Rejected:
        text = data.text
        ranked = await self.candidates(text)
        nearest = [LabelScore(label=lb, score=round(s, 4)) for lb, s, _ in ranked]
        limit = await self.threshold(ranked[0][0] if ranked else None)
        if not ranked or ranked[0][1] < limit:
            top = ranked[0][1] if ranked else 0.0
            why = f"the nearest example has similarity {top:.3f}, below the threshold {limit:.3f}"
            return await self._none_fits(skill, text, nearest, why, ctx, node, attempts=0)
        runner_up = ranked[1][1] if len(ranked) > 1 else -1.0
        margin = await self.margin()
        if margin is not None and ranked[0][1] - runner_up >= margin:
            return Accepted(ClassifyOutput(label=ranked[0][0], similarity=nearest[0].score, candidates=nearest), None, 0)

        menu = "\n".join(f'- {lb}: e.g. "{_clip(self.bank.texts[i])}"' for lb, _, i in ranked)
        chooser = Skill(
            name=skill.name,
            description=skill.description,
            instructions=skill.instructions,
            output_type=_choice_type(tuple(lb for lb, _, _ in ranked)),
            acceptance=skill.acceptance,
            model=skill.model,
        )
        prompt = f"Message: {text}\n\nCandidate labels:\n{menu}\n\nWhich label fits the message?"
        outcome = await run_skill(chooser, prompt, ctx, node=node)
        if isinstance(outcome, Rejected):
            draft = {"label": _draft_label(outcome.draft), "nearest": [n.model_dump() for n in nearest]}
            return Rejected(outcome.reason, outcome.detail, draft, outcome.attempts, outcome.confidence)
        chosen = outcome.output.label
        if chosen == NONE:
            why = "the small model found that none of the candidates fits"
            return await self._none_fits(skill, text, nearest, why, ctx, node, attempts=outcome.attempts)
        similarity = next(s for lb, s, _ in ranked if lb == chosen)
        output = ClassifyOutput(
            label=chosen, similarity=round(similarity, 4), confidence=outcome.confidence, candidates=nearest
        )
        return Accepted(output, outcome.confidence, outcome.attempts)

    async def _none_fits(
        self, skill: Skill, text: str, nearest: list[LabelScore], why: str, ctx: Any, node: str, *, attempts: int
    ) -> Rejected:
        proposed = ""
        if self.propose_with_model:
            namer = Skill(
                name=skill.name,
                description="name the topic of a message",
                instructions="Give a short snake_case name (two to four words) for what the message is about.",
                output_type=_ProposedLabel,
                acceptance=AcceptancePolicy(max_repairs=0),
                model=skill.model,
            )
            named = await run_skill(namer, text, ctx, node=node)
            attempts += named.attempts
            if isinstance(named, Accepted):
                proposed = _snake(named.output.label)
        if not proposed or proposed in self.labels or proposed == NONE:
            proposed = derived_label(text)
        draft = {"label": None, "nearest": [n.model_dump() for n in nearest], "proposed_label": proposed, "why": why}
        return Rejected(EscalationReason.NONE_FITS, f"no label fits: {why}", draft, attempts)


def _clip(text: str, limit: int = 90) -> str:
    text = " ".join(text.split()).replace('"', "'")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _draft_label(draft: Any) -> Any:
    return draft.get("label") if isinstance(draft, dict) else None
