"""The batch progress bar (rich): rows done, rows/s, ETA and the cost so far."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from .._errors import MissingDependencyError

__all__ = ["BatchProgress"]


class BatchProgress:
    """A rich progress bar on ``stream`` (stderr); a no-op when disabled."""

    def __init__(self, total: int, done: int, cost: float, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.cost = cost
        self.errors = 0
        self._bar: Any = None
        if not enabled or total == 0:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            raise MissingDependencyError("the batch progress bar", "batch", "or pass --no-progress") from None
        self._bar = Progress(
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("cost ${task.fields[cost]:.6f}"),
            TextColumn("{task.fields[bad]}"),
            console=Console(file=stream or sys.stderr),
            refresh_per_second=4,
        )
        self._task = self._bar.add_task("batch", total=total, completed=done, cost=cost, rate="-", bad="")
        self._bar.start()

    def advance(self, record: dict[str, Any]) -> None:
        self.cost += float(record.get("cost_usd") or 0.0)
        self.errors += record.get("status") in ("bad_input", "error")
        if self._bar is None:
            return
        task = self._bar.tasks[0]
        speed = task.speed
        self._bar.update(
            self._task, advance=1, cost=self.cost, rate=f"{speed:.1f}" if speed else "-",
            bad=f"bad {self.errors}" if self.errors else "",
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
