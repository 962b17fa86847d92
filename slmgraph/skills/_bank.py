"""The example bank: labelled texts, their vectors (cached on disk), a trained head
and the out-of-scope rule, shared by the classify skill and :class:`EmbeddingRouter`.

The bank embeds its texts once through an :class:`~slmgraph.models.EmbeddingCache`
(a restart reads them back), fits a calibrated :class:`LinearHead` on them (saved
in the same cache, keyed by the encoder, the examples and the head's settings),
and answers :meth:`ExampleBank.rank`: the head's best labels for a request with
their calibrated probabilities and the similarity of each label's nearest
example. Adding examples (:meth:`add_examples`) embeds only the new texts and
refits the head.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ConfigError, MissingDependencyError
from ..models._embed import Embedder, embedder_identity
from ..models._embed_cache import EmbeddingCache, Progress
from ._head import LinearHead
from ._oos import OOSRule, fit_rule, loo_rule

__all__ = ["ExampleBank", "Ranked", "load_examples"]

_HEAD_VERSION = 4


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with every extra that embeds
        raise MissingDependencyError("numpy (needed by the classify skill)", "embedded") from None
    return numpy


def load_examples(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Labelled examples from a file: CSV with ``text`` and ``label`` (or ``category``)
    columns, or JSON lines of ``{"text": ..., "label": ...}``."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        return [(str(r["text"]), str(r.get("label", r.get("category")))) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError("examples", f"cannot read labelled examples from {str(path)!r} ({exc}); "
                          "give a CSV with text,label columns or JSON lines with text and label") from None


def _resolve_cache(cache: EmbeddingCache | str | os.PathLike[str] | bool | None) -> EmbeddingCache | None:
    if cache is False:
        return None
    if isinstance(cache, EmbeddingCache):
        return cache
    if cache is None or cache is True:
        return EmbeddingCache(os.environ.get("SLMGRAPH_EMBED_CACHE") or None)
    return EmbeddingCache(cache)


@dataclass(frozen=True, slots=True)
class Ranked:
    """One candidate label for a request: calibrated probability (``None`` without a
    head), similarity of its nearest example, and that example's index."""

    label: str
    probability: float | None
    similarity: float
    example: int


class ExampleBank:
    """Labelled example texts, their vectors, a trained head and its thresholds.

    Labels without an example are represented by their own name (``card_arrival``
    -> ``"card arrival"``), so every label can be retrieved.

    Args:
        examples: ``(text, label)`` pairs, or a path to a CSV / JSON-lines file of them
            (see :func:`load_examples`).
        labels: the label set (default: the examples' labels).
        embedder: embeds the examples and each request.
        cache: an :class:`EmbeddingCache`, a folder for one, ``None`` (the default
            folder: ``$SLMGRAPH_EMBED_CACHE`` or ``.slmgraph/embeddings``, beside the
            default checkpoint) or ``False`` (no cache).
        head: ``True`` (a :class:`LinearHead` with ``seed``), a head to fit, or
            ``False`` (retrieval only).
        seed: the head's seed.
        progress: the progress bar while the bank is embedded (see :data:`Progress`).
    """

    def __init__(
        self,
        examples: Sequence[tuple[str, str]] | str | os.PathLike[str],
        labels: Sequence[str] | None = None,
        embedder: Embedder | None = None,
        *,
        cache: EmbeddingCache | str | os.PathLike[str] | bool | None = None,
        head: LinearHead | bool = True,
        seed: int = 0,
        progress: Progress = None,
    ) -> None:
        if embedder is None:
            raise ConfigError("bank.embedder", "an example bank needs an embedder")
        if isinstance(examples, (str, os.PathLike)):
            examples = load_examples(examples)
        self.embedder = embedder
        self.cache = _resolve_cache(cache)
        self._head_template = LinearHead(seed=seed) if head is True else (head or None)
        self.progress = progress
        self._set(list(examples), list(labels) if labels is not None else None)
        self._lock: asyncio.Lock | None = None

    # -- contents -------------------------------------------------------------------------
    def _set(self, examples: list[tuple[str, str]], labels: list[str] | None) -> None:
        np = _numpy()
        self.label_set = list(dict.fromkeys(labels if labels is not None else [lb for _, lb in examples]))
        covered = {label for _, label in examples}
        self.examples = examples
        self.texts = [t for t, _ in examples] + [_spoken(lb) for lb in self.label_set if lb not in covered]
        self.labels = [lb for _, lb in examples] + [lb for lb in self.label_set if lb not in covered]
        self.names = sorted(set(self.labels))
        index = {lb: i for i, lb in enumerate(self.names)}
        self.codes = np.asarray([index[lb] for lb in self.labels], dtype=np.int64)
        self.rows_of = [np.flatnonzero(self.codes == i) for i in range(len(self.names))]
        self._matrix: Any = None
        self.head: LinearHead | None = None
        self.head_source = ""
        self.rule: OOSRule | None = None

    async def add_examples(self, examples: Sequence[tuple[str, str]], labels: Sequence[str] = ()) -> None:
        """Add labelled examples (new labels too), embed only the new texts, refit the
        head and drop the fitted thresholds (refit them with :meth:`fit_rule`)."""
        new_labels = [lb for lb in [*labels, *(lb for _, lb in examples)] if lb not in self.label_set]
        await self.fit([*self.examples, *examples], [*self.label_set, *dict.fromkeys(new_labels)])

    async def fit(self, examples: Sequence[tuple[str, str]] | None = None, labels: Sequence[str] | None = None) -> None:
        """Replace the examples (when given) and fit the head on them (read from the
        cache when these examples were fitted before)."""
        if examples is not None:
            self._set(list(examples), list(labels) if labels is not None else None)
        await self.ready()

    # -- vectors and head -----------------------------------------------------------------
    async def matrix(self) -> Any:
        """The L2-normalised example vectors (rows), embedded (or read from the cache) once."""
        if self._matrix is None:
            if self.cache is not None and getattr(self.embedder, "cacheable", True):
                raw = await self.cache.embed(self.embedder, self.texts, progress=self.progress, label="embedding bank")
            else:
                raw = await self.embedder.embed(list(self.texts))
            self._matrix = _normalise(raw)
        return self._matrix

    async def ready(self) -> None:
        """Embed the bank and fit (or load) the head, once."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            matrix = await self.matrix()
            if self.head is None and self._head_template is not None and len(self.names) >= 2:
                self.head = await self._load_or_fit_head(matrix)

    def _head_key(self, identity: str) -> str:
        h = hashlib.sha256(f"head-v{_HEAD_VERSION}\n{identity}\n".encode())
        t = self._head_template
        h.update(repr(t.settings()).encode())
        for text, label in zip(self.texts, self.labels):
            h.update(f"\n{label}\t{text}".encode("utf-8", "surrogatepass"))
        return "head-" + h.hexdigest()[:32]

    async def _load_or_fit_head(self, matrix: Any) -> LinearHead:
        t = self._head_template
        cache = self.cache if getattr(self.embedder, "cacheable", True) else None
        identity = key = ""
        if cache is not None:
            identity = await asyncio.to_thread(embedder_identity, self.embedder)
            key = self._head_key(identity)
            data = await asyncio.to_thread(cache.load_blob, identity, key)
            if data is not None:
                try:
                    head = LinearHead.from_bytes(data)
                    if head.W is not None and head.W.shape == (matrix.shape[1], len(self.names)):
                        self.head_source = "cache"
                        return head
                except (ValueError, KeyError, OSError):
                    pass  # an unreadable blob: fit again and overwrite it
        head = t.copy_settings()
        await asyncio.to_thread(head.fit, matrix, self.codes, len(self.names), self.texts)
        self.head_source = "fitted"
        if cache is not None:
            await asyncio.to_thread(cache.store_blob, identity, key, head.to_bytes())
        return head

    async def query(self, texts: Sequence[str]) -> Any:
        """Normalised vectors of requests (not cached: each request is new)."""
        return _normalise(await self.embedder.embed(list(texts)))

    # -- answers --------------------------------------------------------------------------
    def rank(self, vector: Any, k: int, text: str | None = None) -> list[Ranked]:
        """The ``k`` best labels for one normalised request vector: by the head's
        probability when there is a head (with the request's ``text``, its lexical
        evidence counts too), else by nearest-example similarity."""
        np = _numpy()
        matrix = self._matrix
        if self.head is None:
            sims = matrix @ vector
            order = np.argsort(-sims, kind="stable")
            best: dict[str, Ranked] = {}
            for i in order[: max(k * 10, 20)]:
                best.setdefault(self.labels[i], Ranked(self.labels[i], None, float(sims[i]), int(i)))
                if len(best) == k:
                    break
            return list(best.values())
        probs = self.head.proba(vector[None, :], None if text is None else [text])[0]
        top = np.argsort(-probs, kind="stable")[:k]
        out = []
        for c in top:
            rows = self.rows_of[c]
            sims = matrix[rows] @ vector
            j = int(sims.argmax())
            out.append(Ranked(self.names[c], float(probs[c]), float(sims[j]), int(rows[j])))
        return out

    async def nearest(self, text: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` examples most similar to ``text``: (index, cosine), best first."""
        np = _numpy()
        matrix = await self.matrix()
        query = (await self.query([text]))[0]
        sims = matrix @ query
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(i), float(sims[i])) for i in top]

    # -- thresholds -----------------------------------------------------------------------
    def loo_similarity(self) -> Any:
        """Each example's similarity to the nearest *other* example of its label (NaN if alone)."""
        np = _numpy()
        matrix, codes = self._matrix, self.codes
        out = np.full(len(codes), np.nan, dtype=np.float32)
        for rows in self.rows_of:
            if len(rows) < 2:
                continue
            sims = matrix[rows] @ matrix[rows].T
            np.fill_diagonal(sims, -2.0)
            out[rows] = sims.max(axis=1)
        return out

    async def loo_rule(self, quantile: float = 0.05) -> OOSRule:
        """The out-of-scope rule without out-of-scope data (see :func:`loo_rule`)."""
        await self.ready()
        oof = self.head.oof if self.head is not None and self.head.oof is not None else None
        rows = _numpy().arange(len(self.examples))  # one (row, own label) pair per example, not a row x label grid
        conf = oof[rows, self.codes[rows]] if oof is not None else []
        self.rule = loo_rule(conf, self.loo_similarity()[self._real_rows()], quantile)
        return self.rule

    async def fit_rule(self, texts: Sequence[str], labels: Sequence[str | None], *, objective: str = "balanced",
                       with_bank: bool = True) -> OOSRule:
        """The out-of-scope rule fitted on labelled requests (``None``: out of scope).

        With ``with_bank`` the bank's own examples count as in-scope requests too,
        scored out of fold (see :meth:`held_out_scores`): many more in-scope cases
        than a validation split usually has. They are weighed so that the in-scope
        requests together keep the weight the given ones had (the share of
        out-of-scope requests, which sets where the bars fall, stays the split's)."""
        await self.ready()
        if len(texts) != len(labels) or not texts:
            raise ConfigError("thresholds", "give as many labels as texts, at least one")
        vectors = await self.query(texts)
        best = [self.rank(v, 1, t)[0] for v, t in zip(vectors, texts)]
        conf = [b.probability if b.probability is not None else 1.0 for b in best]
        sim, top, gold = [b.similarity for b in best], [b.label for b in best], list(labels)
        weights = None
        if with_bank:
            more = self.held_out_scores()
            n_in = sum(g is not None for g in gold)
            if more[0] and n_in:
                share = n_in / (n_in + len(more[0]))
                weights = [share if g is not None else 1.0 for g in gold] + [share] * len(more[0])
            conf, sim, top, gold = conf + more[0], sim + more[1], top + more[2], gold + more[3]
        self.rule = fit_rule(conf, sim, top, gold, objective=objective, weights=weights)  # type: ignore[arg-type]
        return self.rule

    def held_out_scores(self, chunk: int = 1024) -> tuple[list[float], list[float], list[str], list[str | None]]:
        """The bank's examples as requests the head did not see: for each example
        with an out-of-fold answer, its out-of-fold confidence, its similarity to
        the nearest *other* example of the out-of-fold best label, that label and
        its own. Empty without a head or out-of-fold answers."""
        np = _numpy()
        if self.head is None or self.head.oof is None:
            return [], [], [], []
        real = np.arange(len(self.examples))
        oof = self.head.oof[real]
        real = real[~np.isnan(oof[:, 0])]
        if not len(real):
            return [], [], [], []
        top = np.nan_to_num(self.head.oof[real]).argmax(axis=1)
        conf = self.head.oof[real, top]
        matrix = self._matrix
        order = np.argsort(self.codes, kind="stable")
        starts = np.searchsorted(self.codes[order], np.arange(len(self.names)))
        sims = np.empty(len(real), dtype=np.float32)
        for a in range(0, len(real), chunk):
            rows = real[a : a + chunk]
            block = matrix[rows] @ matrix.T
            block[np.arange(len(rows)), rows] = -2.0  # not itself
            per_label = np.maximum.reduceat(block[:, order], starts, axis=1)
            sims[a : a + chunk] = per_label[np.arange(len(rows)), top[a : a + chunk]]
        return (conf.tolist(), sims.tolist(), [self.names[c] for c in top],
                [self.labels[i] for i in real])

    def _real_rows(self) -> Any:
        """Rows that are real examples (not a label's spoken name)."""
        return slice(0, len(self.examples))

    async def calibrate(self, quantile: float) -> tuple[float, dict[str, float]]:
        """Retrieval "none fits" bars from each example's similarity to the nearest
        other example of its label: the ``quantile`` over the whole bank, and per
        label for labels with at least 5 examples."""
        np = _numpy()
        await self.matrix()
        nearest_same = self.loo_similarity()
        if np.all(np.isnan(nearest_same)):
            return 0.0, {}
        overall = float(np.nanquantile(nearest_same, quantile))
        per_label: dict[str, float] = {}
        for c, rows in enumerate(self.rows_of):
            values = nearest_same[rows][~np.isnan(nearest_same[rows])]
            if len(values) >= 5:
                per_label[self.names[c]] = float(np.quantile(values, quantile))
        return overall, per_label

    async def calibrate_lead(self, precision: float) -> float | None:
        """The smallest lead of the best label over the runner-up (calibrated head
        probabilities, out of fold; retrieval similarity, leave-one-out, without a
        head) at which the best label is right at least ``precision`` of the time.
        ``None`` when no lead is enough, or fewer than 10 examples would pass."""
        np = _numpy()
        await self.ready()
        real = self._real_rows()
        codes = self.codes[real]
        if len(self.names) < 2 or len(codes) < 20:
            return None
        if self.head is not None and self.head.oof is not None:
            scores = self.head.oof[real]
            held = ~np.isnan(scores[:, 0])  # rows with an out-of-fold answer
            scores, codes = scores[held], codes[held]
            if len(codes) < 20:
                return None
        else:
            matrix = self._matrix
            sims = matrix[real] @ matrix.T
            np.fill_diagonal(sims, -2.0)
            scores = np.full((len(codes), len(self.names)), -2.0, dtype=np.float32)
            for c, rows in enumerate(self.rows_of):
                scores[:, c] = sims[:, rows].max(axis=1)
        order = np.argsort(-scores, axis=1)
        top, second = order[:, 0], order[:, 1]
        leads = scores[np.arange(len(codes)), top] - scores[np.arange(len(codes)), second]
        right = top == codes
        by_lead = np.argsort(-leads, kind="stable")
        hits = np.cumsum(right[by_lead]) / np.arange(1, len(codes) + 1)
        ok = np.flatnonzero(hits >= precision)
        if len(ok) == 0 or ok.max() < 9:
            return None
        return float(leads[by_lead][ok.max()])

    def __repr__(self) -> str:
        return f"ExampleBank({len(self.texts)} examples, {len(self.names)} labels, head={self.head!r})"


def _normalise(vectors: Any) -> Any:
    np = _numpy()
    m = np.asarray(vectors, dtype=np.float32)
    if m.ndim == 1:
        m = m.reshape(len(m), -1)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def _spoken(label: str) -> str:
    return re.sub(r"[_\-]+", " ", label).strip()
