"""The one model seam: messages in, a :class:`ModelReply` out.

A backend implements :meth:`Model.complete`; :meth:`Model.stream` is optional and
falls back to yielding the whole reply as one chunk. Everything else in slmgraph
(skills, routers, the escalation agent) talks to models only through this seam.
"""

from __future__ import annotations

import ipaddress
import json
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

from .._errors import ConfigError, InvalidModelOutputError
from .._sync import is_async, run_sync

__all__ = [
    "Message",
    "ModelSettings",
    "Usage",
    "TokenLogprob",
    "ModelReply",
    "StreamChunk",
    "Model",
    "parse_json_reply",
    "try_parse_json",
    "is_local_endpoint",
    "estimate_tokens",
    "check_model",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Per-call generation settings. ``None`` leaves the backend's own default."""

    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class ModelReply:
    """What a backend returns for one call.

    Attributes:
        text: the raw reply text.
        parsed: the JSON value of ``text`` when a schema was requested and the text
            is JSON; ``None`` otherwise. Backends never raise on unparseable
            content: the caller decides (skills re-ask, see ``parse_json_reply``).
        usage: prompt and completion tokens as the backend reported them.
        latency_s: wall time of the call, measured by slmgraph.
        logprobs: per-token log probabilities, when the backend gives them.
        model: the model that answered.
        provider: the backend (``"ollama"``, ``"openai"``, ``"llamacpp"``, ...).
        finish_reason: why generation stopped, as the backend reported it.
        timings: backend-reported durations in seconds (e.g. Ollama's ``eval``).
    """

    text: str
    model: str
    provider: str
    parsed: Any = None
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def value(self) -> Any:
        """The reply as JSON: ``parsed`` if the backend decoded it, else decoded here.

        Raises:
            InvalidModelOutputError: the text is not JSON.
        """
        if self.parsed is not None:
            return self.parsed
        return parse_json_reply(self.text, model=self.model, provider=self.provider)

    def span_probability(self, needle: str) -> float | None:
        """Joint probability of the tokens that spell the last occurrence of ``needle``
        in the reply, or ``None`` without logprobs or when the tokens do not cover it.

        Routers use this to score only the tokens of a choice (``"billing"``), not the
        JSON around it, which a constrained decoder emits with probability near 1.
        """
        if not self.logprobs or not needle:
            return None
        text = "".join(t.token for t in self.logprobs)
        start = text.rfind(needle)
        if start < 0:
            return None
        end, pos, total = start + len(needle), 0, 0.0
        for t in self.logprobs:
            t_start, pos = pos, pos + len(t.token)
            if pos > start and t_start < end:
                total += t.logprob
        return math.exp(total)

    def confidence(self) -> float | None:
        """Geometric-mean token probability, or ``None`` without logprobs."""
        if not self.logprobs:
            return None
        mean = sum(t.logprob for t in self.logprobs) / len(self.logprobs)
        return math.exp(mean)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed reply; the last chunk carries ``reply``."""

    delta: str
    reply: ModelReply | None = None


def estimate_tokens(text: str) -> int:
    """One token per 3 bytes of UTF-8, rounded up: more than any real tokenizer counts."""
    n = len(text)
    if not text.isascii():
        n = len(text.encode("utf-8"))
    return max(1, -(-n // 3))


def is_local_endpoint(url: str | None) -> bool:
    """``True`` for the embedded engine (``"embedded"``) and this machine's addresses
    (``localhost``, ``127.0.0.0/8``, ``::1``, and ``0.0.0.0``, which connects here);
    every other host, LAN addresses included, is remote."""
    if url is None or url == "embedded":
        return url == "embedded"
    host = (urlparse(url if "://" in url else f"http://{url}").hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


class Model(ABC):
    """A chat model behind one async method.

    Attributes:
        name: the model identifier the backend knows it by.
        provider: short backend name, recorded in the ledger.
        context_window: tokens the model accepts (prompt plus reply).
        endpoints: where calls go (URLs, or ``"embedded"`` for in-process engines).
        endpoint: the one endpoint to name in messages (see :attr:`endpoint`).
        local: ``True`` when every call stays on this machine, derived from
            :attr:`endpoints` (see :attr:`local`).
    """

    name: str
    provider: str
    context_window: int = 4096
    #: An explicit claim about locality. ``False`` marks a model remote whatever its
    #: endpoint; ``True`` or ``None`` leave it to the endpoints, and a model with no
    #: known endpoint (a test double, a LangChain model) is then local unless it sets
    #: ``False``. A claim can never make a remote URL local.
    _local: bool | None = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Where this model's calls go: URLs, ``("embedded",)`` for an in-process
        engine, ``()`` when unknown. Backends override this."""
        return ()

    @property
    def endpoint(self) -> str | None:
        """The endpoint to name in messages: the first remote one, else the first
        one, else ``None`` (unknown)."""
        urls = self.endpoints
        remote = [u for u in urls if not is_local_endpoint(u)]
        return (remote or list(urls) or [None])[0]

    @property
    def local(self) -> bool:
        """Whether every call stays on this machine: all :attr:`endpoints` are local
        (and the model does not say otherwise). The privacy gate, :func:`~slmgraph.harden`
        and the ledger's machine price all read this one property."""
        if self._local is False:
            return False
        urls = self.endpoints
        return all(is_local_endpoint(u) for u in urls) if urls else True

    @local.setter
    def local(self, value: bool | None) -> None:
        self._local = value

    @abstractmethod
    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelReply:
        """Run one chat call. With ``schema``, the reply is constrained to it where the
        backend can, and ``reply.parsed`` holds the decoded JSON."""

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream a reply. The default yields the complete reply as one chunk."""
        reply = await self.complete(messages, schema=schema, settings=settings)
        yield StreamChunk(delta=reply.text, reply=reply)

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``. Backends without a tokenizer over-estimate on purpose
        (:func:`estimate_tokens`), so a size check errs towards refusing."""
        return estimate_tokens(text)

    async def aclose(self) -> None:
        """Release connections. Safe to call more than once."""

    async def aprepare(self) -> None:
        """Get ready for the first call without making one: import the client
        library and open the running loop's client. A server calls it before it
        accepts requests, so that its first requests do not pay for it. Sends
        nothing; safe to call more than once. The default does nothing."""

    def complete_sync(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelReply:
        """Blocking wrapper over :meth:`complete`. Each call runs its own event loop,
        so the model's connections are closed before that loop ends."""

        async def once() -> ModelReply:
            try:
                return await self.complete(messages, schema=schema, settings=settings)
            finally:
                await self.aclose()

        return run_sync(once())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def parse_json_reply(text: str, *, model: str = "", provider: str = "") -> Any:
    """Decode a JSON reply, tolerating a Markdown code fence around it.

    Raises:
        InvalidModelOutputError: the text is not JSON.
    """
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidModelOutputError(
            f"the model replied with text that is not JSON ({exc.msg} at char {exc.pos})",
            text=text,
            model=model,
            provider=provider,
        ) from None
    except RecursionError:  # "[[[[...": deeper than the decoder's stack
        raise InvalidModelOutputError(
            "the model replied with JSON nested too deeply to decode", text=text[:2000], model=model, provider=provider
        ) from None


def try_parse_json(text: str) -> Any:
    """Like :func:`parse_json_reply` but returns ``None`` instead of raising."""
    try:
        return parse_json_reply(text)
    except InvalidModelOutputError:
        return None


def check_model(model: object, key: str) -> None:
    """Refuse, at build time, a binding the graph cannot call.

    Raises:
        ConfigError: (field ``models.KEY``) it has no ``async def complete(...)``.
    """
    complete = getattr(model, "complete", None)
    name = type(model).__name__
    if complete is None or not callable(complete):
        raise ConfigError(f"models.{key}", f"{name} is not a model: it has no complete(); subclass slmgraph.Model "
                          "and define `async def complete(self, messages, *, schema=None, settings=None)`")  # fmt: skip
    if not is_async(complete):
        raise ConfigError(f"models.{key}", f"{name}.complete must be `async def`: the graph awaits it")
