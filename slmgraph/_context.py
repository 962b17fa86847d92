"""The typed run context handed to routers, specialists and the escalation agent."""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import ConfigError, RequestTooLargeError, UserError
from .ledger import PriceTable, Recorder
from ._starting import started
from ._untrusted import neutralize_messages, require_unicode
from .models._base import Message, Model, ModelReply, ModelSettings

__all__ = ["RunContext", "EffectLog"]

#: Tokens kept free for the reply when a prompt is checked against a context window.
DEFAULT_REPLY_RESERVE = 256


@dataclass(slots=True)
class RunContext:
    """Models by binding key, the recorder that meters every call, and the thread's
    earlier conversation turns (``history``, for skills with ``memory``).

    All model calls made by slmgraph go through :meth:`call`, which refuses a prompt
    that does not fit the model's context window (never relying on the server to
    truncate it) and writes one ledger entry per call.
    """

    models: Mapping[str, Model]
    recorder: Recorder = field(default_factory=Recorder)
    large_keys: frozenset[str] = frozenset({"large"})
    history: tuple[Message, ...] = ()
    effects: EffectLog = field(default_factory=lambda: EffectLog())

    @classmethod
    def fresh(
        cls,
        models: Mapping[str, Model],
        prices: PriceTable | None,
        large_keys: frozenset[str],
        history: tuple[Message, ...] = (),
        effects: EffectLog | None = None,
    ) -> RunContext:
        return cls(
            models=models, recorder=Recorder(prices=prices or PriceTable()), large_keys=large_keys,
            history=history, effects=effects or EffectLog(),
        )

    def model(self, key: str) -> Model:
        try:
            return self.models[key]
        except KeyError:
            raise ConfigError(
                f"models.{key}",
                f"no model is bound to {key!r}; bound keys: {', '.join(sorted(self.models)) or '(none)'}",
            ) from None

    def has(self, key: str) -> bool:
        return key in self.models

    async def call(
        self,
        key: str,
        messages: Sequence[Message],
        *,
        node: str,
        skill: str | None = None,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
        reason: str | None = None,
    ) -> ModelReply:
        model = self.model(key)
        messages = neutralize_messages(messages)  # request text cannot open a chat turn
        check_fits(model, messages, settings)
        started()  # the run's set-up is over: the start gate lets the next one in
        reply = await model.complete(messages, schema=schema, settings=settings)
        tier: Literal["small", "large"] = "large" if key in self.large_keys else "small"
        self.recorder.add(reply, node=node, skill=skill, reason=reason, tier=tier, key=key, local=model.local)
        return reply


    async def effect(self, key: str, fn: Callable[[str], Any | Awaitable[Any]]) -> Any:
        """Run a side effect once per run, however often the node re-runs.

        ``fn(idempotency_key)`` does the effect (send the mail, charge the card) and
        returns a JSON-able result. In a graph run with a SQLite checkpoint, the
        result is stored under (thread, run, ``key``) before the node goes on, so a
        node re-run after a crash gets the stored result and ``fn`` is not called
        again. Pass ``idempotency_key`` on to the external system as well: it covers
        the one window left, a crash after ``fn`` but before its result is stored.

        Returns:
            The result as stored (JSON round-tripped, the same on first run and replay).

        Raises:
            UserError: ``key`` is empty, or the result is not JSON-able.
        """
        return await self.effects.run(key, fn)


class EffectLog:
    """Side-effect results by key, for :meth:`RunContext.effect`; this base keeps
    them in memory for one context (a graph run uses a store in its SQLite file)."""

    def __init__(self, scope: str = "") -> None:
        self._scope = scope
        self._results: dict[str, Any] = {}

    @property
    def scope(self) -> str:
        if not self._scope:  # drawn on first use: most runs declare no side effect
            self._scope = uuid.uuid4().hex
        return self._scope

    def idempotency_key(self, key: str) -> str:
        return f"{self.scope}:{key}"

    async def lookup(self, key: str) -> tuple[bool, Any]:
        return (True, self._results[key]) if key in self._results else (False, None)

    async def save(self, key: str, result_json: str) -> None:
        self._results[key] = json.loads(result_json)

    async def run(self, key: str, fn: Callable[[str], Any | Awaitable[Any]]) -> Any:
        if not isinstance(key, str) or not key:
            raise UserError("a side effect needs a non-empty string key, unique within the run")
        found, value = await self.lookup(key)
        if found:
            return value
        result = fn(self.idempotency_key(key))
        if inspect.isawaitable(result):
            result = await result
        try:
            text = json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise UserError(f"side effect {key!r} returned a value that is not JSON-able ({exc}); return plain data") from None
        await self.save(key, text)
        return json.loads(text)


def check_fits(model: Model, messages: Sequence[Message], settings: ModelSettings | None = None) -> None:
    """Refuse a prompt that cannot fit in the model's window with room to reply.

    A prompt whose UTF-8 bytes (at most 4 a character) plus 4 tokens a message fit
    is not counted: every tokenizer, and slmgraph's estimate, gives a token at least
    one byte (privacy placeholders included), so it cannot count more.

    Raises:
        RequestTooLargeError: the prompt plus the reply reserve exceeds the window.
        RequestError: a message is not valid Unicode (a lone surrogate).
    """
    require_unicode(messages)
    reserve = (settings.max_tokens if settings and settings.max_tokens else None) or DEFAULT_REPLY_RESERVE
    limit = model.context_window - reserve
    chars = 0
    for m in messages:
        chars += len(m.content)
    if 4 * (chars + len(messages)) <= limit:
        return
    count = model.count_tokens
    tokens = 4 * len(messages)
    for m in messages:
        tokens += count(m.content)
    if tokens > limit:
        raise RequestTooLargeError(tokens, limit, model.name)
