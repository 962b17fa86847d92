"""The runs store of a graph without a SQLite file: the same interface, in dicts."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ._runs import FINISHED, HOST, RunRecord, RunStatus, RunStore, run_of

__all__ = ["MemoryRunStore"]

_PID = os.getpid()  # an in-memory store never outlives (or crosses) its process


class MemoryRunStore(RunStore):
    """The same tables as plain dicts, for a graph without a SQLite file: runs are
    tracked and threads serialised within this process, but nothing survives it.
    Nothing here awaits, so each method is atomic on the event loop."""

    def __init__(self) -> None:
        super().__init__()
        self._runs: dict[str, RunRecord] = {}
        self._threads: dict[str, list[str]] = {}  # run ids by thread, oldest first
        self._keys: dict[str, str] = {}  # idempotency key -> run id
        self._leases: dict[str, str] = {}
        self._effects: dict[tuple[str, str, str], Any] = {}

    #: Finished runs kept for inspection; older ones are forgotten (nothing can
    #: resume them without a file anyway), so a long-lived process stays bounded.
    keep_finished = 1000

    def _accept(self, run_id: str, thread_id: str, request: str, key: str | None) -> None:
        now = time.time()
        self._runs[run_id] = RunRecord(run_id, thread_id, request, "accepted", None, _PID, HOST, now, now, key)
        self._threads.setdefault(thread_id, []).append(run_id)
        if key is not None:
            self._keys[key] = run_id
        if len(self._runs) > 2 * self.keep_finished:
            self._forget_finished()

    def _forget_finished(self) -> None:
        finished = [r for r in self._runs.values() if r.status in FINISHED]
        for run in finished[: len(finished) - self.keep_finished]:
            del self._runs[run.run_id]
            if run.idempotency_key is not None:
                self._keys.pop(run.idempotency_key, None)
            ids = self._threads[run.thread_id]
            ids.remove(run.run_id)
            if not ids:
                del self._threads[run.thread_id]

    def _set(self, run_id: str, status: RunStatus, error: str | None, result: str | None = None) -> None:
        if (run := self._runs.get(run_id)) is not None:
            # The constructor, not dataclasses.replace: this is on every run's path.
            self._runs[run_id] = RunRecord(
                run.run_id, run.thread_id, run.request, status, error, run.pid, run.host, run.created, time.time(),
                run.idempotency_key, result if result is not None else run.result,
            )

    def _take(self, thread_id: str, holder: str, *, start: bool, new: bool) -> str | None:
        current = self._leases.setdefault(thread_id, holder)
        if current != holder:
            return current
        run_id = run_of(holder)
        if new:
            self._supersede(thread_id, run_id)
        run = self._runs.get(run_id)
        if start and run is not None and run.status in ("accepted", "running", "failed"):
            self._set(run_id, "running", None)
        return None

    def _supersede(self, thread_id: str, run_id: str) -> int:
        stale = [self._runs[r] for r in self._threads.get(thread_id, ()) if r != run_id]
        stale = [r for r in stale if r.status == "failed"]  # unfinished ones have a live owner: this process
        for run in stale:
            self._set(run.run_id, "superseded", f"a later run ({run_id}) started on the thread")
        return len(stale)

    # -- the interface ------------------------------------------------------

    async def begin(self, run_id: str, thread_id: str, request: str, ttl_s: float, holder: str = "") -> str | None:
        self._accept(run_id, thread_id, request, None)
        return self._take(thread_id, holder or run_id, start=True, new=True)

    async def accept(self, run_id: str, thread_id: str, request: str, *, idempotency_key: str | None = None) -> RunRecord | None:
        if idempotency_key is not None and (known := self._keys.get(idempotency_key)) in self._runs:
            return self._runs[known]
        self._accept(run_id, thread_id, request, idempotency_key)
        return None

    async def finish(
        self, run_id: str, thread_id: str, status: RunStatus, error: str | None = None, holder: str = "",
        *, result: str | None = None,
    ) -> None:
        self._set(run_id, status, error, result)
        if self._leases.get(thread_id) == (holder or run_id):
            del self._leases[thread_id]

    async def set_status(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        self._set(run_id, status, error)

    async def get(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    async def runs(self, thread_id: str | None = None) -> list[RunRecord]:
        if thread_id is None:
            return list(self._runs.values())
        return [self._runs[r] for r in self._threads.get(thread_id, ())]

    async def orphaned(self, *, include_failed: bool = False) -> list[RunRecord]:
        return [r for r in self._runs.values() if include_failed and r.status == "failed"]  # owners all live here

    async def by_idempotency_key(self, key: str) -> RunRecord | None:
        return self._runs.get(self._keys.get(key, ""))

    async def owner_alive(self, run: RunRecord) -> bool:
        return True

    async def supersede(self, thread_id: str, run_id: str) -> int:
        return self._supersede(thread_id, run_id)

    async def acquire(self, thread_id: str, holder: str, ttl_s: float, *, start: bool = False, new: bool = False) -> str | None:
        return self._take(thread_id, holder, start=start, new=new)

    async def renew(self, thread_id: str, holder: str, ttl_s: float) -> bool:
        return self._leases.get(thread_id) == holder

    async def release(self, thread_id: str, holder: str) -> None:
        if self._leases.get(thread_id) == holder:
            del self._leases[thread_id]

    async def effect(self, thread_id: str, run_id: str, key: str) -> tuple[bool, Any]:
        k = (thread_id, run_id, key)
        return (True, json.loads(self._effects[k])) if k in self._effects else (False, None)

    async def record_effect(self, thread_id: str, run_id: str, key: str, result_json: str) -> None:
        self._effects[(thread_id, run_id, key)] = result_json
