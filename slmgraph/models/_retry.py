"""slmgraph's one retry layer, on tenacity. SDK retries are off in every backend."""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from .._errors import ConfigError, SlmGraphError
from ._base import Model, ModelReply

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
    """

    attempts: int = 3
    initial_s: float = 0.5
    max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("retry.attempts", "must be >= 1")
        if self.initial_s < 0 or self.max_s < 0:
            raise ConfigError("retry", "backoff times must be >= 0")


class RetryingModel(Model):
    """Wraps a model so that transient faults are retried under ``policy``."""

    def __init__(self, inner: Model, policy: RetryPolicy | None = None) -> None:
        self.inner = inner
        self.policy = policy or RetryPolicy()
        self.name = inner.name
        self.provider = inner.provider
        self.context_window = inner.context_window
        self.local = inner.local

    def _attempts(self) -> AsyncRetrying:
        p = self.policy
        return AsyncRetrying(
            stop=stop_after_attempt(p.attempts),
            wait=wait_random_exponential(multiplier=p.initial_s, max=p.max_s),
            retry=retry_if_exception(_transient),
            reraise=True,
        )

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

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

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str):
        # list_models(), embed() and other backend extras pass through.
        return getattr(self.inner, name)
