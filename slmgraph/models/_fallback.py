"""Fallback to another endpoint or model when one is down, cooling down or missing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._errors import CircuitOpenError, ModelError, ModelNotFoundError, UserError
from ._base import Model, ModelReply
from ._wrapper import WrapperModel

__all__ = ["FallbackModel", "should_fall_back"]


def should_fall_back(exc: BaseException) -> bool:
    """The default: transient faults (after their retries), an open breaker, a missing
    model. Never a bad request or invalid output: another model would not fix those."""
    if isinstance(exc, (CircuitOpenError, ModelNotFoundError)):
        return True
    return isinstance(exc, ModelError) and exc.transient


class FallbackModel(WrapperModel):
    """Tries ``models`` in order until one answers.

    Put each member behind its own :class:`~slmgraph.RetryingModel` (retries happen
    there, once); this wrapper only moves on. A stream falls back only before its
    first chunk. ``local`` is true only when every member is local, so a privacy check
    on ``local`` sees the worst case; ``context_window`` is the smallest one.

    Args:
        models: primary first.
        fallback_on: which errors move on to the next model.

    Raises:
        The last member's error when all fail.
    """

    def __init__(self, models: Sequence[Model], *, fallback_on: Callable[[BaseException], bool] = should_fall_back) -> None:
        if not models:
            raise UserError("FallbackModel needs at least one model")
        super().__init__(*models)
        self.models = list(models)
        self.fallback_on = fallback_on
        #: index of the member that answered each call, for tests and metrics
        self.served_by: list[int] = []

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        for i, model in enumerate(self.models):
            try:
                reply = await model.complete(messages, schema=schema, settings=settings)
            except Exception as exc:
                if i == len(self.models) - 1 or not self.fallback_on(exc):
                    raise
                continue
            self.served_by.append(i)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(self, messages, *, schema=None, settings=None):
        for i, model in enumerate(self.models):
            chunks = aiter(model.stream(messages, schema=schema, settings=settings))
            try:
                first = await anext(chunks)
            except Exception as exc:
                if i == len(self.models) - 1 or not self.fallback_on(exc):
                    raise
                continue
            self.served_by.append(i)
            yield first
            async for chunk in chunks:
                yield chunk
            return
