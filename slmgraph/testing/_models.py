"""Test doubles that ship with slmgraph, so users can test graphs with no model server."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel

from .._errors import UserError
from ..models._base import Message, Model, ModelReply, ModelSettings, TokenLogprob, Usage, try_parse_json

__all__ = ["ScriptedModel", "FunctionModel", "ModelCall", "Reply"]

#: What a scripted or function model may produce: text, a JSON-able value, a
#: pydantic object, a full :class:`ModelReply`, or an exception to raise.
Reply = Union[str, dict, list, BaseModel, ModelReply, BaseException]


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One call a test double received, for assertions."""

    messages: tuple[Message, ...]
    schema: dict[str, Any] | None
    settings: ModelSettings | None


class _RecordingModel(Model):
    provider = "test"

    def __init__(
        self, name: str, *, context_window: int, latency_s: float, logprob: float | None, local: bool = True
    ) -> None:
        self.name = name
        self.local = local
        self.context_window = context_window
        self.latency_s = latency_s
        self.logprob = logprob
        self.calls: list[ModelCall] = []

    def _to_reply(self, value: Reply, schema: dict[str, Any] | None, started: float) -> ModelReply:
        if isinstance(value, BaseException):
            raise value
        if isinstance(value, ModelReply):
            return value
        if isinstance(value, BaseModel):
            text = value.model_dump_json()
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        parsed = None
        if schema is not None:
            parsed = try_parse_json(text)
        prompt = sum(self.count_tokens(m.content) for m in self.calls[-1].messages)
        logprobs = None
        if self.logprob is not None:
            logprobs = (TokenLogprob(token=text, logprob=self.logprob),)
        return ModelReply(
            text=text,
            parsed=parsed,
            model=self.name,
            provider=self.provider,
            usage=Usage(prompt_tokens=prompt, completion_tokens=self.count_tokens(text)),
            latency_s=time.perf_counter() - started,
            logprobs=logprobs,
            finish_reason="stop",
        )

    def _record(self, messages: Sequence[Message], schema, settings) -> float:
        self.calls.append(ModelCall(tuple(messages), schema, settings))
        return time.perf_counter()

    async def _pause(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)


class ScriptedModel(_RecordingModel):
    """Replies from a queue, in order; an exception in the queue is raised.

    Args:
        replies: the replies, consumed one per call.
        name: model name recorded in the ledger.
        repeat_last: keep returning the last reply once the queue is empty,
            instead of raising.
        latency_s: simulated latency per call (``asyncio.sleep``).
        logprob: when set, each reply carries this per-token logprob, as a backend
            with logprobs would; ``None`` gives replies without logprobs.
        local: ``False`` makes the double count as a model off this machine (for
            privacy and ledger tests); it still runs in-process.

    Example:
        >>> model = ScriptedModel([{"label": "refund"}, TimeoutError()])
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        name: str = "scripted",
        repeat_last: bool = False,
        context_window: int = 8192,
        latency_s: float = 0.0,
        logprob: float | None = None,
        local: bool = True,
    ) -> None:
        super().__init__(name, context_window=context_window, latency_s=latency_s, logprob=logprob, local=local)
        self._queue: deque[Reply] = deque(replies)
        self._last: Reply | None = None
        self.repeat_last = repeat_last

    def push(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    @property
    def remaining(self) -> int:
        return len(self._queue)

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        started = self._record(messages, schema, settings)
        if self._queue:
            value = self._last = self._queue.popleft()
        elif self.repeat_last and self._last is not None:
            value = self._last
        else:
            raise UserError(
                f"ScriptedModel {self.name!r} ran out of replies after {len(self.calls) - 1} "
                "calls; add more replies or pass repeat_last=True"
            )
        await self._pause()
        return self._to_reply(value, schema, started)


ReplyFn = Callable[[Sequence[Message], "dict[str, Any] | None"], Union[Reply, Awaitable[Reply]]]


class FunctionModel(_RecordingModel):
    """Replies by calling ``fn(messages, schema)``, sync or async.

    Example:
        >>> echo = FunctionModel(lambda msgs, schema: msgs[-1].content)
    """

    def __init__(
        self,
        fn: ReplyFn,
        *,
        name: str = "function",
        context_window: int = 8192,
        latency_s: float = 0.0,
        logprob: float | None = None,
        local: bool = True,
    ) -> None:
        super().__init__(name, context_window=context_window, latency_s=latency_s, logprob=logprob, local=local)
        self.fn = fn

    async def complete(self, messages, *, schema=None, settings=None) -> ModelReply:
        started = self._record(messages, schema, settings)
        value = self.fn(list(messages), schema)
        if inspect.isawaitable(value):
            value = await value
        await self._pause()
        return self._to_reply(value, schema, started)
