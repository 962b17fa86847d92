"""The classify skill: one label out of hundreds, a trained head first, then a small model.

A small model cannot read 200 labels in its prompt, so the skill narrows first:
its labelled example bank is embedded once (and cached on disk), a calibrated
head (:class:`~slmgraph.skills.LinearHead`) is fitted on it, and the head's
``top_k`` labels for the request become the candidates. When the head's lead is
decisive (calibrated on the bank for a target precision) the best label is
accepted without a model call; otherwise the small model chooses among the
candidates or ``"none"``, schema-constrained to exactly that list. "None fits"
(the out-of-scope rule says so: the head's confidence or the nearest example's
similarity is below its bar; or the model says so) is rejected with
``NONE_FITS`` and a draft holding the nearest labels and a proposed new label,
so the graph escalates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from .._errors import ConfigError
from ..models._embed import Embedder
from ..models._embed_cache import EmbeddingCache, Progress
from ._bank import ExampleBank, Ranked
from ._head import LinearHead
from ._oos import OOSRule
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
    """A candidate label, its retrieval similarity (cosine of the nearest example) and
    the head's calibrated probability (``None`` without a head)."""

    label: str
    score: float
    probability: float | None = None


class ClassifyOutput(BaseModel):
    """The accepted classification."""

    label: str = Field(description="the chosen label")
    similarity: float = Field(description="retrieval similarity of the chosen label's nearest example")
    confidence: float | None = Field(None, description="the small model's confidence in its choice when it chose; "
                                     "the head's calibrated probability when the head decided alone")
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
    head: LinearHead | bool = True,
    cache: EmbeddingCache | str | bool | None = None,
    seed: int = 0,
    progress: Progress = None,
) -> Skill:
    """One label out of ``labels`` (hundreds work), or "none fits".

    Args:
        labels: the label set; ``"none"`` is reserved.
        examples: labelled example texts ``(text, label)``: the bank (or a CSV /
            JSON-lines file of them, see :func:`~slmgraph.skills.load_examples`).
        embedder: embeds the bank (once, on first use; cached on disk) and each request.
        top_k: candidate labels shown to the small model (the head's best).
        name, description: the skill's name and the line a router reads.
        none_threshold: below this retrieval similarity the request is "none fits"
            without asking the model. ``None`` calibrates it on the bank (once, on
            first use), per label: the ``none_quantile`` of its examples' similarity
            to the nearest other example of the same label, so that about that
            share of in-domain requests is sent to "none" by retrieval alone (labels
            with fewer than 5 examples use the quantile over the whole bank). With a
            head, its calibrated confidence must also reach the ``none_quantile`` of
            the bank's out-of-fold confidences. :meth:`ClassifyRunner.fit_thresholds`
            replaces both bars with ones fitted on a validation split.
        min_confidence: confidence the small model's choice needs (agreement of
            samples on the embedded engine, logprobs on Ollama); ``None`` accepts any.
        decisive_margin: when the best label leads the runner-up by at least this
            much (the head's calibrated probabilities; retrieval similarity without a
            head), accept it without asking the model; ``None`` always asks.
            ``"auto"`` (the default) calibrates it on the bank (once, on first use):
            the smallest lead at which the best label is right at least
            ``decisive_precision`` of the time, out of fold; when no lead is that
            reliable, the model is always asked.
        decisive_precision: the precision ``"auto"`` aims at.
        propose_with_model: on "none fits", ask the small model for a new label name
            (one extra call); otherwise derive it from the request's words.
        model: binding key of the small model.
        head: ``True`` (a calibrated :class:`LinearHead`, seeded by ``seed``), a head
            to fit, or ``False`` (retrieval only, as before the head).
        cache: where the bank's vectors and head are kept (see :class:`ExampleBank`).
        progress: the progress bar while the bank is embedded.

    Returns:
        A composite skill. Accepted output: :class:`ClassifyOutput`. "None fits" is
        ``Rejected(NONE_FITS)`` with draft ``{"label": None, "nearest": [...],
        "proposed_label": ..., "why": ...}``.
    """
    if isinstance(examples, (str, bytes)) or hasattr(examples, "__fspath__"):
        from ._bank import load_examples

        examples = load_examples(examples)  # type: ignore[arg-type]
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
        bank=ExampleBank(examples, labels, embedder, cache=cache, head=head, seed=seed, progress=progress),
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
    """The classify skill's runner: rank labels with the head, accept a decisive
    lead, let the small model choose among the top candidates otherwise, or reject
    as "none fits". Reachable as ``skill.runner`` (its ``bank``, :meth:`decide` and
    :meth:`fit_thresholds` are useful for evaluation)."""

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
        self.none_threshold = none_threshold
        self.none_quantile = none_quantile
        self.label_thresholds: dict[str, float] = {}
        self.min_confidence: float | None = None
        self.rule: OOSRule | None = None
        self.decisive_margin = decisive_margin
        self.decisive_precision = decisive_precision
        self.propose_with_model = propose_with_model

    async def threshold(self, label: str | None = None) -> float:
        """The "none fits" similarity threshold for ``label`` (``None``: the whole
        bank's), calibrated on the bank once unless given."""
        if self.none_threshold is None:
            self.none_threshold, self.label_thresholds = await self.bank.calibrate(self.none_quantile)
        return self.label_thresholds.get(label, self.none_threshold) if label else self.none_threshold

    async def confidence_bar(self) -> float:
        """The head confidence a label needs (0 without a head): the ``none_quantile``
        of the bank's out-of-fold confidences, once."""
        if self.min_confidence is None:
            await self.bank.ready()
            self.min_confidence = (await self.bank.loo_rule(self.none_quantile)).min_confidence \
                if self.bank.head is not None else 0.0
        return self.min_confidence

    async def margin(self) -> float | None:
        """The lead that lets the head answer alone (calibrated once if ``"auto"``)."""
        if self.decisive_margin == "auto":
            self.decisive_margin = await self.bank.calibrate_lead(self.decisive_precision)
        return self.decisive_margin

    async def fit_thresholds(self, texts: list[str], labels: list[str | None], *, objective: str = "balanced") -> OOSRule:
        """Fit the out-of-scope rule on a validation split (``None``: no label fits);
        without out-of-scope examples the bars stay leave-one-out on the bank."""
        if any(lb is None for lb in labels):
            self.rule = await self.bank.fit_rule(texts, labels, objective=objective)
        else:
            self.rule = await self.bank.loo_rule(self.none_quantile)
        return self.rule

    async def candidates(self, text: str) -> list[Ranked]:
        """The ``top_k`` best labels for ``text`` (the head's, or retrieval's without one)."""
        await self.bank.ready()
        return self.bank.rank((await self.bank.query([text]))[0], self.top_k, text)

    async def in_scope(self, best: Ranked) -> tuple[bool, str]:
        """Whether the best candidate clears the out-of-scope rule, and why not."""
        if self.rule is not None:
            conf = best.probability if best.probability is not None else 1.0
            if self.rule.in_scope(conf, best.similarity):
                return True, ""
            return False, self.rule.why(conf, best.similarity)
        limit = await self.threshold(best.label)
        if best.similarity < limit:
            return False, f"the nearest example has similarity {best.similarity:.3f}, below the threshold {limit:.3f}"
        bar = await self.confidence_bar()
        if best.probability is not None and best.probability < bar:
            return False, f"the head's confidence {best.probability:.3f} is below the bar {bar:.3f}"
        return True, ""

    async def __call__(self, skill: Skill, data: TextInput, ctx: Any, node: str) -> Accepted | Rejected:
        text = data.text
        ranked = await self.candidates(text)
        nearest = [LabelScore(label=r.label, score=round(r.similarity, 4),
                              probability=None if r.probability is None else round(r.probability, 4)) for r in ranked]
        if not ranked:
            return await self._none_fits(skill, text, nearest, "the bank is empty", ctx, node, attempts=0)
        keep, why = await self.in_scope(ranked[0])
        if not keep:
            return await self._none_fits(skill, text, nearest, why, ctx, node, attempts=0)
        margin = await self.margin()
        if margin is not None:
            first, second = ranked[0], ranked[1] if len(ranked) > 1 else None
            if first.probability is not None:
                lead = first.probability - (second.probability or 0.0 if second else 0.0)
            else:
                lead = first.similarity - (second.similarity if second else -1.0)
            if lead >= margin:
                return Accepted(ClassifyOutput(label=first.label, similarity=nearest[0].score,
                                               confidence=nearest[0].probability, candidates=nearest), None, 0)

        menu = "\n".join(f'- {r.label}: e.g. "{_clip(self.bank.texts[r.example])}"' for r in ranked)
        chooser = Skill(
            name=skill.name,
            description=skill.description,
            instructions=skill.instructions,
            output_type=_choice_type(tuple(r.label for r in ranked)),
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
        similarity = next(r.similarity for r in ranked if r.label == chosen)
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
