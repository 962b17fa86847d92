"""The cost-quality curve as a PNG (matplotlib, from the ``eval`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import MissingDependencyError

__all__ = ["plot_cost_quality"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib (for the cost-quality figure)", "eval") from None
    return plt


def plot_cost_quality(
    routing: dict[str, Any],
    path: str | Path,
    *,
    title: str,
    points: Sequence[tuple[str, float, float]] = (),
) -> Path:
    """Draw quality against cost per 1,000 requests for the graph's confidence router,
    the random router and the zero-router; ``points`` marks operating points
    ``(label, share of large calls, quality)``.

    Raises:
        MissingDependencyError: matplotlib is not installed (``pip install 'slmgraph[eval]'``).
    """
    plt = _pyplot()
    base = routing["cost_per_1000"]["small_only"]
    per_call = routing["cost_per_1000"]["per_large_call"] * 1000

    def cost(share: float) -> float:
        return base + share * per_call

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    styles = (("router", "graph confidence", "-", "o"), ("random", "random router", ":", "x"), ("zero", "zero-router", "--", None))
    for key, label, ls, marker in styles:
        curve = routing[key]["curve"]
        apgr = routing[key]["apgr"]
        ax.plot(
            [cost(p["share"]) for p in curve], [p["quality"] for p in curve], linestyle=ls, marker=marker, markersize=3,
            label=f"{label} (APGR {apgr:.2f})" if apgr is not None else label,
        )
    for label, share, quality in points:
        ax.plot([cost(share)], [quality], marker="*", markersize=14, linestyle="none", label=f"{label}: {share:.0%} large, q={quality:.3f}")
    ax.set_xlabel("cost per 1,000 requests (USD)")
    ax.set_ylabel("quality")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
