"""The end-of-job summary: statuses, escalation rate, cost and savings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BatchSummary", "summarize", "ESCALATED"]

#: Statuses of runs the small models did not finish alone.
ESCALATED = frozenset({"escalated", "escalation_needed", "escalation_failed"})


@dataclass
class BatchSummary:
    """What a batch job did, over every row of the output (earlier runs included).

    Attributes:
        rows: rows in the output.
        ran: rows run (or finished from a checkpoint) by this invocation.
        skipped: rows already in the output when it started.
        statuses: rows by final status (``bad_input`` and ``error`` included).
        escalation_rate: escalated rows / rows that ran to a status.
        cost_usd / baseline_usd / saved_usd: from the rows' ledgers.
        bad_rows: ``"row N: why"`` for each bad or failed row.
        seconds: wall time of this invocation.
    """

    rows: int = 0
    ran: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    escalation_rate: float = 0.0
    cost_usd: float = 0.0
    baseline_usd: float = 0.0
    saved_usd: float = 0.0
    bad_rows: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        status = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        out = [
            f"rows:       {self.rows} ({self.ran} run now, {self.skipped} already done) in {self.seconds:.1f}s",
            f"statuses:   {status or '(none)'}",
            f"escalated:  {self.escalation_rate:.1%}",
            f"cost:       ${self.cost_usd:.6f} vs ${self.baseline_usd:.6f} direct to the large model "
            f"(saved ${self.saved_usd:.6f})",
        ]
        if self.bad_rows:
            out.append(f"bad rows:   {len(self.bad_rows)}")
            out += [f"  {b}" for b in self.bad_rows[:20]]
            if len(self.bad_rows) > 20:
                out.append(f"  ... and {len(self.bad_rows) - 20} more (status bad_input/error in the output)")
        return out


def summarize(records: Iterable[dict[str, Any]], *, ran: int = 0, skipped: int = 0, seconds: float = 0.0) -> BatchSummary:
    s = BatchSummary(ran=ran, skipped=skipped, seconds=seconds)
    statuses: Counter[str] = Counter()
    for r in records:
        s.rows += 1
        status = str(r.get("status"))
        statuses[status] += 1
        s.cost_usd += float(r.get("cost_usd") or 0.0)
        s.baseline_usd += float(r.get("baseline_usd") or 0.0)
        if status in ("bad_input", "error"):
            s.bad_rows.append(str(r.get("error")))
    s.statuses = dict(statuses)
    finished = s.rows - statuses["bad_input"] - statuses["error"]
    s.escalation_rate = sum(statuses[k] for k in ESCALATED) / finished if finished else 0.0
    s.saved_usd = s.baseline_usd - s.cost_usd
    return s
