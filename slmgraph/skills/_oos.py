"""Out-of-scope rules: when a request fits none of the labels.

An :class:`OOSRule` keeps a request in scope when the head's calibrated confidence
in its best label reaches ``min_confidence``, the request's similarity to that
label's nearest example reaches ``min_similarity``, *and* their combination
``log(confidence) + similarity_weight * similarity`` reaches ``min_score`` (one
score that weighs both kinds of evidence; off by default). The bars are fitted

- on a validation split that holds out-of-scope examples (label ``None``), by a
  grid over both bars, and over the combined score's weight and bar, for the best
  objective (:func:`fit_rule`); or
- without out-of-scope data, leave-one-out (:func:`loo_rule`): each bar at the
  ``quantile`` of what the bank's own examples score when held out (out-of-fold
  confidence, similarity to the nearest *other* example of the same label), so
  about that share of in-scope requests falls below each bar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._errors import ConfigError

__all__ = ["OOSRule", "fit_rule", "loo_rule", "combined", "Objective"]

#: ``"accuracy"``: right label or rightly none, over all requests. ``"balanced"``:
#: in-scope accuracy plus the F1 of the "none" answers.
Objective = Literal["accuracy", "balanced"]


@dataclass(frozen=True, slots=True)
class OOSRule:
    """The bars, and how they were fitted (``"validation"`` or ``"leave-one-out"``)."""

    min_confidence: float = 0.0
    min_similarity: float = -1.0
    fitted_on: str = "none"
    similarity_weight: float = 0.0
    min_score: float = float("-inf")

    def in_scope(self, confidence: float, similarity: float) -> bool:
        return (confidence >= self.min_confidence and similarity >= self.min_similarity
                and combined(confidence, similarity, self.similarity_weight) >= self.min_score)

    def why(self, confidence: float, similarity: float) -> str:
        """Why a request is out of scope (for the "none fits" answer)."""
        if self.min_score > float("-inf"):
            return (f"the best label's score log({confidence:.3f}) + {self.similarity_weight:g} x similarity "
                    f"{similarity:.3f} is below the fitted bar {self.min_score:.3f}")
        return (f"the best label's confidence {confidence:.3f} and nearest similarity {similarity:.3f} "
                f"miss the fitted bars {self.min_confidence:.3f} / {self.min_similarity:.3f}")


#: The similarity weights :func:`fit_rule` tries for the combined score.
SIMILARITY_WEIGHTS = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0)


def combined(confidence: Any, similarity: Any, weight: float) -> Any:
    """``log(confidence) + weight * similarity`` (scalars or arrays)."""
    import numpy as np

    return np.log(np.maximum(confidence, 1e-12)) + weight * np.asarray(similarity)


def _score(keep: Any, top: Any, gold: Any, objective: str, w: Any) -> float:
    is_oos = gold == ""
    right_kept = keep & (top == gold)
    right_none = ~keep & is_oos
    if objective == "accuracy":
        return float(w[right_kept | right_none].sum() / w.sum())
    n_in = float(w[~is_oos].sum())
    acc = float(w[right_kept & ~is_oos].sum()) / n_in if n_in else 0.0
    said, tp, n_oos = float(w[~keep].sum()), float(w[right_none].sum()), float(w[is_oos].sum())
    prec = tp / said if said else 0.0
    rec = tp / n_oos if n_oos else 0.0
    return acc + (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def fit_rule(confidence: Sequence[float], similarity: Sequence[float], top: Sequence[str],
             gold: Sequence[str | None], *, objective: Objective = "balanced", grid: int = 40,
             weights: Sequence[float] | None = None) -> OOSRule:
    """The bars from labelled requests (``None``: out of scope) for the best ``objective``.

    ``top`` is the head's best label for each request. Two families are searched:
    both separate bars (a grid of each one's quantiles, and "no bar"), and the
    combined score for each weight in :data:`SIMILARITY_WEIGHTS` with one bar (its
    quantiles). Ties go to the separate bars, then to lower bars. ``weights``
    (one per request, default 1) weigh the requests in the objective.
    """
    import numpy as np

    if not (len(confidence) == len(similarity) == len(top) == len(gold)) or not gold:
        raise ConfigError("thresholds", "give a confidence, similarity, best label and gold label per request")
    if objective not in ("accuracy", "balanced"):
        raise ConfigError("thresholds.objective", "use 'accuracy' or 'balanced'")
    conf = np.asarray(confidence, dtype=np.float64)
    sim = np.asarray(similarity, dtype=np.float64)
    top_a = np.asarray(list(top), dtype=object)
    gold_a = np.asarray(["" if g is None else g for g in gold], dtype=object)
    w = np.ones(len(gold_a)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(w) != len(gold_a) or (w < 0).any():
        raise ConfigError("thresholds.weights", "give one non-negative weight per request")
    qs = np.linspace(0.0, 1.0, grid + 1)
    conf_bars = np.unique(np.concatenate([[0.0], np.quantile(conf, qs)]))
    sim_bars = np.unique(np.concatenate([[-1.0], np.quantile(sim, qs)]))
    best = (-1.0, 0.0, 0.0, -1.0)
    for cb in conf_bars:
        keep_c = conf >= cb
        for sb in sim_bars:
            value = _score(keep_c & (sim >= sb), top_a, gold_a, objective, w)
            if value > best[0] + 1e-12:
                best = (value, -float(cb), float(cb), float(sb))
    best_score = (best[0], 0.0, float("-inf"))
    for weight in SIMILARITY_WEIGHTS:
        score = combined(conf, sim, weight)
        for bar in np.unique(np.quantile(score, np.linspace(0.0, 1.0, 4 * grid + 1))):
            value = _score(score >= bar, top_a, gold_a, objective, w)
            if value > best_score[0] + 1e-12:
                best_score = (value, weight, float(bar))
    if best_score[0] > best[0] + 1e-12:
        return OOSRule(0.0, -1.0, "validation", best_score[1], best_score[2])
    return OOSRule(best[2], best[3], "validation")


def loo_rule(oof_confidence: Any, loo_similarity: Any, quantile: float = 0.05) -> OOSRule:
    """Both bars at ``quantile`` of the bank's held-out scores (NaN entries ignored)."""
    import numpy as np

    if not 0.0 <= quantile < 1.0:
        raise ConfigError("thresholds.quantile", "must be in [0, 1)")
    conf = np.asarray(oof_confidence, dtype=np.float64)
    sim = np.asarray(loo_similarity, dtype=np.float64)
    conf, sim = conf[~np.isnan(conf)], sim[~np.isnan(sim)]
    cb = float(np.quantile(conf, quantile)) if len(conf) else 0.0
    sb = float(np.quantile(sim, quantile)) if len(sim) else -1.0
    return OOSRule(cb, sb, "leave-one-out")
