"""An event-loop watchdog: a task that measures how late the loop wakes it.

A coroutine that blocks the loop (a synchronous SQLite call waiting on a lock, a
CPU-bound parse) delays every other task; the watchdog sees that as the gap
between when it asked to wake and when it ran. Use it in tests (``async with
LoopWatchdog() as dog: ...; dog.longest_stall_s``) and in servers (a gauge).
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

__all__ = ["LoopWatchdog"]


class LoopWatchdog:
    """Measures the event loop's scheduling delay while it runs.

    Args:
        interval_s: how often the watchdog asks to be woken; a stall shorter than
            this can go unseen, a longer one is measured to within it.

    Attributes:
        longest_stall_s: the largest delay seen (seconds the loop was late).
        samples: wake-ups measured.
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self.longest_stall_s = 0.0
        self.samples = 0
        self._total = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def mean_stall_s(self) -> float:
        return self._total / self.samples if self.samples else 0.0

    def stalls_over(self, threshold_s: float) -> bool:
        """Whether any stall reached ``threshold_s``."""
        return self.longest_stall_s >= threshold_s

    def start(self) -> LoopWatchdog:
        """Start measuring on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="slmgraph-loop-watchdog")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def reset(self) -> None:
        self.longest_stall_s, self.samples, self._total = 0.0, 0, 0.0

    async def _watch(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            late = max(0.0, time.perf_counter() - asked - self.interval_s)
            self.samples += 1
            self._total += late
            if late > self.longest_stall_s:
                self.longest_stall_s = late

    async def __aenter__(self) -> LoopWatchdog:
        self.start()
        await asyncio.sleep(0)  # let it take its first reading
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.stop()
