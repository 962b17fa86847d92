"""Routing by embedding similarity to labelled examples, with a fitted "none fits" rule.

:class:`EmbeddingRouter` scores every label against the request (the cosine to the
centroid of the label's examples, to its nearest example, or the mean of its three
nearest), and keeps the best label when its *margin score* (best score minus
``margin_weight`` times the runner-up's) reaches ``threshold``; otherwise none fits.
A request close to two labels at once is as suspect as one close to none, so the
margin catches out-of-scope requests that sit between intents.

:meth:`EmbeddingRouter.fit` chooses the scoring, the margin weight and the threshold
on labelled requests (``None``: no label should match) for the best accuracy, the
same objective ``slmgraph calibrate`` uses for a graph's thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._context import RunContext
from .._errors import ConfigError, MissingDependencyError
from ..models._embed import Embedder
from ..skills._skill import Skill
from ._router import RouteDecision

__all__ = ["EmbeddingRouter", "EmbeddingChoice"]

Scoring = Literal["centroid", "nearest", "top3"]


def _np() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with every extra that embeds
        raise MissingDependencyError("numpy (needed by EmbeddingRouter)", "embedded") from None
    return numpy


@dataclass(frozen=True, slots=True)
class EmbeddingChoice:
    """A decision: the label (``None``: none fits), the best label, and the margin score."""

    label: str | None
    top: str
    score: float


class EmbeddingRouter:
    """Picks the label (a skill name, or any label) whose examples a request resembles.

    Args:
        examples: labelled texts ``(text, label)``; labels double as skill names in graphs.
        embedder: embeds the examples (once, on first use) and each request.
        scoring: ``"centroid"`` (default), ``"nearest"`` or ``"top3"``.
        margin_weight: how much the runner-up's score counts against the best.
        threshold: the margin score a label needs; below it none fits.
    """

    def __init__(
        self,
        examples: Sequence[tuple[str, str]],
        embedder: Embedder,
        *,
        scoring: Scoring = "centroid",
        margin_weight: float = 0.5,
        threshold: float = 0.0,
    ) -> None:
        if not examples:
            raise ConfigError("router.examples", "an EmbeddingRouter needs labelled examples")
        if scoring not in ("centroid", "nearest", "top3"):
            raise ConfigError("router.scoring", f"unknown scoring {scoring!r}; use centroid, nearest or top3")
        self.texts = [t for t, _ in examples]
        self.labels = sorted({lb for _, lb in examples})
        self._of = [self.labels.index(lb) for _, lb in examples]
        self.embedder = embedder
        self.scoring, self.margin_weight, self.threshold = scoring, margin_weight, threshold
        self._bank: Any = None

    def skill_names(self) -> set[str]:
        return set(self.labels)

    def model_keys(self) -> set[str]:
        return set()

    @staticmethod
    def _unit(vectors: Any) -> Any:
        np = _np()
        m = np.asarray(vectors, dtype=np.float32)
        return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)

    async def _vectors(self) -> Any:
        if self._bank is None:
            self._bank = self._unit(await self.embedder.embed(self.texts))
        return self._bank

    def _label_scores(self, bank: Any, queries: Any, scoring: str) -> Any:
        np = _np()
        sims = queries @ bank.T
        of = np.asarray(self._of)
        out = np.empty((len(queries), len(self.labels)), dtype=np.float32)
        for j in range(len(self.labels)):
            cols = sims[:, of == j]
            if scoring == "nearest":
                out[:, j] = cols.max(axis=1)
            elif scoring == "top3":
                out[:, j] = np.sort(cols, axis=1)[:, -3:].mean(axis=1)
            else:
                centroid = bank[of == j].mean(axis=0)
                out[:, j] = queries @ (centroid / max(float(np.linalg.norm(centroid)), 1e-12))
        return out

    def _margins(self, scores: Any, weight: float) -> tuple[Any, Any]:
        np = _np()
        top = scores.argmax(axis=1)
        ordered = np.sort(scores, axis=1)
        runner_up = ordered[:, -2] if scores.shape[1] > 1 else np.zeros(len(scores))
        return top, ordered[:, -1] - weight * runner_up

    async def choose_many(self, texts: Sequence[str]) -> list[EmbeddingChoice]:
        """Decisions for many texts (one embedding call)."""
        bank = await self._vectors()
        queries = self._unit(await self.embedder.embed(list(texts)))
        top, margin = self._margins(self._label_scores(bank, queries, self.scoring), self.margin_weight)
        return [
            EmbeddingChoice(self.labels[t] if m >= self.threshold else None, self.labels[t], float(m))
            for t, m in zip(top, margin)
        ]

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
        scorings: Sequence[Scoring] = ("centroid", "nearest", "top3"),
        margin_weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    ) -> float:
        """Choose scoring, margin weight and threshold for the best accuracy on labelled
        requests (``None``: none should fit). Ties go to the lower threshold. Returns
        that accuracy."""
        np = _np()
        if len(texts) != len(labels) or not texts:
            raise ConfigError("router.fit", "give as many labels as texts, at least one")
        bank = await self._vectors()
        queries = self._unit(await self.embedder.embed(list(texts)))
        gold = list(labels)
        best: tuple = (-1.0,)
        for scoring in scorings:
            scores = self._label_scores(bank, queries, scoring)
            for weight in margin_weights:
                top, margin = self._margins(scores, weight)
                right_if_kept = np.array([self.labels[t] == g for t, g in zip(top, gold)])
                right_if_none = np.array([g is None for g in gold])
                for th in np.unique(margin):
                    keep = margin >= th
                    accuracy = float(np.where(keep, right_if_kept, right_if_none).mean())
                    if (accuracy, -th) > best[:2]:
                        best = (accuracy, -th, scoring, weight, float(th))
        self.scoring, self.margin_weight, self.threshold = best[2], best[3], best[4]
        return best[0]

    def __repr__(self) -> str:
        return (f"EmbeddingRouter({len(self.labels)} labels, scoring={self.scoring!r}, "
                f"margin_weight={self.margin_weight}, threshold={self.threshold:.3f})")
