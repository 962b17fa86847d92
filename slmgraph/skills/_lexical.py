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

__all__ = ["LexicalModel", "ngrams"]

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def _np() -> Any:
    import numpy

    return numpy


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
        np = _np()
        df: dict[str, int] = {}
        for text in texts:  # pass 1: document frequencies (the n-grams are not kept: memory)
            for gram in ngrams(text):
                df[gram] = df.get(gram, 0) + 1
        names = sorted(df)
        n = max(1, len(texts))
        idf = np.log((1.0 + n) / (1.0 + np.array([df[g] for g in names], dtype=np.float64))) + 1.0
        self.vocab = {gram: i for i, gram in enumerate(names)}
        self.idf, self.n_classes = idf.astype(np.float32), int(n_classes)
        del df, names
        feats, vals, classes = [], [], []
        for text, c in zip(texts, codes):  # pass 2: each text's TF-IDF vector, added to its label's sum
            idx, val = self._vector(ngrams(text))
            feats.append(idx)
            vals.append(val)
            classes.append(np.full(len(idx), int(c), dtype=np.int64))
        empty = [np.zeros(0, np.int64)]
        key = np.concatenate(feats or empty) * n_classes + np.concatenate(classes or empty)
        uniq, inverse = np.unique(key, return_inverse=True)
        sums = np.bincount(inverse, weights=np.concatenate(vals or empty).astype(np.float64))
        feat, cls = uniq // n_classes, uniq % n_classes
        norms = np.sqrt(np.bincount(cls, weights=sums * sums, minlength=n_classes))
        self._set_centroids(feat, cls, sums / np.maximum(norms[cls], 1e-12))
        return self

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

    def scores(self, texts: Sequence[str]) -> Any:
        """Cosine of each text's TF-IDF vector to each label's centroid (rows: texts)."""
        np = _np()
        if self.ptr is None:
            raise ValueError("the lexical model is not fitted")
        out = np.zeros((len(texts), self.n_classes), dtype=np.float32)
        ptr, cls, cval = self.ptr, self.cls, self.val
        for r, text in enumerate(texts):
            idx, val = self._vector(ngrams(text))
            if not len(idx):
                continue
            starts, ends = ptr[idx], ptr[idx + 1]
            lengths = ends - starts
            rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
            out[r] = np.bincount(cls[rows], weights=cval[rows] * np.repeat(val, lengths), minlength=self.n_classes)
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
