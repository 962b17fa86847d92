"""Routing metrics in the style of RouteLLM (Ong et al. 2024), as pure functions.

A router escalates a share ``c`` of requests to the large ("strong") model. With
``q_small`` the quality of the small model alone and ``q_large`` that of the large
model alone:

- **PGR** (performance gap recovered) of quality ``q``: ``(q - q_small) / (q_large - q_small)``.
- **APGR**: the area under PGR as a function of ``c`` over ``[0, 1]``, with the curve
  interpolated linearly between measured points (escalating part of a group of
  requests with equal scores, chosen at random, gives exactly that line).
- **CPT(x)** (call-performance threshold): the smallest ``c`` whose PGR reaches ``x``.

The zero-router mixes the two models at fixed odds, so its PGR is ``c``: APGR 0.5,
CPT(x) = x. A random router escalates a random share ``c``; its expected curve is
the same line, and a measured one scatters around it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CurvePoint",
    "pgr",
    "apgr",
    "cpt",
    "threshold_curve",
    "random_router_curve",
    "zero_router_curve",
    "percentile",
    "FORCED",
]

#: The score of a request the small models could not answer at all: escalated first.
FORCED = -math.inf


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """One operating point: share of requests sent to the large model, mean quality,
    and the score threshold that gives it (requests scoring below it escalate)."""

    share: float
    quality: float
    threshold: float | None = None


def pgr(quality: float, small: float, large: float) -> float | None:
    """Performance gap recovered; ``None`` when the two models are equally good."""
    gap = large - small
    if abs(gap) < 1e-12:
        return None
    return (quality - small) / gap


def _pgr_points(curve: Sequence[CurvePoint], small: float, large: float) -> list[tuple[float, float]]:
    pts = []
    for p in sorted(curve, key=lambda p: p.share):
        g = pgr(p.quality, small, large)
        if g is None:
            return []
        pts.append((p.share, g))
    return pts


def apgr(curve: Sequence[CurvePoint], small: float, large: float) -> float | None:
    """Area under PGR(share) over [0, 1], trapezoids between the curve's points.

    The curve must start at share 0 and end at share 1 (a router's threshold sweep
    does). ``None`` when the small and large models are equally good.
    """
    pts = _pgr_points(curve, small, large)
    if not pts:
        return None
    if pts[0][0] > 1e-12 or pts[-1][0] < 1 - 1e-12:
        raise ValueError("the curve must span shares 0 to 1")
    area = 0.0
    for (c0, g0), (c1, g1) in zip(pts, pts[1:]):
        area += (c1 - c0) * (g0 + g1) / 2
    return area


def cpt(curve: Sequence[CurvePoint], small: float, large: float, target: float) -> float | None:
    """The smallest share of large-model calls at which PGR reaches ``target``
    (interpolating linearly between points); ``None`` if it never does."""
    pts = _pgr_points(curve, small, large)
    if not pts:
        return None
    if pts[0][1] >= target:
        return pts[0][0]
    for (c0, g0), (c1, g1) in zip(pts, pts[1:]):
        if g1 >= target > g0:
            return c0 + (c1 - c0) * (target - g0) / (g1 - g0)
    return None


def threshold_curve(
    scores: Sequence[float], small_scores: Sequence[float], large_scores: Sequence[float]
) -> list[CurvePoint]:
    """The router's curve: for every threshold ``t`` among the scores, requests with
    score below ``t`` go to the large model (scored ``large_scores``), the rest keep the
    small model's answer (``small_scores``). Starts at share 0, ends at share 1."""
    n = len(scores)
    if not n or not (n == len(small_scores) == len(large_scores)):
        raise ValueError("scores, small_scores and large_scores must be non-empty and of equal length")
    order = sorted(range(n), key=lambda i: scores[i])
    quality = sum(small_scores) / n
    points = [CurvePoint(0.0, quality, scores[order[0]])]
    i = 0
    while i < n:
        j = i
        while j < n and scores[order[j]] == scores[order[i]]:
            quality += (large_scores[order[j]] - small_scores[order[j]]) / n
            j += 1
        nxt = scores[order[j]] if j < n else math.inf
        points.append(CurvePoint(j / n, quality, nxt))
        i = j
    return points


def random_router_curve(
    small_scores: Sequence[float], large_scores: Sequence[float], *, steps: int = 20, trials: int = 20, seed: int = 0
) -> list[CurvePoint]:
    """A measured random router: at each share ``k/steps``, escalate that many requests
    chosen at random, and average the quality over ``trials`` draws."""
    n = len(small_scores)
    rng = random.Random(seed)
    points = []
    for k in range(steps + 1):
        share = k / steps
        m = round(share * n)
        total = 0.0
        for _ in range(trials):
            chosen = set(rng.sample(range(n), m))
            total += sum(large_scores[i] if i in chosen else small_scores[i] for i in range(n)) / n
        points.append(CurvePoint(m / n, total / trials))
    return points


def zero_router_curve(small: float, large: float) -> list[CurvePoint]:
    """Fixed mixtures of small-only and large-only: a straight line."""
    return [CurvePoint(0.0, small), CurvePoint(1.0, large)]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) with linear interpolation; ``None`` for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
