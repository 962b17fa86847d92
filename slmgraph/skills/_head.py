"""A trained head over embeddings: multinomial logistic regression, calibrated.

:class:`LinearHead` standardises the vectors, fits softmax regression with an L2
penalty by full-batch L-BFGS (numpy only, deterministic), and calibrates its
probabilities with one temperature fitted on out-of-fold logits (k folds drawn
with the seed). Given the examples' texts too, it adds lexical evidence: the
cosine of a text's TF-IDF word and character n-grams to each label's centroid
(:class:`~slmgraph.skills._lexical.LexicalModel`), times a weight chosen out of
fold for the lowest log loss (0 when the n-grams do not help). Requests scored
without their text get the vector-only logits and their own temperature.

The out-of-fold probabilities are kept (``oof``): they are what the out-of-scope
thresholds and the classify skill's "decisive" bar are fitted on when no
validation split is given.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from .._errors import ConfigError
from .._lazy import numpy_for
from ._lexical import LexicalModel

__all__ = ["LinearHead"]

#: The lexical weights tried out of fold (logit units per unit of TF-IDF cosine).
LEXICAL_WEIGHTS = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0)


def _np() -> Any:
    return numpy_for("the trained head")


def _softmax(z: Any) -> Any:
    np = _np()
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _lbfgs(fun: Any, x0: Any, *, max_iter: int, memory: int = 10, tol: float = 1e-5) -> Any:
    """Minimise ``fun(x) -> (value, gradient)`` by L-BFGS with a backtracking line search."""
    np = _np()
    x = x0.copy()
    f, g = fun(x)
    s_list: list[Any] = []
    y_list: list[Any] = []
    for _ in range(max_iter):
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_list), reversed(y_list)):
            a = float(s @ q) / float(y @ s)
            alphas.append(a)
            q -= a * y
        if s_list:
            q *= float(s_list[-1] @ y_list[-1]) / float(y_list[-1] @ y_list[-1])
        for (s, y), a in zip(zip(s_list, y_list), reversed(alphas)):
            q += (a - float(y @ q) / float(y @ s)) * s
        direction = -q
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from the gradient
            s_list.clear(), y_list.clear()
            direction, slope = -g, -float(g @ g)
        step = 1.0
        while True:
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-8:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        if float(y @ s) > 1e-10:
            s_list.append(s)
            y_list.append(y)
            if len(s_list) > memory:
                s_list.pop(0), y_list.pop(0)
        converged = abs(f - f_new) <= tol * max(1.0, abs(f))
        x, f, g = x_new, f_new, g_new
        if converged or float(np.abs(g).max()) < tol:
            break
    return x


class LinearHead:
    """Softmax regression over embeddings with a fitted temperature.

    Args:
        l2: the L2 penalty on the weights (on standardised features); ``"auto"``
            (the default): 0.01, scaled down by ``2000 / n`` above 2,000 examples
            (a large bank needs less of a prior).
        max_iter: L-BFGS iterations per fit.
        folds: folds for the out-of-fold logits (temperature, thresholds); fewer
            when a class has fewer examples; 0 skips calibration (temperature 1).
        seed: draws the folds; the fit itself is deterministic.
        holdout_above: from this many examples on, only one of the folds is held
            out (the others' rows get no out-of-fold answer: NaN in ``oof``).
        lexical: add TF-IDF n-gram evidence when :meth:`fit` is given the texts
            (its weight is fitted out of fold; needs calibration folds).
    """

    def __init__(self, *, l2: float | str = "auto", max_iter: int = 100, folds: int = 5, seed: int = 0,
                 holdout_above: int = 2000, lexical: bool = True) -> None:
        if (l2 != "auto" and (isinstance(l2, str) or l2 < 0)) or max_iter < 1 or folds < 0:
            raise ConfigError("head", "l2 >= 0 (or 'auto'), max_iter >= 1 and folds >= 0 are needed")
        self.l2, self.max_iter, self.folds, self.seed = l2, max_iter, folds, seed
        self.holdout_above, self.lexical = holdout_above, lexical
        self._l2 = 1e-2 if l2 == "auto" else float(l2)
        self.mean: Any = None
        self.scale: Any = None
        self.W: Any = None
        self.b: Any = None
        self.temperature = 1.0  # with the lexical term (when there is one)
        self.vector_temperature = 1.0  # vector-only logits
        self.lex: LexicalModel | None = None
        self.lex_weight = 0.0
        self.oof: Any = None  # out-of-fold calibrated probabilities of the training rows

    def settings(self) -> tuple[Any, ...]:
        """What the fit depends on besides the data (the cache key uses it)."""
        return (self.l2, self.max_iter, self.folds, self.seed, self.holdout_above, self.lexical)

    def copy_settings(self) -> LinearHead:
        """An unfitted head with the same settings."""
        return LinearHead(l2=self.l2, max_iter=self.max_iter, folds=self.folds, seed=self.seed,
                          holdout_above=self.holdout_above, lexical=self.lexical)

    # -- fitting -----------------------------------------------------------------------
    def _fit_weights(self, X: Any, y: Any, n_classes: int, start: Any = None) -> tuple[Any, Any]:
        np = _np()
        n, d = X.shape
        if n < d:  # the L2 solution lies in the rows' span: fit in that n-dimensional basis
            basis, _ = np.linalg.qr(X.T)
            W, b = self._fit_weights(X @ basis, y, n_classes)
            return (basis @ W).astype(np.float32), b
        onehot = np.zeros((n, n_classes), dtype=np.float32)
        onehot[np.arange(n), y] = 1.0
        l2 = self._l2

        def fun(theta: Any) -> tuple[float, Any]:
            W = theta[: d * n_classes].reshape(d, n_classes)
            b = theta[d * n_classes :]
            z = X @ W + b
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            total = e.sum(axis=1, keepdims=True)
            loss = float(np.mean(np.log(total[:, 0]) - z[onehot > 0])) + 0.5 * l2 * float((W * W).sum())
            grad_z = (e / total - onehot) / n
            gW = X.T @ grad_z + l2 * W
            gb = grad_z.sum(axis=0)
            return loss, np.concatenate([gW.ravel(), gb]).astype(np.float32)

        x0 = np.zeros(d * n_classes + n_classes, dtype=np.float32) if start is None else start.astype(np.float32)
        theta = _lbfgs(fun, x0, max_iter=self.max_iter, tol=1e-4)
        return theta[: d * n_classes].reshape(d, n_classes), theta[d * n_classes :]

    def _folds(self, y: Any) -> list[Any]:
        np = _np()
        counts = np.bincount(y)
        k = min(self.folds, int(counts[counts > 0].min()) if len(counts) else 0)
        if k < 2:
            return []
        rng = np.random.default_rng(self.seed)
        fold = np.empty(len(y), dtype=np.int64)
        for c in np.flatnonzero(counts):
            rows = np.flatnonzero(y == c)
            rng.shuffle(rows)
            fold[rows] = (np.arange(len(rows)) + int(rng.integers(k))) % k
        return [fold == i for i in range(k)]

    def fit(self, X: Any, y: Sequence[int], n_classes: int | None = None,
            texts: Sequence[str] | None = None) -> LinearHead:
        """Fit on vectors ``X`` (rows) with class codes ``y`` (0..n_classes-1); with
        ``texts`` (one per row) the lexical term is fitted too."""
        np = _np()
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or len(X) != len(y) or len(y) == 0:
            raise ConfigError("head.fit", "give one class code per vector, at least one")
        if texts is not None and len(texts) != len(y):
            raise ConfigError("head.fit", f"give one text per vector ({len(texts)} texts, {len(y)} vectors)")
        n_classes = int(n_classes if n_classes is not None else y.max() + 1)
        self._l2 = float(self.l2) if self.l2 != "auto" else 1e-2 * min(1.0, 2000.0 / len(y))
        self.mean = X.mean(axis=0)
        self.scale = X.std(axis=0) + 1e-6
        Z = (X - self.mean) / self.scale
        oof_logits = np.full((len(y), n_classes), np.nan, dtype=np.float32)
        folds = self._folds(y) if self.folds else []
        if len(y) >= self.holdout_above:
            folds = folds[:1]  # a large bank: one held-out fold is evidence enough, at 1/k the cost
        lexical = self.lexical and texts is not None and bool(folds)
        oof_lex = np.zeros_like(oof_logits)
        start = None
        if lexical:  # the texts' n-grams are counted once; each fold sums its own centroids
            lex = LexicalModel()
            vectors = lex.learn_vocabulary(list(texts))  # type: ignore[arg-type]
        for held in folds:
            W, b = self._fit_weights(Z[~held], y[~held], n_classes)
            oof_logits[held] = Z[held] @ W + b
            start = np.concatenate([W.ravel(), b])
            if lexical:
                train = np.flatnonzero(~held)
                model = lex.sharing_vocabulary().fit_rows([vectors[i] for i in train], y[train], n_classes)
                oof_lex[held] = model.score_rows([vectors[i] for i in np.flatnonzero(held)])
        # the last fold's weights start the final fit: it converges in fewer steps
        self.W, self.b = self._fit_weights(Z, y, n_classes, start=start)
        self.lex, self.lex_weight = None, 0.0
        if folds:
            seen = ~np.isnan(oof_logits[:, 0])
            logits, ys = oof_logits[seen], y[seen]
            self.vector_temperature = _fit_temperature(logits, ys)
            self.temperature, fused = self.vector_temperature, np.nan_to_num(oof_logits)
            if lexical:
                best = (_nll(logits / self.vector_temperature, ys), 0.0, self.vector_temperature)
                for w in LEXICAL_WEIGHTS[1:]:
                    t = _fit_temperature(logits + w * oof_lex[seen], ys)
                    best = min(best, (_nll((logits + w * oof_lex[seen]) / t, ys), w, t))
                if best[1] > 0:
                    self.lex = lex.fit_rows(vectors, y, n_classes)
                    self.lex_weight, self.temperature = best[1], best[2]
                    fused = fused + best[1] * oof_lex
            self.oof = _softmax(fused / self.temperature)
            self.oof[~seen] = np.nan  # rows no fold held out: no out-of-fold answer
        else:
            self.temperature = self.vector_temperature = 1.0
            self.oof = None
        return self

    # -- predicting ----------------------------------------------------------------------
    def logits(self, X: Any, texts: Sequence[str] | None = None) -> Any:
        """Calibrated logits; with the requests' ``texts``, the lexical term is added."""
        np = _np()
        if self.W is None:
            raise ConfigError("head", "the head is not fitted yet; call fit first")
        Z = (np.asarray(X, dtype=np.float32) - self.mean) / self.scale
        z = Z @ self.W + self.b
        if self.lex is None or texts is None:
            return z / self.vector_temperature
        if len(texts) != len(z):
            raise ConfigError("head", f"give one text per vector ({len(texts)} texts, {len(z)} vectors)")
        return (z + self.lex_weight * self.lex.scores(texts)) / self.temperature

    def proba(self, X: Any, texts: Sequence[str] | None = None) -> Any:
        """Calibrated class probabilities, one row per vector (see :meth:`logits`)."""
        return _softmax(self.logits(X, texts))

    # -- saving --------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        np = _np()
        buf = io.BytesIO()
        arrays = {"mean": self.mean, "scale": self.scale, "W": self.W, "b": self.b,
                  "params": np.array([np.nan if self.l2 == "auto" else self.l2, self.max_iter, self.folds, self.seed, self.temperature,
                                     self.holdout_above, float(self.lexical), self.lex_weight,
                                     self.vector_temperature])}
        if self.oof is not None:
            arrays["oof"] = self.oof
        if self.lex is not None:
            arrays.update(self.lex.arrays())
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearHead:
        np = _np()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            l2, max_iter, folds, seed, temperature, holdout, lexical, weight, vtemp = z["params"].tolist()
            head = cls(l2="auto" if np.isnan(l2) else l2, max_iter=int(max_iter), folds=int(folds), seed=int(seed), holdout_above=int(holdout),
                       lexical=bool(lexical))
            head.mean, head.scale, head.W, head.b = z["mean"], z["scale"], z["W"], z["b"]
            head.temperature, head.vector_temperature, head.lex_weight = float(temperature), float(vtemp), float(weight)
            head.oof = z["oof"] if "oof" in z.files else None
            head.lex = LexicalModel.from_arrays(z) if "lex_vocab" in z.files else None
        return head

    def __repr__(self) -> str:
        shape = "unfitted" if self.W is None else f"{self.W.shape[0]}x{self.W.shape[1]}"
        return f"LinearHead({shape}, l2={self.l2!r}, temperature={self.temperature:.3f}, lexical={self.lex_weight:g})"


def _nll(logits: Any, y: Any) -> float:
    np = _np()
    p = _softmax(logits)
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-12))))


def _fit_temperature(logits: Any, y: Any) -> float:
    """The temperature with the lowest log loss of ``softmax(logits / T)`` (golden section on log T)."""
    np = _np()

    def nll(log_t: float) -> float:
        return _nll(logits / np.exp(log_t), y)

    lo, hi = np.log(0.05), np.log(20.0)
    golden = (np.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))
