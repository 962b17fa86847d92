"""A pool of servers (e.g. Ollama hosts) for one model: the first step past one machine.

Each call goes to the least-loaded healthy host. A host whose call fails with a
health fault (unreachable, timeout, 5xx, malformed body) counts a failure on its
breaker, and the call moves on to the next host at once; after ``failures`` in a row
the host is out of rotation. When its cooldown has passed, the next call probes it
with a cheap ``list_models()`` (``GET /api/tags``) before sending it real work, and a
host that answers is back in.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._errors import CircuitOpenError, UserError
from ._base import Model, ModelReply
from ._breaker import CircuitBreaker, ConcurrencyLimit, endpoint_of, is_health_failure
from ._wrapper import WrapperModel

__all__ = ["PooledModel"]


@dataclass(eq=False)
class _Host:
    model: Model
    breaker: CircuitBreaker
    limit: ConcurrencyLimit
    calls: int = 0

    @property
    def host(self) -> str:
        """Where this member's calls go (read by the privacy gate's locality check)."""
        return endpoint_of(self.model)


class PooledModel(WrapperModel):
    """One model served by several hosts.

    Args:
        members: one model per host, all serving the same model
            (``[OllamaModel("qwen2.5:0.5b", host=h) for h in hosts]``).
        max_parallel: calls in flight per host; more wait on our side.
        failures: consecutive health failures that take a host out.
        cooldown_s: how long a host stays out before it is probed.
        probe_timeout_s: how long a probe may take.
        clock: monotonic time source (tests pass a fake one).

    Raises:
        CircuitOpenError: (from a call) every host is out of rotation.
    """

    def __init__(
        self,
        members: Sequence[Model],
        *,
        max_parallel: int | None = None,
        failures: int = 3,
        cooldown_s: float = 10.0,
        probe_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not members:
            raise UserError("PooledModel needs at least one host")
        super().__init__(*members)
        self.hosts = [
            _Host(m, CircuitBreaker(failures, cooldown_s, name=endpoint_of(m), clock=clock), ConcurrencyLimit(max_parallel))
            for m in members
        ]
        self.probe_timeout_s = probe_timeout_s
        self._turn = itertools.count()

    def status(self) -> list[dict[str, object]]:
        """Per host: endpoint, breaker state, calls in flight, calls served."""
        return [
            {"host": h.breaker.name, "state": h.breaker.state, "in_flight": h.limit.in_flight, "calls": h.calls}
            for h in self.hosts
        ]

    async def _probe(self, host: _Host) -> bool:
        """Check a cooled-down host; the caller holds its half-open probe slot."""
        check = getattr(host.model, "list_models", None)
        if check is None:
            return True  # no cheap check: the real call is the probe
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                await check()
        except Exception:
            host.breaker.failure()
            return False
        except BaseException:
            host.breaker.release()
            raise
        host.breaker.success()
        return True

    async def _pick(self, tried: set[_Host]) -> _Host | None:
        turn = next(self._turn)
        order = sorted(
            (h for h in self.hosts if h not in tried),
            key=lambda h: (h.limit.load, (self.hosts.index(h) - turn) % len(self.hosts)),
        )
        for host in order:
            state = host.breaker.state
            if state == "closed":
                return host
            if state == "half_open" and host.breaker.allow():
                if await self._probe(host):
                    return host
                tried.add(host)
        return None

    def _unavailable(self) -> CircuitOpenError:
        wait = min(h.breaker.retry_in() for h in self.hosts)
        names = ", ".join(h.breaker.name for h in self.hosts)
        return CircuitOpenError(f"every host of the pool ({names})", wait, model=self.name, provider=self.provider)

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        tried: set[_Host] = set()
        last: BaseException | None = None
        while (host := await self._pick(tried)) is not None:
            tried.add(host)
            try:
                async with host.limit.slot():
                    reply = await host.model.complete(messages, schema=schema, settings=settings)
            except Exception as exc:
                if not is_health_failure(exc):
                    host.breaker.success()
                    raise
                host.breaker.failure()
                last = exc
                continue
            host.breaker.success()
            host.calls += 1
            return reply
        raise last if last is not None else self._unavailable()

    async def stream(self, messages, *, schema=None, settings=None):
        tried: set[_Host] = set()
        last: BaseException | None = None
        while (host := await self._pick(tried)) is not None:
            tried.add(host)
            async with host.limit.slot():
                chunks = aiter(host.model.stream(messages, schema=schema, settings=settings))
                try:
                    first = await anext(chunks)
                except Exception as exc:
                    if not is_health_failure(exc):
                        raise
                    host.breaker.failure()
                    last = exc
                    continue
                yield first
                try:
                    async for chunk in chunks:
                        yield chunk
                except Exception as exc:
                    if is_health_failure(exc):
                        host.breaker.failure()
                    raise
            host.breaker.success()
            host.calls += 1
            return
        raise last if last is not None else self._unavailable()

    async def list_models(self) -> list[str]:
        host = await self._pick(set())
        if host is None:
            raise self._unavailable()
        return await host.model.list_models()

    def __repr__(self) -> str:
        return f"PooledModel(name={self.name!r}, hosts={[h.breaker.name for h in self.hosts]!r})"
