"""Routing metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from slmgraph.eval import (
    FORCED,
    CurvePoint,
    apgr,
    cpt,
    percentile,
    pgr,
    random_router_curve,
    threshold_curve,
    zero_router_curve,
)

# 4 requests. Scores: 0.1, 0.4, 0.4, 0.9; the small model is right on rows 1 and 3,
# the large model on all. Small alone: 0.5. Escalating below each threshold:
#   share 0    -> 0.5   (PGR 0)
#   share 0.25 -> 0.75  (row 0 fixed; PGR 0.5)
#   share 0.75 -> 1.0   (rows 1, 2: row 2 fixed; PGR 1)
#   share 1    -> 1.0
SCORES = [0.1, 0.4, 0.4, 0.9]
SMALL = [0.0, 1.0, 0.0, 1.0]
LARGE = [1.0, 1.0, 1.0, 1.0]


def test_pgr():
    assert pgr(0.75, 0.5, 1.0) == 0.5
    assert pgr(0.5, 0.5, 1.0) == 0.0
    assert pgr(1.0, 0.5, 1.0) == 1.0
    assert pgr(0.3, 0.2, 0.6) == pytest.approx(0.25)
    assert pgr(0.7, 0.7, 0.7) is None  # no gap to recover


def test_threshold_curve_by_hand():
    curve = threshold_curve(SCORES, SMALL, LARGE)
    assert [(p.share, p.quality) for p in curve] == [(0.0, 0.5), (0.25, 0.75), (0.75, 1.0), (1.0, 1.0)]
    # a point's threshold escalates exactly the rows scoring below it
    assert [p.threshold for p in curve] == [0.1, 0.4, 0.9, math.inf]


def test_apgr_and_cpt_by_hand():
    curve = threshold_curve(SCORES, SMALL, LARGE)
    # trapezoids of PGR: 0.25*(0+0.5)/2 + 0.5*(0.5+1)/2 + 0.25*(1+1)/2 = 0.0625 + 0.375 + 0.25
    assert apgr(curve, 0.5, 1.0) == pytest.approx(0.6875)
    assert cpt(curve, 0.5, 1.0, 0.5) == pytest.approx(0.25)
    # PGR 0.8 lies on the segment (0.25, 0.5) -> (0.75, 1.0): 0.25 + 0.5 * 0.3 / 0.5
    assert cpt(curve, 0.5, 1.0, 0.8) == pytest.approx(0.55)
    assert cpt(curve, 0.5, 1.0, 1.0) == pytest.approx(0.75)
    assert cpt(curve, 0.5, 1.0, 1.01) is None


def test_forced_rows_escalate_first():
    # row 0 cannot be answered by the small model (none fits): it leads the curve
    curve = threshold_curve([FORCED, 0.2, 0.8], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0])
    assert [(p.share, round(p.quality, 6)) for p in curve] == [(0.0, 0.333333), (1 / 3, 0.666667), (2 / 3, 1.0), (1.0, 1.0)]
    # PGR: 0 -> 0.5 -> 1 -> 1 at shares 0, 1/3, 2/3, 1
    assert apgr(curve, 1 / 3, 1.0) == pytest.approx((1 / 3) * 0.25 + (1 / 3) * 0.75 + (1 / 3) * 1.0)


def test_zero_router_is_the_diagonal():
    zero = zero_router_curve(0.4, 0.9)
    assert apgr(zero, 0.4, 0.9) == pytest.approx(0.5)
    assert cpt(zero, 0.4, 0.9, 0.5) == pytest.approx(0.5)
    assert cpt(zero, 0.4, 0.9, 0.8) == pytest.approx(0.8)


def test_a_worse_than_random_router_scores_below_half():
    # confidence is inverted: the rows the small model gets right score lowest
    curve = threshold_curve([0.1, 0.2, 0.8, 0.9], [1.0, 1.0, 0.0, 0.0], [1.0] * 4)
    assert apgr(curve, 0.5, 1.0) == pytest.approx(0.25)
    assert cpt(curve, 0.5, 1.0, 0.5) == pytest.approx(0.75)


def test_random_router_follows_the_diagonal():
    n = 400
    small = [float(i % 2) for i in range(n)]
    large = [1.0] * n
    curve = random_router_curve(small, large, steps=10, trials=20, seed=3)
    assert curve[0] == CurvePoint(0.0, 0.5) and curve[-1] == CurvePoint(1.0, 1.0)
    assert apgr(curve, 0.5, 1.0) == pytest.approx(0.5, abs=0.02)
    # the same seed gives the same curve
    assert random_router_curve(small, large, steps=10, trials=20, seed=3) == curve


def test_apgr_needs_the_whole_range():
    with pytest.raises(ValueError):
        apgr([CurvePoint(0.0, 0.5), CurvePoint(0.5, 0.8)], 0.5, 1.0)
    assert apgr(zero_router_curve(0.5, 0.5), 0.5, 0.5) is None


def test_percentile():
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile(list(range(1, 21)), 0.95) == pytest.approx(19.05)
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_eval_exports_resolve():
    import slmgraph.eval
    import slmgraph.graphs

    for name in slmgraph.eval.__all__:
        assert hasattr(slmgraph.eval, name), name
    assert {"run_eval", "OracleModel", "RecordedModel", "apgr", "cpt", "sweep_thresholds"} <= set(slmgraph.eval.__all__)
    assert callable(slmgraph.graphs.with_thresholds)
