"""Lexical evidence for the trained head: TF-IDF word and character n-grams.

Intent data is lexical: "top up", "PIN", "exchange rate" decide many labels. A
:class:`LexicalModel` turns a text into word unigrams and bigrams plus character
3- to 5-grams inside each word, weighted by sublinear term frequency and the
bank's inverse document frequency, L2-normalised; each label is the normalised
sum of its examples' vectors (a TF-IDF centroid). A text's score for a label is
the cosine to that centroid. Fitting is one pass over the bank (no iterations);
scoring a request costs a few hundred dictionary look-ups and one weighted
``bincount`` over the request's n-grams, so it fits inside the head's
sub-millisecond decision. :class:`~slmgraph.skills.LinearHead` adds these scores
to its logits with a weight fitted out of fold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .._lazy import numpy_for

__all__ = ["LexicalModel", "ngrams"]

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def _np() -> Any:
    return numpy_for("the lexical head")


def ngrams(text: str) -> dict[str, int]:
    """The n-gram counts of a text: words (``w:``), word bigrams (``b:``) and
    character 3- to 5-grams of each space-padded word (``c:``)."""
    words = _WORD.findall(text.lower())
    out: dict[str, int] = {}
    prev = ""
    for word in words:
        for gram in (f"w:{word}", f"b:{prev} {word}") if prev else (f"w:{word}",):
            out[gram] = out.get(gram, 0) + 1
        prev = word
        padded = f" {word} "
        for n in (3, 4, 5):
            for i in range(len(padded) - n + 1):
                gram = "c:" + padded[i : i + n]
                out[gram] = out.get(gram, 0) + 1
    return out


class LexicalModel:
    """TF-IDF n-gram centroids per label (see the module docstring)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.idf: Any = None
        # centroids, stored by n-gram: rows of n-gram j are ptr[j]:ptr[j+1] of (cls, val)
        self.ptr: Any = None
        self.cls: Any = None
        self.val: Any = None
        self.n_classes = 0

    def fit(self, texts: Sequence[str], codes: Sequence[int], n_classes: int) -> LexicalModel:
        """The vocabulary, its IDF and each label's centroid from labelled texts."""
        return self.fit_rows(self.learn_vocabulary(texts), codes, n_classes)

    def learn_vocabulary(self, texts: Sequence[str]) -> list[tuple[Any, Any]]:
        """Set the vocabulary and IDF from ``texts``; return each text's TF-IDF vector
        (indices, values), for :meth:`fit_rows` and :meth:`score_rows`. The head
        counts its bank's n-grams once this way and sums each held-out fold's
        centroids from them (the IDF then includes the fold's texts; it uses no
        labels)."""
        np = _np()
        df: dict[str, int] = {}
        for text in texts:  # pass 1: document frequencies (the n-grams are not kept: memory)
            for gram in ngrams(text):
                df[gram] = df.get(gram, 0) + 1
        names = sorted(df)
        n = max(1, len(texts))
        idf = np.log((1.0 + n) / (1.0 + np.array([df[g] for g in names], dtype=np.float64))) + 1.0
        self.vocab = {gram: i for i, gram in enumerate(names)}
        self.idf = idf.astype(np.float32)
        del df, names
        return [self._vector(ngrams(text)) for text in texts]  # pass 2

    def fit_rows(self, rows: Sequence[tuple[Any, Any]], codes: Sequence[int], n_classes: int) -> LexicalModel:
        """Each label's centroid from TF-IDF vectors made by :meth:`learn_vocabulary`."""
        np = _np()
        self.n_classes = int(n_classes)
        empty = [np.zeros(0, np.int64)]
        feats = [idx for idx, _ in rows]
        classes = [np.full(len(idx), int(c), dtype=np.int64) for idx, c in zip(feats, codes)]
        key = np.concatenate(feats or empty) * n_classes + np.concatenate(classes or empty)
        uniq, inverse = np.unique(key, return_inverse=True)
        sums = np.bincount(inverse, weights=np.concatenate([v for _, v in rows] or empty).astype(np.float64))
        feat, cls = uniq // n_classes, uniq % n_classes
        norms = np.sqrt(np.bincount(cls, weights=sums * sums, minlength=n_classes))
        self._set_centroids(feat, cls, sums / np.maximum(norms[cls], 1e-12))
        return self

    def sharing_vocabulary(self) -> LexicalModel:
        """An unfitted model with this one's vocabulary and IDF (for held-out folds)."""
        other = LexicalModel()
        other.vocab, other.idf = self.vocab, self.idf
        return other

    def _set_centroids(self, feat: Any, cls: Any, val: Any) -> None:
        np = _np()
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(feat, minlength=len(self.vocab)))]).astype(np.int64)
        self.cls, self.val = cls.astype(np.int32), val.astype(np.float32)

    def _vector(self, grams: dict[str, int]) -> tuple[Any, Any]:
        np = _np()
        vocab = self.vocab
        pairs = [(vocab[g], c) for g, c in grams.items() if g in vocab]
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        idx = np.array([j for j, _ in pairs], dtype=np.int64)
        val = (1.0 + np.log(np.array([c for _, c in pairs], dtype=np.float32))) * self.idf[idx]
        return idx, val / max(float(np.linalg.norm(val)), 1e-12)

    def _score(self, idx: Any, val: Any, out: Any) -> None:
        """One vector's cosines to the centroids, into ``out``. N-grams no centroid has
        (unseen by this model's examples) are dropped before normalising, as for a
        request: a held-out fold is scored as new requests would be."""
        np = _np()
        ptr = self.ptr
        lengths = ptr[idx + 1] - ptr[idx]
        seen = lengths > 0
        idx, val, lengths = idx[seen], val[seen], lengths[seen]
        if not len(idx):
            return
        val = val / max(float(np.linalg.norm(val)), 1e-12)
        starts = ptr[idx]
        rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        out[:] = np.bincount(self.cls[rows], weights=self.val[rows] * np.repeat(val, lengths), minlength=self.n_classes)

    def scores(self, texts: Sequence[str]) -> Any:
        """Cosine of each text's TF-IDF vector to each label's centroid (rows: texts)."""
        if self.ptr is None:
            raise ValueError("the lexical model is not fitted")
        return self.score_rows([self._vector(ngrams(t)) for t in texts])

    def score_rows(self, rows: Sequence[tuple[Any, Any]]) -> Any:
        """:meth:`scores` for vectors made by :meth:`learn_vocabulary` (same vocabulary)."""
        np = _np()
        out = np.zeros((len(rows), self.n_classes), dtype=np.float32)
        for r, (idx, val) in enumerate(rows):
            self._score(idx, val, out[r])
        return out

    # -- saving (arrays only: no pickle) ---------------------------------------------------
    def arrays(self) -> dict[str, Any]:
        np = _np()
        return {"lex_vocab": np.array(list(self.vocab), dtype=str), "lex_idf": self.idf, "lex_ptr": self.ptr,
                "lex_cls": self.cls, "lex_val": self.val, "lex_classes": np.array([self.n_classes])}

    @classmethod
    def from_arrays(cls, z: Any) -> LexicalModel:
        model = cls()
        model.vocab = {g: i for i, g in enumerate(z["lex_vocab"].tolist())}
        model.idf, model.ptr = z["lex_idf"], z["lex_ptr"]
        model.cls, model.val = z["lex_cls"], z["lex_val"]
        model.n_classes = int(z["lex_classes"][0])
        return model
