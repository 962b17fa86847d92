"""Server metrics in the Prometheus text exposition format (version 0.0.4).

Kept in-process and dependency-free: a few labelled counters, one histogram and
gauges read at scrape time.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable

from ..graphs._state import RunResult

__all__ = ["Metrics", "LATENCY_BUCKETS", "CONTENT_TYPE"]

#: Upper bounds (seconds) of the request latency histogram.
LATENCY_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels) + "}" if labels else ""


def _num(v: float) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else repr(f)


class Metrics:
    """Counters for requests, runs, escalations, tokens and cost, plus a latency histogram.

    ``gauges`` maps a metric name to ``(help, read)``; ``read()`` is called at
    scrape time (used for in-flight and queued requests).
    """

    def __init__(self) -> None:
        self.requests: dict[Labels, float] = defaultdict(float)
        self.runs: dict[Labels, float] = defaultdict(float)
        self.escalations: dict[Labels, float] = defaultdict(float)
        self.tokens: dict[Labels, float] = defaultdict(float)
        self.model_calls: dict[Labels, float] = defaultdict(float)
        self.cost: dict[Labels, float] = defaultdict(float)
        self.disconnects: dict[Labels, float] = defaultdict(float)
        self._hist: dict[Labels, list[float]] = {}
        self._hist_sum: dict[Labels, float] = defaultdict(float)
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def observe_request(self, protocol: str, model: str, code: int, seconds: float) -> None:
        """Count one HTTP request on a chat or model route and time it."""
        self.requests[(("protocol", protocol), ("model", model), ("code", str(code)))] += 1
        key = (("protocol", protocol), ("model", model))
        counts = self._hist.setdefault(key, [0.0] * (len(LATENCY_BUCKETS) + 1))
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._hist_sum[key] += seconds

    def observe_run(self, graph: str, result: RunResult) -> None:
        """Count a finished run: its status, escalation, and per-model tokens and cost."""
        self.runs[(("model", graph), ("status", result.status))] += 1
        if result.escalation_reason:
            self.escalations[(("model", graph), ("reason", result.escalation_reason))] += 1
        for e in result.ledger:
            base = (("model", graph), ("backend_model", e.model), ("tier", e.tier))
            self.tokens[(*base, ("kind", "prompt"))] += e.prompt_tokens
            self.tokens[(*base, ("kind", "completion"))] += e.completion_tokens
            self.model_calls[base] += 1
        self.cost[(("model", graph),)] += result.totals.cost_usd

    def observe_disconnect(self, protocol: str, model: str) -> None:
        """Count a client that went away before its run finished (the run was cancelled)."""
        self.disconnects[(("protocol", protocol), ("model", model))] += 1

    def render(self) -> str:
        """The exposition text."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: Iterable[tuple[str, Labels, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{n}{_fmt(lb)} {_num(v)}" for n, lb, v in samples)

        def plain(name: str, table: dict[Labels, float]) -> list[tuple[str, Labels, float]]:
            return [(name, lb, v) for lb, v in sorted(table.items())]

        family("slmgraph_requests_total", "counter", "Chat requests by protocol, served model and HTTP status (499: the client left).",
               plain("slmgraph_requests_total", self.requests))
        hist: list[tuple[str, Labels, float]] = []
        for key, counts in sorted(self._hist.items()):
            running = 0.0
            for bound, c in zip((*LATENCY_BUCKETS, float("inf")), counts):
                running += c
                le = "+Inf" if bound == float("inf") else _num(bound)
                hist.append(("slmgraph_request_duration_seconds_bucket", (*key, ("le", le)), running))
            hist.append(("slmgraph_request_duration_seconds_sum", key, self._hist_sum[key]))
            hist.append(("slmgraph_request_duration_seconds_count", key, running))
        family("slmgraph_request_duration_seconds", "histogram", "Request latency, to the last byte of the response.", hist)
        family("slmgraph_runs_total", "counter", "Finished graph runs by status.", plain("slmgraph_runs_total", self.runs))
        family("slmgraph_escalations_total", "counter", "Runs that escalated, by reason.",
               plain("slmgraph_escalations_total", self.escalations))
        rate = []
        for graph in sorted({dict(lb)["model"] for lb in self.runs}):
            runs = sum(v for lb, v in self.runs.items() if dict(lb)["model"] == graph)
            esc = sum(v for lb, v in self.escalations.items() if dict(lb)["model"] == graph)
            rate.append(("slmgraph_escalation_rate", (("model", graph),), esc / runs if runs else 0.0))
        family("slmgraph_escalation_rate", "gauge", "Share of finished runs that escalated (any reason).", rate)
        family("slmgraph_model_tokens_total", "counter", "Tokens by served model, backend model, tier and kind.",
               plain("slmgraph_model_tokens_total", self.tokens))
        family("slmgraph_model_calls_total", "counter", "Model calls by served model, backend model and tier.",
               plain("slmgraph_model_calls_total", self.model_calls))
        family("slmgraph_cost_usd_total", "counter", "Model cost in USD by served model.",
               plain("slmgraph_cost_usd_total", self.cost))
        family("slmgraph_client_disconnects_total", "counter", "Clients that left mid-run; their runs were cancelled.",
               plain("slmgraph_client_disconnects_total", self.disconnects))
        for name, (help_, read) in sorted(self.gauges.items()):
            family(name, "gauge", help_, [(name, (), read())])
        return "\n".join(out) + "\n"
