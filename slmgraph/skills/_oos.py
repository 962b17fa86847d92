"""Out-of-scope rules: when a request fits none of the labels.

An :class:`OOSRule` keeps a request in scope when the head's calibrated confidence
in its best label reaches ``min_confidence`` *and* the request's similarity to
that label's nearest example reaches ``min_similarity``. The two bars are fitted

- on a validation split that holds out-of-scope examples (label ``None``), by a
  grid over both bars for the best objective (:func:`fit_rule`); or
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

__all__ = ["OOSRule", "fit_rule", "loo_rule", "Objective"]

#: ``"accuracy"``: right label or rightly none, over all requests. ``"balanced"``:
#: in-scope accuracy plus the F1 of the "none" answers.
Objective = Literal["accuracy", "balanced"]


@dataclass(frozen=True, slots=True)
class OOSRule:
    """Both bars, and how they were fitted (``"validation"`` or ``"leave-one-out"``)."""

    min_confidence: float = 0.0
    min_similarity: float = -1.0
    fitted_on: str = "none"

    def in_scope(self, confidence: float, similarity: float) -> bool:
        return confidence >= self.min_confidence and similarity >= self.min_similarity


def _score(keep: Any, top: Any, gold: Any, objective: str) -> float:
    is_oos = gold == ""
    right_kept = keep & (top == gold)
    right_none = ~keep & is_oos
    if objective == "accuracy":
        return float((right_kept | right_none).mean())
    n_in = int((~is_oos).sum())
    acc = float(right_kept[~is_oos].sum()) / n_in if n_in else 0.0
    said, tp, n_oos = int((~keep).sum()), int(right_none.sum()), int(is_oos.sum())
    prec = tp / said if said else 0.0
    rec = tp / n_oos if n_oos else 0.0
    return acc + (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def fit_rule(confidence: Sequence[float], similarity: Sequence[float], top: Sequence[str],
             gold: Sequence[str | None], *, objective: Objective = "balanced", grid: int = 40) -> OOSRule:
    """Both bars from labelled requests (``None``: out of scope) for the best ``objective``.

    ``top`` is the head's best label for each request. The candidates for each bar
    are quantiles of the observed values (and "no bar"); ties go to the lower bars.
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
    qs = np.linspace(0.0, 1.0, grid + 1)
    conf_bars = np.unique(np.concatenate([[0.0], np.quantile(conf, qs)]))
    sim_bars = np.unique(np.concatenate([[-1.0], np.quantile(sim, qs)]))
    best = (-1.0, 0.0, 0.0, -1.0)
    for cb in conf_bars:
        keep_c = conf >= cb
        for sb in sim_bars:
            value = _score(keep_c & (sim >= sb), top_a, gold_a, objective)
            if value > best[0] + 1e-12:
                best = (value, -float(cb), float(cb), float(sb))
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
