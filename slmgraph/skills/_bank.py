"""The classify skill's example bank: labelled texts, embedded once, searched by
cosine similarity, with the thresholds the skill calibrates on it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .._errors import MissingDependencyError
from ..models._embed import Embedder

__all__ = ["ExampleBank"]


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with every extra that embeds
        raise MissingDependencyError("numpy (needed by the classify skill)", "embedded") from None
    return numpy


class ExampleBank:
    """Labelled example texts and their vectors, embedded once on first use.

    Labels without an example are represented by their own name (``card_arrival``
    -> ``"card arrival"``), so every label can be retrieved.
    """

    def __init__(self, examples: Sequence[tuple[str, str]], labels: Sequence[str], embedder: Embedder) -> None:
        covered = {label for _, label in examples}
        self.texts = [t for t, _ in examples] + [_spoken(lb) for lb in labels if lb not in covered]
        self.labels = [lb for _, lb in examples] + [lb for lb in labels if lb not in covered]
        self.embedder = embedder
        self._matrix: Any = None

    async def matrix(self) -> Any:
        """The L2-normalised example vectors (rows), embedded on the first call."""
        if self._matrix is None:
            self._matrix = _normalise(await self.embedder.embed(self.texts))
        return self._matrix

    async def nearest(self, text: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` examples most similar to ``text``: (index, cosine), best first."""
        np = _numpy()
        matrix = await self.matrix()
        query = _normalise(await self.embedder.embed([text]))[0]
        sims = matrix @ query
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(i), float(sims[i])) for i in top]

    async def calibrate(self, quantile: float) -> tuple[float, dict[str, float]]:
        """"None fits" thresholds from each example's similarity to the nearest
        *other* example of its own label: the ``quantile`` of those similarities
        over the whole bank (the global threshold), and per label, for labels with
        at least 5 examples (a tight cluster gets a higher bar than a loose one).
        About ``quantile`` of in-domain requests then fall below their bar."""
        np = _numpy()
        matrix = await self.matrix()
        codes = np.unique(np.asarray(self.labels), return_inverse=True)[1]
        nearest_same = np.full(len(codes), np.nan, dtype=np.float32)
        for lo in range(0, len(codes), 512):  # bounded memory for large banks
            rows = np.arange(lo, min(lo + 512, len(codes)))
            sims = matrix[rows] @ matrix.T
            sims[codes[None, :] != codes[rows][:, None]] = -2.0
            sims[np.arange(len(rows)), rows] = -2.0
            nearest_same[rows] = sims.max(axis=1)
        nearest_same[nearest_same <= -2.0] = np.nan  # labels with one example
        if np.all(np.isnan(nearest_same)):
            return 0.0, {}
        overall = float(np.nanquantile(nearest_same, quantile))
        per_label: dict[str, float] = {}
        names = np.asarray(self.labels)
        for label in set(self.labels):
            values = nearest_same[(names == label) & ~np.isnan(nearest_same)]
            if len(values) >= 5:
                per_label[label] = float(np.quantile(values, quantile))
        return overall, per_label

    async def calibrate_margin(self, precision: float, sample: int = 400) -> float | None:
        """The smallest lead of the nearest label over the runner-up at which
        retrieval alone is right at least ``precision`` of the time, measured
        leave-one-out on a sample of the bank. ``None`` when no lead is enough (or
        the bank has too few examples to tell)."""
        np = _numpy()
        matrix = await self.matrix()
        codes = np.unique(np.asarray(self.labels), return_inverse=True)[1]
        n_labels = int(codes.max()) + 1 if len(codes) else 0
        if n_labels < 2 or len(codes) < 20:
            return None
        rows = np.linspace(0, len(codes) - 1, min(sample, len(codes))).astype(int)
        sims = matrix[rows] @ matrix.T
        sims[np.arange(len(rows)), rows] = -2.0  # leave the example itself out
        best = np.full((len(rows), n_labels), -2.0, dtype=np.float32)
        np.maximum.at(best, (np.repeat(np.arange(len(rows)), len(codes)), np.tile(codes, len(rows))), sims.ravel())
        order = np.argsort(-best, axis=1)
        top, second = order[:, 0], order[:, 1]
        margins = best[np.arange(len(rows)), top] - best[np.arange(len(rows)), second]
        right = top == codes[rows]
        by_margin = np.argsort(-margins)
        hits = np.cumsum(right[by_margin]) / np.arange(1, len(rows) + 1)
        ok = np.flatnonzero(hits >= precision)
        if len(ok) == 0 or ok.max() < 9:  # fewer than 10 examples would pass: no evidence
            return None
        return float(margins[by_margin][ok.max()])


def _normalise(vectors: list[list[float]]) -> Any:
    np = _numpy()
    m = np.asarray(vectors, dtype=np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def _spoken(label: str) -> str:
    return re.sub(r"[_\-]+", " ", label).strip()
