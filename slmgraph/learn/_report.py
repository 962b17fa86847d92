"""The learning report: escalation rate and cost over the stream, around each promotion.

:func:`write_report` takes windows of the stream (each with its runs, escalations
and cost) and the promotions and rollbacks between them, and writes
``learning.md`` and ``learning.png``. :func:`windows_from_store` reads them from a
store's per-minute stream counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..eval._plot import _pyplot
from ._store import Event, LearningStore

__all__ = ["write_report", "windows_from_store"]


async def windows_from_store(store: LearningStore, target: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(windows, marks) from the store: one window a minute; a mark per promotion or rollback."""
    rows = await store.stream(target)
    by_minute: dict[int, dict[str, Any]] = {}
    for r in rows:
        w = by_minute.setdefault(r["minute"], {"label": r["minute"], "runs": 0, "escalations": 0, "cost_usd": 0.0})
        w["runs"] += r["runs"]
        w["escalations"] += r["escalations"]
        w["cost_usd"] += r["cost_usd"]
    windows = [by_minute[m] for m in sorted(by_minute)]
    marks = []
    for e in await store.events(target, limit=10_000):
        if e.kind in ("promote", "rollback"):
            at = int(e.at // 60)
            index = sum(1 for m in sorted(by_minute) if m < at)
            marks.append({"index": index, "kind": e.kind, "version": e.version, "reason": e.detail.get("reason", "")})
    return windows, marks


def write_report(
    out: str | Path,
    windows: Sequence[dict[str, Any]],
    marks: Sequence[dict[str, Any] | Event] = (),
    *,
    title: str = "learning loop",
    baseline: Sequence[dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """Write ``learning.md`` and ``learning.png`` into ``out``.

    Args:
        windows: ``{"label", "runs", "escalations", "cost_usd"}`` per window, in stream order.
        marks: ``{"index", "kind", "version", "reason"}``: a promotion or rollback
            before window ``index``.
        baseline: the same windows with learning off, drawn beside them.

    Raises:
        MissingDependencyError: matplotlib is missing (``pip install 'slmgraph[eval]'``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marks = [m.model_dump() if isinstance(m, Event) else dict(m) for m in marks]

    def rate(w: dict[str, Any]) -> float:
        return w["escalations"] / w["runs"] if w["runs"] else 0.0

    lines = [f"# {title}", "", "| window | runs | escalation rate | cost (USD) |" + (" rate, learning off | cost, learning off |" if baseline else ""),
             "|---|---|---|---|" + ("---|---|" if baseline else "")]
    for i, w in enumerate(windows):
        for m in marks:
            if m.get("index") == i:
                lines.append(f"| **{m['kind']}** {m.get('version') or '(as built)'} | | | |" + (" | |" if baseline else ""))
        row = f"| {w['label']} | {w['runs']} | {rate(w):.3f} | {w['cost_usd']:.4f} |"
        if baseline and i < len(baseline):
            row += f" {rate(baseline[i]):.3f} | {baseline[i]['cost_usd']:.4f} |"
        lines.append(row)
    reasons = [f"- {m['kind']} before window {m['index']}: {m.get('version') or '(as built)'}: {m.get('reason', '')}" for m in marks]
    if reasons:
        lines += ["", "## Promotions and rollbacks", "", *reasons]
    md = out / "learning.md"
    png = out / "learning.png"
    lines += ["", f"![escalation rate and cost]({png.name})", ""]
    md.write_text("\n".join(lines), encoding="utf-8")

    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    xs = list(range(len(windows)))
    ax1.plot(xs, [rate(w) for w in windows], marker="o", label="learning on")
    ax2.plot(xs, [w["cost_usd"] for w in windows], marker="o", label="learning on")
    if baseline:
        bx = list(range(len(baseline)))
        ax1.plot(bx, [rate(w) for w in baseline], linestyle="--", label="learning off")
        ax2.plot(bx, [w["cost_usd"] for w in baseline], linestyle="--", label="learning off")
    for m in marks:
        for ax in (ax1, ax2):
            ax.axvline(m["index"] - 0.5, color="green" if m["kind"] == "promote" else "red", alpha=0.4)
    ax1.set_ylabel("escalation rate")
    ax2.set_ylabel("cost per window (USD)")
    ax2.set_xlabel("window (green: promotion, red: rollback)")
    ax1.legend()
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return md, png
