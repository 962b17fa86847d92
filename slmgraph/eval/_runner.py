"""Running a graph over a dataset: concurrent, with a progress bar, resumable.

Each finished row is appended to a JSON-lines results file as one line, keyed by
the row's id. On a restart the rows already in the file are skipped, so an
interrupted run (Ctrl-C, a crash, SIGKILL) loses at most the rows that were in
flight, and none is counted twice. A line cut off mid-write by a kill is dropped.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._errors import SlmGraphError
from ._data import EvalRow
from ._large import OfflineLargeModel, current_row
from ._scoring import Scorer, predictions

if TYPE_CHECKING:
    from ..graphs._graph import SLMGraph

__all__ = ["ResultsFile", "Progress", "run_eval", "FORCED_REASONS", "source_of"]

#: Escalations that leave no usable small-model answer: no confidence threshold
#: would have kept them on the small model.
FORCED_REASONS = frozenset({"none_fits", "invalid_output", "failed_check", "bad_input", "low_route_confidence", "error"})

_SOURCES = {
    "none_fits": "none fits",
    "low_route_confidence": "low confidence",
    "low_confidence": "low confidence",
    "invalid_output": "failed check",
    "failed_check": "failed check",
    "bad_input": "failed check",
    "error": "error",
}


def source_of(reason: str | None) -> str | None:
    """The report's escalation source (none fits, low confidence, failed check, error)."""
    return _SOURCES.get(reason, reason) if reason else None


class ResultsFile:
    """The append-only JSON-lines file of finished rows, keyed by their ``key`` field.

    With ``sync=False`` a line is flushed but not fsynced (for callers whose runs are
    durable elsewhere and can rewrite a lost line).
    """

    def __init__(self, path: str | Path, *, key: str = "id", sync: bool = True) -> None:
        self.path = Path(path)
        self.key = key
        self.sync = sync

    def load(self) -> dict[str, dict[str, Any]]:
        """Finished rows by id. A partial last line (the process died mid-write) is cut
        off the file, so the next append starts on a clean line."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with self.path.open("r+b") as f:
                f.truncate(len(data))
        done: dict[str, dict[str, Any]] = {}
        for line in data.decode("utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and self.key in record:
                done.setdefault(str(record[self.key]), record)
        return done

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            if self.sync:
                os.fsync(f.fileno())


class Progress:
    """A plain-text progress bar on stderr (one line per 10% when not a terminal)."""

    def __init__(self, total: int, done: int = 0, *, stream: TextIO | None = None, enabled: bool = True, label: str = "eval") -> None:
        self.total, self.done, self.errors = total, done, 0
        self.start_done = done
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.started = time.perf_counter()
        self._last_decile = -1
        self.draw()

    def advance(self, error: bool = False) -> None:
        self.done += 1
        self.errors += error
        self.draw()

    def draw(self) -> None:
        if not self.enabled:
            return
        frac = self.done / self.total
        decile = math.floor(frac * 10)
        if not self.tty and decile == self._last_decile:
            return
        self._last_decile = decile
        rate = (self.done - self.start_done) / max(time.perf_counter() - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        bar = "#" * round(frac * 30)
        line = (
            f"{self.label} [{bar:<30}] {self.done}/{self.total} {frac:4.0%} "
            f"{rate:.2f} rows/s eta {'?' if eta != eta else f'{eta:.0f}s'}{f' errors {self.errors}' if self.errors else ''}"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _record(row: EvalRow, state: dict[str, Any], seconds: float, scorer: Scorer, large: OfflineLargeModel | None) -> dict[str, Any]:
    ledger = state.get("ledger") or []
    reason = state.get("escalation_reason")
    final, small = predictions(state, scorer.label_field)
    if state.get("status") != "answered" and state.get("output") is None and reason in FORCED_REASONS:
        small = None  # nothing the small model would have answered with
    large_answer = large.answer_for(row, row.input) if large is not None else None
    if large_answer is not None:
        large_score: float | None = scorer(row.expected, large_answer)
    elif state.get("status") == "escalated":
        large_score = scorer(row.expected, final)
    else:
        large_score = None
    route_conf, conf = state.get("route_confidence"), state.get("confidence")
    forced = reason in FORCED_REASONS
    score = None if forced else min(1.0 if route_conf is None else route_conf, 1.0 if conf is None else conf)
    return {
        "id": row.id,
        "input": row.input,
        "expected": row.expected,
        "expected_skill": row.skill,
        "status": state.get("status", "error"),
        "route": state.get("route"),
        "route_confidence": route_conf,
        "confidence": conf,
        "escalation_reason": reason,
        "source": source_of(reason) if state.get("status") != "answered" else None,
        "forced": forced,
        "router_score": score,
        "prediction": final,
        "small_prediction": small,
        "score": scorer(row.expected, final),
        "small_score": scorer(row.expected, small),
        "large_score": large_score,
        "latency_s": seconds,
        "cost_usd": sum(e.get("cost_usd", 0.0) for e in ledger),
        "small_cost_usd": sum(e.get("cost_usd", 0.0) for e in ledger if e.get("tier") != "large"),
        "large_cost_usd": sum(e.get("cost_usd", 0.0) for e in ledger if e.get("tier") == "large"),
        "small_calls": sum(1 for e in ledger if e.get("tier") != "large"),
        "large_calls": sum(1 for e in ledger if e.get("tier") == "large"),
        "error": state.get("error"),
    }


async def _one(graph: SLMGraph, row: EvalRow, scorer: Scorer, large: OfflineLargeModel | None) -> dict[str, Any]:
    token = current_row().set(row)
    started = time.perf_counter()
    try:
        result = await graph.ainvoke(row.input, thread_id=f"eval-{row.id}")
        state = result.model_dump(mode="json")
        state["output"] = state.pop("output_json")  # the JSON view, as the graph state holds it
    except SlmGraphError as exc:
        state = {
            "status": "error",
            "escalation_reason": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "ledger": list(getattr(exc, "ledger", []) or []),
        }
    finally:
        current_row().reset(token)
    return _record(row, state, time.perf_counter() - started, scorer, large)


async def run_eval(
    graph: SLMGraph,
    rows: Sequence[EvalRow],
    results: str | Path,
    *,
    scorer: Scorer,
    large: OfflineLargeModel | None = None,
    concurrency: int = 4,
    progress: bool = True,
    stream: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Run ``graph`` on every row not yet in ``results``; return all rows' records in
    dataset order.

    Args:
        graph: the graph under test (build it with ``checkpoint=None`` for speed).
        rows: the dataset.
        results: the JSON-lines results file; rows already in it are skipped.
        scorer: compares each answer with the expected output.
        large: the offline large model, if one is bound (gives every row's large score).
        concurrency: rows in flight at once.
        progress: draw a progress bar on ``stream`` (stderr by default).
    """
    store = ResultsFile(results)
    done = store.load()
    wanted = {r.id for r in rows}
    todo = [r for r in rows if r.id not in done]
    bar = Progress(len(rows), len(wanted & set(done)), stream=stream, enabled=progress)
    sem = asyncio.Semaphore(max(1, concurrency))

    async def worker(row: EvalRow) -> None:
        async with sem:
            record = await _one(graph, row, scorer, large)
        store.append(record)  # one whole line, written before the row counts as done
        done[row.id] = record
        bar.advance(error=record["status"] == "error")

    try:
        await asyncio.gather(*(worker(r) for r in todo))
    finally:
        bar.close()
    return [done[r.id] for r in rows]
