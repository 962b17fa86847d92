"""The one base of every model that stands in front of other models.

Retry, breaker and limit, fallback, host pool and privacy gate are each a
:class:`WrapperModel` that overrides the calls it changes (``complete`` and
``stream``); identity, context window, locality, token counting, closing and the
backend extras (``list_models()``, ``embed()``) are written here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._errors import UserError
from ._base import Model, ModelReply

__all__ = ["WrapperModel", "unwrap"]


class WrapperModel(Model):
    """A model that calls ``members`` (one, or several for a fallback or a pool).

    Attributes:
        members: the wrapped models, the primary first.
        inner: the primary member.

    The wrapper answers as its primary: ``name`` and ``provider`` are the primary's,
    ``context_window`` is the smallest member's, ``endpoints`` are every member's,
    and ``local`` holds only when every member is local, so a check on it sees the
    worst case. Unknown attributes are looked up on the primary.
    """

    def __init__(self, *members: Model) -> None:
        if not members:
            raise UserError(f"{type(self).__name__} needs at least one model")
        self.members: tuple[Model, ...] = tuple(members)

    @property
    def inner(self) -> Model:
        return self.members[0]

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def provider(self) -> str:  # type: ignore[override]
        return self.inner.provider

    @property
    def context_window(self) -> int:  # type: ignore[override]
        return min(m.context_window for m in self.members)

    @property
    def endpoints(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for m in self.members:
            seen.update(dict.fromkeys(m.endpoints))
        return tuple(seen)

    @property
    def local(self) -> bool:  # type: ignore[override]
        return all(m.local for m in self.members)

    def count_tokens(self, text: str) -> int:
        """The largest count of any member, so a size check fits them all."""
        return max(m.count_tokens(text) for m in self.members)

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        return await self.inner.complete(messages, schema=schema, settings=settings)

    async def stream(self, messages, *, schema=None, settings=None):
        async for chunk in self.inner.stream(messages, schema=schema, settings=settings):
            yield chunk

    async def aclose(self) -> None:
        for m in self.members:
            await m.aclose()

    async def aprepare(self) -> None:
        for m in self.members:
            await m.aprepare()

    def __getattr__(self, name: str) -> Any:
        # Backend extras (list_models(), embed(), host, ...) pass through to the primary.
        if name in ("members", "inner") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(repr(m) for m in self.members)})"


def unwrap(model: Model) -> list[Model]:
    """``model`` and the wrappers below it along the primary chain, outermost first."""
    chain = [model]
    while isinstance(model, WrapperModel) and len(model.members) == 1:
        model = model.inner
        chain.append(model)
    return chain


def members_of(model: Model) -> Sequence[Model]:
    return model.members if isinstance(model, WrapperModel) else ()
