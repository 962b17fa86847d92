"""An event-loop watchdog: a task that measures how late the loop wakes it.

A coroutine that blocks the loop (a synchronous SQLite call waiting on a lock, a
CPU-bound parse) delays every other task; the watchdog sees that as the gap
between when it asked to wake and when it ran. Use it in tests (``async with
LoopWatchdog() as dog: ...; dog.longest_stall_s``) and in servers (a gauge).

On a busy machine a stall can also be the process waiting for a CPU. On Linux
the watchdog reads the loop thread's run-queue wait (``/proc/thread-self/
schedstat``) and subtracts it: ``longest_own_stall_s`` is the part of a stall
the process itself caused (running, or blocked on I/O or a lock, on the loop).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
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
        self.longest_own_stall_s = 0.0
        self._recent: deque[tuple[float, float, float]] = deque()  # (when, stall, own stall) of notable stalls
        self._task: asyncio.Task[None] | None = None

    @property
    def mean_stall_s(self) -> float:
        return self._total / self.samples if self.samples else 0.0

    def recent_stall_s(self, window_s: float = 10.0, *, own: bool = False) -> float:
        """The longest stall of the last ``window_s`` seconds (of those longer than
        ``interval_s``), so a server's gauge shows the present, not its start-up;
        with ``own``, less the time spent waiting for a CPU."""
        horizon = time.perf_counter() - window_s
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()
        return max((entry[2 if own else 1] for entry in self._recent), default=0.0)

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
        self.longest_stall_s, self.longest_own_stall_s, self.samples, self._total = 0.0, 0.0, 0, 0.0
        self._recent.clear()

    async def _watch(self) -> None:
        queued = _RunQueueWait()
        try:
            while True:
                asked, waited = time.perf_counter(), queued.seconds()
                await asyncio.sleep(self.interval_s)
                now = time.perf_counter()
                late = max(0.0, now - asked - self.interval_s)
                own = max(0.0, late - (queued.seconds() - waited))
                if late > self.interval_s:
                    self._recent.append((now, late, own))
                    if len(self._recent) > 10_000:
                        self._recent.popleft()
                self.samples += 1
                self._total += late
                self.longest_stall_s = max(self.longest_stall_s, late)
                self.longest_own_stall_s = max(self.longest_own_stall_s, own)
        finally:
            queued.close()

    async def __aenter__(self) -> LoopWatchdog:
        self.start()
        await asyncio.sleep(0)  # let it take its first reading
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.stop()


class _RunQueueWait:
    """Seconds the calling thread has waited for a CPU (Linux schedstat; 0 elsewhere)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def seconds(self) -> float:
        if self._fd is None:
            return 0.0
        try:  # a procfs read: no disk, microseconds
            return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
