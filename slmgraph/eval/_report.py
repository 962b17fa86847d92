"""Turning per-row records into the eval report: a JSON-able dict and Markdown."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from ._metrics import FORCED, CurvePoint, apgr, cpt, percentile, pgr, random_router_curve, threshold_curve, zero_router_curve

__all__ = ["summarize", "routing_summary", "to_markdown"]


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _pts(curve: Sequence[CurvePoint]) -> list[dict[str, float | None]]:
    return [{"share": p.share, "quality": p.quality, "threshold": p.threshold if p.threshold not in (FORCED, float("inf")) else None} for p in curve]


def _metrics(curve: Sequence[CurvePoint], small: float, large: float) -> dict[str, float | None]:
    return {"apgr": apgr(curve, small, large), "cpt50": cpt(curve, small, large, 0.5), "cpt80": cpt(curve, small, large, 0.8)}


def routing_summary(
    records: Sequence[dict[str, Any]], *, large_call_cost: float, seed: int = 0
) -> dict[str, Any]:
    """Quality versus share of large-model calls for the graph's confidence scores,
    a random router and the zero-router, with APGR and CPT(50%)/CPT(80%)."""
    if any(r.get("large_score") is None for r in records):
        return {"available": False, "why": "the large model's answer is not known for every row; use the oracle or recorded answers"}
    scores = [FORCED if r["forced"] else r["router_score"] for r in records]
    small_s = [r["small_score"] for r in records]
    large_s = [r["large_score"] for r in records]
    small, large = _mean(small_s) or 0.0, _mean(large_s) or 0.0
    router = threshold_curve(scores, small_s, large_s)
    rand = random_router_curve(small_s, large_s, seed=seed)
    zero = zero_router_curve(small, large)
    small_cost = _mean([r["small_cost_usd"] for r in records]) or 0.0
    return {
        "available": True,
        "small_only_quality": small,
        "large_only_quality": large,
        "cost_per_1000": {"small_only": 1000 * small_cost, "per_large_call": large_call_cost},
        "router": {**_metrics(router, small, large), "curve": _pts(router)},
        "random": {**_metrics(rand, small, large), "curve": _pts(rand)},
        "zero": {**_metrics(zero, small, large), "curve": _pts(zero)},
    }


def summarize(records: Sequence[dict[str, Any]], meta: dict[str, Any], *, large_call_cost: float, seed: int = 0) -> dict[str, Any]:
    """The whole report for one eval run."""
    n = len(records)
    escalated = [r for r in records if r["status"] != "answered"]
    quality = _mean([r["score"] for r in records]) or 0.0
    share = len(escalated) / n if n else 0.0
    total_cost = sum(r["cost_usd"] for r in records)
    latencies = [r["latency_s"] for r in records]
    per_skill: dict[str, dict[str, Any]] = {}
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_route[r["route"] or "none"].append(r)
    for route, rs in sorted(by_route.items()):
        wrong = Counter((r["expected"], r["prediction"]) for r in rs if r["score"] < 1.0)
        confusion: dict[str, dict[str, int]] = {}
        for r in rs:
            cell = confusion.setdefault(r["expected"], {})
            key = r["prediction"] if r["prediction"] is not None else "(no answer)"
            cell[key] = cell.get(key, 0) + 1
        per_skill[route] = {
            "rows": len(rs),
            "confusion": confusion,
            "quality": _mean([r["score"] for r in rs]),
            "escalated": sum(r["status"] != "answered" for r in rs),
            "top_confusions": [[e, p, c] for (e, p), c in wrong.most_common(10)],
        }
    routing_confusion: dict[str, dict[str, int]] = {}
    if any(r.get("expected_skill") for r in records):
        for r in records:
            cell = routing_confusion.setdefault(r.get("expected_skill") or "?", {})
            cell[r["route"] or "none"] = cell.get(r["route"] or "none", 0) + 1
    routing = routing_summary(records, large_call_cost=large_call_cost, seed=seed)
    if routing["available"]:
        routing["operating_point"] = {
            "share": share,
            "quality": quality,
            "pgr": pgr(quality, routing["small_only_quality"], routing["large_only_quality"]),
        }
    return {
        **meta,
        "rows": n,
        "quality": quality,
        "escalation_rate": share,
        "escalations": {
            "by_source": dict(Counter(r["source"] or "unknown" for r in escalated)),
            "by_reason": dict(Counter(r["escalation_reason"] or "unknown" for r in escalated)),
            "by_status": dict(Counter(r["status"] for r in records)),
        },
        "errors": sum(r["status"] == "error" for r in records),
        "cost": {
            "total_usd": total_cost,
            "per_1000_usd": 1000 * total_cost / n if n else 0.0,
            "small_usd": sum(r["small_cost_usd"] for r in records),
            "large_usd": sum(r["large_cost_usd"] for r in records),
            "all_large_usd": n * large_call_cost,
        },
        "calls": {"small": sum(r["small_calls"] for r in records), "large": sum(r["large_calls"] for r in records)},
        "latency": {"p50_s": percentile(latencies, 0.5), "p95_s": percentile(latencies, 0.95), "mean_s": _mean(latencies)},
        "per_skill": per_skill,
        "routing_confusion": routing_confusion,
        "routing": routing,
    }


def _f(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def to_markdown(report: dict[str, Any], *, figure: str | None = None) -> str:
    """The report as Markdown (``figure``: a PNG path to link)."""
    lm = report.get("large_model", {})
    lines = [
        f"# Evaluation: graph `{report.get('graph')}` on `{report.get('dataset')}`",
        "",
        f"- rows: {report['rows']} (errors: {report['errors']})",
        f"- large model: **{lm.get('kind')}** `{lm.get('name')}` at ${lm.get('cost_per_call', 0):.4f} per call"
        + (" (a perfect model answering with the gold label)" if lm.get("kind") == "oracle" else ""),
        f"- scorer: `{report.get('scorer')}`",
        f"- quality: **{_f(report['quality'])}**; escalation rate: **{_f(report['escalation_rate'])}**",
        f"- cost: ${report['cost']['total_usd']:.4f} total, ${report['cost']['per_1000_usd']:.4f} per 1,000 requests "
        f"(all on the large model: ${report['cost']['all_large_usd']:.4f})",
        f"- latency per request: p50 {_f(report['latency']['p50_s'])} s, p95 {_f(report['latency']['p95_s'])} s",
        f"- model calls: {report['calls']['small']} small, {report['calls']['large']} large",
        "",
        "## Where escalations came from",
        "",
        "| source | rows |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(report["escalations"]["by_source"].items())],
        "",
    ]
    rt = report["routing"]
    if rt.get("available"):
        op = rt.get("operating_point", {})
        lines += [
            "## Routing (RouteLLM metrics)",
            "",
            f"Small model alone: {_f(rt['small_only_quality'])}; large model alone: {_f(rt['large_only_quality'])}. "
            f"This run: PGR {_f(op.get('pgr'))} at {_f(op.get('share'))} of requests on the large model.",
            "",
            "| router | APGR | CPT(50%) | CPT(80%) |",
            "|---|---|---|---|",
            *[
                f"| {name} | {_f(rt[key]['apgr'])} | {_f(rt[key]['cpt50'])} | {_f(rt[key]['cpt80'])} |"
                for name, key in (("graph confidence", "router"), ("random", "random"), ("zero-router", "zero"))
            ],
            "",
        ]
    else:
        lines += ["## Routing", "", f"Not available: {rt.get('why')}.", ""]
    if figure:
        lines += [f"![cost-quality curve]({figure})", ""]
    lines += ["## Per skill", "", "| route | rows | quality | escalated | most frequent errors (expected -> predicted) |", "|---|---|---|---|---|"]
    for route, s in report["per_skill"].items():
        errs = "; ".join(f"{e} -> {p} ({c})" for e, p, c in s["top_confusions"][:3])
        lines.append(f"| {route} | {s['rows']} | {_f(s['quality'])} | {s['escalated']} | {errs} |")
    if report.get("routing_confusion"):
        routes = sorted({r for row in report["routing_confusion"].values() for r in row})
        lines += ["", "## Routing confusion (expected skill x route)", "", "| expected | " + " | ".join(routes) + " |",
                  "|---|" + "---|" * len(routes)]
        for exp, row in sorted(report["routing_confusion"].items()):
            lines.append(f"| {exp} | " + " | ".join(str(row.get(r, 0)) for r in routes) + " |")
    return "\n".join(lines) + "\n"
