"""A developer's mistake and a request that cannot be served: raised before (or
instead of) any model call."""

from __future__ import annotations

from ._root import SlmGraphError

__all__ = [
    "UserError",
    "ConfigError",
    "UnknownSkillError",
    "MissingDependencyError",
    "StateSchemaError",
    "RequestError",
    "EmptyRequestError",
    "RequestTooLargeError",
    "RequestShapeError",
    "ThreadBusyError",
    "IdempotencyKeyReusedError",
]


class UserError(SlmGraphError):
    """A mistake in how slmgraph is used or configured."""


class ConfigError(UserError):
    """A configuration value is missing or invalid.

    Attributes:
        field: dotted name of the offending setting, e.g. ``"large.base_url"``.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"config field {field!r}: {problem}")


class UnknownSkillError(UserError):
    """A name refers to a skill that the graph does not have."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"unknown skill {name!r}; this graph has: {', '.join(sorted(known)) or '(none)'}"
        )


class MissingDependencyError(UserError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, what: str, extra: str, hint: str = "") -> None:
        self.extra = extra
        msg = f"{what} is not installed; install it with `pip install 'slmgraph[{extra}]'`"
        super().__init__(msg + (f" {hint}" if hint else ""))


class StateSchemaError(UserError):
    """A node writes a field that the graph's state does not declare (LangGraph would
    drop the write silently, e.g. a skill node's ledger entries).

    Raised by the node on its first call, before any model call.

    Attributes:
        node: the node's name.
        fields: the fields the state lacks.
    """

    def __init__(self, node: str, fields: list[str], fix: str) -> None:
        self.node = node
        self.fields = list(fields)
        names = ", ".join(repr(f) for f in self.fields)
        super().__init__(
            f"node {node!r} writes {names}, which the graph's state does not declare, so LangGraph "
            f"would drop the write silently; {fix}"
        )


class RequestError(SlmGraphError):
    """The request cannot be served as given."""


class EmptyRequestError(RequestError):
    """The request has no content."""

    def __init__(self) -> None:
        super().__init__("the request is empty; send some text for the graph to work on")


class IdempotencyKeyReusedError(RequestError):
    """An idempotency key came back with a request other than the one it was first
    sent with; a retry must repeat its request exactly.

    Attributes:
        run_id: the run recorded under the key.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            "this idempotency key was first used with another request (run "
            f"{run_id}); send a retry with the same request, or a new key for a new request"
        )


class RequestTooLargeError(RequestError):
    """The request does not fit the model's context window.

    slmgraph counts tokens itself and refuses such a request instead of letting the
    server truncate it silently.
    """

    def __init__(self, tokens: int, limit: int, model: str) -> None:
        self.tokens = tokens
        self.limit = limit
        self.model = model
        super().__init__(
            f"the request is {tokens} tokens but {model!r} takes at most {limit} "
            "for input; split it into smaller requests, or bind a model with a larger "
            "context window (num_ctx / n_ctx)"
        )


class RequestShapeError(RequestError):
    """The request is not shaped like the skill's input type: text (or a JSON value
    that is not an object) for an input with several fields, or an object missing
    required fields. The message names the fields and never the request's values.

    Attributes:
        skill: the skill that takes the request.
        required: the input type's required fields.
        missing: those the request lacks (all of them for text).
    """

    def __init__(self, skill: str, type_name: str, required: list[str], missing: list[str], got: str) -> None:
        self.skill = skill
        self.required = list(required)
        self.missing = list(missing)
        example = ", ".join(f'"{f}": ...' for f in self.required)
        lacks = f" (missing {', '.join(self.missing)})" if self.missing and self.missing != self.required else ""
        super().__init__(
            f"skill {skill!r} takes a {type_name} with the required fields {', '.join(self.required)}, "
            f"and the request is {got}{lacks}; pass a dict such as {{{example}}}, "
            f"a {type_name} instance, or that object as a JSON string"
        )


class ThreadBusyError(RequestError):
    """Another run holds the conversation thread, in this process or another one
    sharing the SQLite file; two runs on one thread never interleave.

    Attributes:
        thread_id: the busy thread.
        holder: the run id holding it, when known.
    """

    transient = True

    def __init__(self, thread_id: str, holder: str = "", *, waited_s: float | None = None) -> None:
        self.thread_id = thread_id
        self.holder = holder
        by = f" by run {holder!r}" if holder else ""
        how = f"still busy after waiting {waited_s:.1f}s" if waited_s is not None else "busy"
        super().__init__(
            f"thread {thread_id!r} is {how}: another run holds it{by}; retry when that run "
            "has finished, or use a new thread id"
        )
