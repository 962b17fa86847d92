"""The typed run context handed to routers, specialists and the escalation agent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import ConfigError, RequestTooLargeError
from .ledger import PriceTable, Recorder
from ._untrusted import neutralize_messages
from .models._base import Message, Model, ModelReply, ModelSettings

__all__ = ["RunContext"]

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

    @classmethod
    def fresh(
        cls,
        models: Mapping[str, Model],
        prices: PriceTable | None,
        large_keys: frozenset[str],
        history: tuple[Message, ...] = (),
    ) -> RunContext:
        return cls(models=models, recorder=Recorder(prices=prices or PriceTable()), large_keys=large_keys, history=history)

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
        reply = await model.complete(messages, schema=schema, settings=settings)
        tier: Literal["small", "large"] = "large" if key in self.large_keys else "small"
        self.recorder.add(reply, node=node, skill=skill, reason=reason, tier=tier)
        return reply


def check_fits(model: Model, messages: Sequence[Message], settings: ModelSettings | None = None) -> int:
    """Count the prompt's tokens and refuse it if it cannot fit with room to reply.

    Returns:
        The prompt's token count.

    Raises:
        RequestTooLargeError: the prompt plus the reply reserve exceeds the window.
    """
    reserve = (settings.max_tokens if settings and settings.max_tokens else None) or DEFAULT_REPLY_RESERVE
    tokens = sum(model.count_tokens(m.content) + 4 for m in messages)
    limit = model.context_window - reserve
    if tokens > limit:
        raise RequestTooLargeError(tokens, limit, model.name)
    return tokens
