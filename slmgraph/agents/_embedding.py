"""Routing by labelled examples: a trained head, retrieval similarity, and a fitted
"none fits" rule.

:class:`EmbeddingRouter` keeps its examples in an
:class:`~slmgraph.skills.ExampleBank` (vectors cached on disk, a calibrated
:class:`~slmgraph.skills.LinearHead` fitted on them). With the default scoring,
``"head"``, a request goes to the head's best label when the head's calibrated
confidence and the similarity of that label's nearest example both clear the
out-of-scope rule (:class:`~slmgraph.skills.OOSRule`); :meth:`EmbeddingRouter.fit`
fits the rule on labelled requests (``None``: no label should match), and without
it the rule is set leave-one-out on the bank. A decision costs one product with
the head's weights and a few with the best labels' examples: well under a
millisecond for 150 labels and 15,000 examples, the encoder not counted.

The earlier scorings remain (``"centroid"``, ``"nearest"``, ``"top3"``: the cosine
to a label's centroid, its nearest example, the mean of its three nearest), with
the *margin score* (best minus ``margin_weight`` times the runner-up) against
``threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .._context import RunContext
from .._errors import ConfigError
from .._lazy import numpy_for
from ..models._embed import Embedder
from ..models._embed_cache import EmbeddingCache
from ..skills._bank import ExampleBank, Ranked
from ..skills._oos import OOSRule
from ..skills._skill import Skill
from ._router import RouteDecision

__all__ = ["EmbeddingRouter", "EmbeddingChoice"]

Scoring = Literal["head", "centroid", "nearest", "top3"]


def _np() -> Any:
    return numpy_for("EmbeddingRouter")


@dataclass(frozen=True, slots=True)
class EmbeddingChoice:
    """A decision: the label (``None``: none fits), the best label, its score (the
    head's calibrated confidence, or the margin score), and the nearest labels."""

    label: str | None
    top: str
    score: float
    nearest: tuple[Ranked, ...] = field(default=())


class EmbeddingRouter:
    """Picks the label (a skill name, or any label) whose examples a request resembles.

    Args:
        examples: labelled texts ``(text, label)`` (or a CSV / JSON-lines file of them);
            labels double as skill names in graphs.
        embedder: embeds the examples (once; cached on disk) and each request.
        scoring: ``"head"`` (default), ``"centroid"``, ``"nearest"`` or ``"top3"``.
        margin_weight, threshold: the margin rule of the retrieval scorings.
        rule: the out-of-scope rule of ``"head"``; ``None`` fits it leave-one-out
            on the bank at ``quantile`` (or use :meth:`fit`).
        cache: where the bank's vectors and head are kept (see :class:`ExampleBank`).
        seed: the head's seed.
        nearest: how many nearest labels a decision carries.
        bank: an :class:`~slmgraph.skills.ExampleBank` to share (with a classify
            skill, or another router); ``examples`` and ``cache`` are then unused.
    """

    def __init__(
        self,
        examples: Sequence[tuple[str, str]] | str,
        embedder: Embedder,
        *,
        scoring: Scoring = "head",
        margin_weight: float = 0.5,
        threshold: float = 0.0,
        rule: OOSRule | None = None,
        quantile: float = 0.05,
        cache: EmbeddingCache | str | bool | None = None,
        seed: int = 0,
        nearest: int = 5,
        bank: ExampleBank | None = None,
    ) -> None:
        if not examples and bank is None:
            raise ConfigError("router.examples", "an EmbeddingRouter needs labelled examples")
        if scoring not in ("head", "centroid", "nearest", "top3"):
            raise ConfigError("router.scoring", f"unknown scoring {scoring!r}; use head, centroid, nearest or top3")
        self.bank = bank or ExampleBank(examples, None, embedder, cache=cache, head=scoring == "head", seed=seed)
        self.labels = self.bank.names
        self.embedder = embedder
        self.scoring, self.margin_weight, self.threshold = scoring, margin_weight, threshold
        self.rule, self.quantile, self.k = rule, quantile, max(1, nearest)
        self._prepared: Any = None

    def skill_names(self) -> set[str]:
        return set(self.labels)

    def model_keys(self) -> set[str]:
        return set()

    async def prepare(self) -> None:
        """Embed the bank, fit or load the head and the rule, once (first use does it too)."""
        if self._prepared is not None:
            return
        await self.bank.ready()
        if self.scoring == "head" and self.rule is None:
            self.rule = await self.bank.loo_rule(self.quantile)
        np = _np()
        matrix, codes = self.bank._matrix, self.bank.codes
        order = np.argsort(codes, kind="stable")
        starts = np.searchsorted(codes[order], np.arange(len(self.labels)))
        centroids = np.stack([matrix[rows].mean(axis=0) for rows in self.bank.rows_of])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        self._prepared = (matrix[order], starts, centroids)

    def label_scores(self, queries: Any, scoring: str) -> Any:
        """Per-label retrieval scores of normalised request vectors (rows)."""
        np = _np()
        sorted_matrix, starts, centroids = self._prepared
        if scoring == "centroid":
            return queries @ centroids.T
        sims = queries @ sorted_matrix.T
        if scoring == "nearest":
            return np.maximum.reduceat(sims, starts, axis=1)
        ends = list(starts[1:]) + [sims.shape[1]]
        return np.stack([np.sort(sims[:, a:b], axis=1)[:, -3:].mean(axis=1) for a, b in zip(starts, ends)], axis=1)

    def _margins(self, scores: Any, weight: float) -> tuple[Any, Any]:
        np = _np()
        top = scores.argmax(axis=1)
        ordered = np.sort(scores, axis=1)
        runner_up = ordered[:, -2] if scores.shape[1] > 1 else np.zeros(len(scores))
        return top, ordered[:, -1] - weight * runner_up

    def decide(self, vector: Any, text: str | None = None) -> EmbeddingChoice:
        """The decision for one normalised request vector (no encoder; call
        :meth:`prepare` first). Give the request's ``text`` too: the head then adds
        its lexical evidence (without it, the vector-only logits are used)."""
        if self.scoring == "head":
            ranked = self.bank.rank(vector, self.k, text)
            best = ranked[0]
            confidence = best.probability if best.probability is not None else best.similarity
            keep = self.rule is None or self.rule.in_scope(confidence, best.similarity)
            return EmbeddingChoice(best.label if keep else None, best.label, confidence, tuple(ranked))
        top, margin = self._margins(self.label_scores(vector[None, :], self.scoring), self.margin_weight)
        label = self.labels[int(top[0])]
        return EmbeddingChoice(label if margin[0] >= self.threshold else None, label, float(margin[0]),
                               tuple(self.bank.rank(vector, self.k, text)))

    async def choose_many(self, texts: Sequence[str]) -> list[EmbeddingChoice]:
        """Decisions for many texts (one embedding call)."""
        await self.prepare()
        vectors = await self.bank.query(texts)
        return [self.decide(v, t) for v, t in zip(vectors, texts)]

    async def choose(self, text: str) -> EmbeddingChoice:
        return (await self.choose_many([text]))[0]

    async def route(self, request: str, skills: Sequence[Skill], ctx: RunContext) -> RouteDecision:
        choice = await self.choose(request)
        confidence = min(1.0, max(0.0, choice.score))
        return RouteDecision(choice.label, confidence if choice.label else 0.0, "embedding")

    async def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str | None],
        *,
        objective: str = "balanced",
        scorings: Sequence[Scoring] = ("centroid", "nearest", "top3"),
        margin_weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    ) -> float:
        """Fit the "none fits" rule on labelled requests (``None``: none should fit).

        With ``"head"`` scoring: both bars of the out-of-scope rule, for the best
        ``objective`` (``"balanced"``: in-scope accuracy plus the F1 of "none";
        ``"accuracy"``). Otherwise: the scoring, margin weight and threshold for the
        best accuracy, as before. Returns the accuracy on these requests."""
        np = _np()
        if len(texts) != len(labels) or not texts:
            raise ConfigError("router.fit", "give as many labels as texts, at least one")
        await self.prepare()
        gold = list(labels)
        if self.scoring == "head":
            self.rule = await self.bank.fit_rule(texts, gold, objective=objective)
            picks = [c.label for c in await self.choose_many(texts)]
            return float(np.mean([p == g for p, g in zip(picks, gold)]))
        queries = await self.bank.query(texts)
        best: tuple = (-1.0,)
        for scoring in scorings:
            scores = self.label_scores(queries, scoring)
            for weight in margin_weights:
                top, margin = self._margins(scores, weight)
                right_if_kept = np.array([self.labels[t] == g for t, g in zip(top, gold)])
                right_if_none = np.array([g is None for g in gold])
                for th in np.unique(margin):
                    accuracy = float(np.where(margin >= th, right_if_kept, right_if_none).mean())
                    if (accuracy, -th) > best[:2]:
                        best = (accuracy, -th, scoring, weight, float(th))
        self.scoring, self.margin_weight, self.threshold = best[2], best[3], best[4]
        return best[0]

    async def add_examples(self, examples: Sequence[tuple[str, str]]) -> None:
        """Add labelled examples (new labels too): only new texts are embedded, the
        head is refitted, and the rule is set again leave-one-out (refit it with
        :meth:`fit` when you have labelled requests)."""
        await self.bank.add_examples(examples)
        self.labels = self.bank.names
        self._prepared = None
        if self.scoring == "head":
            self.rule = None

    def __repr__(self) -> str:
        if self.scoring == "head":
            return f"EmbeddingRouter({len(self.labels)} labels, scoring='head', rule={self.rule})"
        return (f"EmbeddingRouter({len(self.labels)} labels, scoring={self.scoring!r}, "
                f"margin_weight={self.margin_weight}, threshold={self.threshold:.3f})")
