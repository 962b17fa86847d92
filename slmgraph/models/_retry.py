"""slmgraph's one retry layer, on tenacity. SDK retries are off in every backend.

Waits are jittered exponential backoff; a 429/503 that carries ``Retry-After`` is
retried after exactly that long, or not at all when it asks for more than
``RetryPolicy.retry_after_cap_s`` (a fallback takes over instead of a storm). A 200
with a malformed body is retried at most ``malformed_retries`` times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_random_exponential

from .._errors import ConfigError, MalformedResponseError, SlmGraphError
from ._base import Model, ModelReply
from ._wrapper import WrapperModel

__all__ = ["RetryPolicy", "RetryingModel"]


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, SlmGraphError) and exc.transient


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded, jittered retries of transient faults only.

    Transient: unreachable server, timeout, HTTP 429 and 5xx, truncated stream.
    Never retried: a missing model (404), other 4xx, invalid output.

    Attributes:
        attempts: total attempts, the first included.
        initial_s: scale of the first backoff.
        max_s: cap on any one backoff.
        retry_after_cap_s: the longest ``Retry-After`` honoured; a server asking for
            longer gets no retry from us (the error goes to the caller or a fallback).
        malformed_retries: retries of a 200 whose body is not the protocol.
    """

    attempts: int = 3
    initial_s: float = 0.5
    max_s: float = 8.0
    retry_after_cap_s: float = 30.0
    malformed_retries: int = 1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("retry.attempts", "must be >= 1")
        if self.initial_s < 0 or self.max_s < 0:
            raise ConfigError("retry", "backoff times must be >= 0")
        if self.retry_after_cap_s < 0 or self.malformed_retries < 0:
            raise ConfigError("retry", "retry_after_cap_s and malformed_retries must be >= 0")

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt."""
        return self.attempts - 1

    def should_retry(self, exc: BaseException, malformed_seen: int) -> bool:
        """Whether ``exc`` is worth another attempt (``malformed_seen`` counts this one)."""
        if not _transient(exc):
            return False
        if isinstance(exc, MalformedResponseError) and malformed_seen > self.malformed_retries:
            return False
        retry_after = getattr(exc, "retry_after", None)
        return retry_after is None or retry_after <= self.retry_after_cap_s

    def wait_s(self, exc: BaseException | None, backoff: float) -> float:
        """Seconds before the next attempt: ``Retry-After`` when the server sent one,
        else the jittered ``backoff``."""
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(max(0.0, float(retry_after)), self.retry_after_cap_s)
        return backoff


class RetryingModel(WrapperModel):
    """Wraps a model so that transient faults are retried under ``policy``.

    Args:
        inner: the model to call.
        policy: attempts, backoff and the ``Retry-After`` cap.
        sleep: how to wait between attempts (tests pass a recorder).
    """

    def __init__(
        self,
        inner: Model,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self._sleep = sleep or asyncio.sleep

    def _attempts(self) -> AsyncRetrying:
        p = self.policy
        backoff = wait_random_exponential(multiplier=p.initial_s, max=p.max_s)
        malformed = [0]

        def retry(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome is not None else None
            if exc is None:
                return False
            malformed[0] += isinstance(exc, MalformedResponseError)
            return p.should_retry(exc, malformed[0])

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            return p.wait_s(exc, backoff(state))

        return AsyncRetrying(
            stop=stop_after_attempt(p.attempts), wait=wait, retry=retry, reraise=True, sleep=self._sleep
        )

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        async for attempt in self._attempts():
            with attempt:
                return await self.inner.complete(messages, schema=schema, settings=settings)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(self, messages, *, schema=None, settings=None):
        """Retries a stream that fails before its first chunk; once text has been
        yielded, a failure is raised (the caller already holds partial output)."""
        async for attempt in self._attempts():
            with attempt:
                chunks = aiter(self.inner.stream(messages, schema=schema, settings=settings))
                first = await anext(chunks)
        yield first
        async for chunk in chunks:
            yield chunk
