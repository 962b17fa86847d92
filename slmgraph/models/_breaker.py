"""Per-endpoint protection: a circuit breaker with a cooldown, and a concurrency limit.

:class:`GuardedModel` puts both in front of one endpoint. The breaker counts
consecutive *health* failures (unreachable, timeout, 5xx, malformed body); after
``failures`` of them it opens and calls fail at once with
:class:`~slmgraph.CircuitOpenError` for ``cooldown_s``; then one call goes through as
a probe (half-open) and its outcome closes or re-opens the breaker. The limit keeps at
most ``max_parallel`` calls in flight and queues the rest on our side, so a burst waits
instead of drawing 503s from a server that serves ``OLLAMA_NUM_PARALLEL`` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Literal

from .._errors import (
    CircuitOpenError,
    ConfigError,
    MalformedResponseError,
    ModelHTTPError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from ._base import Model, ModelReply
from ._wrapper import WrapperModel

__all__ = ["CircuitBreaker", "ConcurrencyLimit", "GuardedModel", "is_health_failure", "endpoint_of"]

State = Literal["closed", "open", "half_open"]


def is_health_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the endpoint is unhealthy (rather than the request bad)."""
    if isinstance(exc, CircuitOpenError):
        return False
    if isinstance(exc, (ModelUnavailableError, ModelTimeoutError, MalformedResponseError)):
        return True
    return isinstance(exc, ModelHTTPError) and exc.status_code >= 500


def endpoint_of(model: Model) -> str:
    """A printable name of where ``model``'s calls go (its endpoint, else its name)."""
    return model.endpoint or model.name


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> half-open after
    ``cooldown_s`` (one probe) -> closed on success, open again on failure.

    Attributes:
        opened: how many times the breaker has opened.
    """

    def __init__(
        self, failures: int = 5, cooldown_s: float = 30.0, *, name: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ConfigError("breaker_failures", "must be >= 1")
        if cooldown_s < 0:
            raise ConfigError("breaker_cooldown", "must be >= 0")
        self.failures, self.cooldown_s, self.name, self.clock = failures, cooldown_s, name, clock
        self.consecutive = 0
        self.opened = 0
        self._state: State = "closed"
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> State:
        if self._state == "open" and self.clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return self._state

    def retry_in(self) -> float:
        """Seconds until a probe is let through (0 when calls may go now)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go now; in half-open state, only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._state, self.consecutive, self._probing = "closed", 0, False

    def failure(self) -> None:
        self.consecutive += 1
        was_probe, self._probing = self._probing, False
        if was_probe or (self._state == "closed" and self.consecutive >= self.failures):
            self.opened += self._state == "closed"
            self._state, self._opened_at = "open", self.clock()

    def release(self) -> None:
        """Give back a probe whose call ended without a verdict (cancelled)."""
        self._probing = False

    def error(self, *, model: str = "", provider: str = "") -> CircuitOpenError:
        return CircuitOpenError(self.name or "the endpoint", self.retry_in(), model=model, provider=provider)


class ConcurrencyLimit:
    """At most ``limit`` calls at once (``None``: no limit); the rest wait in order.

    One semaphore per event loop, since a sync wrapper runs each call on a fresh loop.

    Attributes:
        in_flight: calls running or waiting right now.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ConfigError("max_parallel", "must be >= 1")
        self.limit = limit
        self.in_flight = 0
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    @property
    def load(self) -> float:
        """In-flight calls per slot, for least-loaded routing."""
        return self.in_flight / (self.limit or 1)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.in_flight += 1
        try:
            if self.limit is None:
                yield
                return
            loop = asyncio.get_running_loop()
            sem = self._sems.get(loop)
            if sem is None:
                sem = self._sems[loop] = asyncio.Semaphore(self.limit)
            async with sem:
                yield
        finally:
            self.in_flight -= 1


class GuardedModel(WrapperModel):
    """One endpoint behind a :class:`CircuitBreaker` and a :class:`ConcurrencyLimit`.

    Share one breaker and one limit between models that call the same server.
    """

    def __init__(
        self, inner: Model, *, breaker: CircuitBreaker | None = None, limit: ConcurrencyLimit | None = None
    ) -> None:
        super().__init__(inner)
        self.breaker = breaker or CircuitBreaker(name=endpoint_of(inner))
        self.limit = limit or ConcurrencyLimit(None)

    def _admit(self) -> None:
        if not self.breaker.allow():
            raise self.breaker.error(model=self.name, provider=self.provider)

    def _verdict(self, exc: BaseException | None) -> None:
        if exc is None:
            self.breaker.success()
        elif is_health_failure(exc):
            self.breaker.failure()
        elif isinstance(exc, Exception):
            self.breaker.success()  # the server answered; the request was the problem
        else:
            self.breaker.release()  # cancelled: no verdict

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        self._admit()
        try:
            async with self.limit.slot():
                reply = await self.inner.complete(messages, schema=schema, settings=settings)
        except BaseException as exc:
            self._verdict(exc)
            raise
        self._verdict(None)
        return reply

    async def stream(self, messages, *, schema=None, settings=None):
        self._admit()
        try:
            async with self.limit.slot():
                async for chunk in self.inner.stream(messages, schema=schema, settings=settings):
                    yield chunk
        except BaseException as exc:
            self._verdict(exc)
            raise
        self._verdict(None)
