"""The Skill: a typed, narrow unit of work that a small model runs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from .._errors import ConfigError, InvalidModelOutputError, RequestShapeError
from .._sync import is_async

__all__ = [
    "Skill",
    "Example",
    "AcceptancePolicy",
    "TextInput",
    "Accepted",
    "Rejected",
    "EscalationReason",
    "SkillRunner",
    "DEFAULT_MIN_CONFIDENCE",
]

InT = TypeVar("InT", bound=BaseModel)
OutT = TypeVar("OutT", bound=BaseModel)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class TextInput(BaseModel):
    """The default input type: the request text as is."""

    text: str


class EscalationReason(StrEnum):
    """Why a request left the small models."""

    NONE_FITS = "none_fits"
    LOW_ROUTE_CONFIDENCE = "low_route_confidence"
    INVALID_OUTPUT = "invalid_output"
    LOW_CONFIDENCE = "low_confidence"
    FAILED_CHECK = "failed_check"
    BAD_INPUT = "bad_input"


@dataclass(frozen=True, slots=True)
class Example(Generic[InT, OutT]):
    """A few-shot example: an input and the output the skill should give."""

    input: InT | str
    output: OutT


#: The confidence bar ``AcceptancePolicy(min_confidence="auto")``, the default, applies
#: when the backend returns token logprobs: a reply whose geometric-mean token
#: probability is below it escalates. 0.5 means the model gave its own tokens less
#: than even odds on average: a guess. On the embedded SmolLM2-135M (with logprobs),
#: 8 refund extractions scored 0.17-0.43 and 6 of them had a wrong amount or
#: currency (``benchmarks/confidence_default.py``): the bar escalates all 8, where
#: no bar accepted all 8.
#: Without logprobs the default measures nothing and accepts; set a number to
#: sample for agreement instead.
DEFAULT_MIN_CONFIDENCE = 0.5

#: A custom acceptance check: returns ``None`` to accept, or the reason to reject.
Check = Callable[[Any, Any], "str | None"]

#: A composite skill's run: ``(skill, input, ctx, node) -> Accepted | Rejected``.
SkillRunner = Callable[["Skill", BaseModel, Any, str], Awaitable["Accepted | Rejected"]]


@dataclass(frozen=True, slots=True)
class AcceptancePolicy:
    """Decides whether a specialist's answer stands.

    Attributes:
        max_repairs: re-asks allowed after invalid output or a failed check.
        min_confidence: reject below this confidence. Confidence is the
            geometric-mean token probability when the backend gives logprobs, and
            otherwise the share of ``samples`` that agree. ``"auto"`` (the default)
            asks for logprobs and applies :data:`DEFAULT_MIN_CONFIDENCE` when the
            backend returns them, and accepts without sampling when it does not;
            ``None`` accepts any confidence.
        samples: samples drawn for agreement when logprobs are missing.
        sample_temperature: temperature of the extra samples.
        agree_on: what two samples must share to agree (default: the whole output).
        check: custom check ``(input, output) -> reason | None``.
    """

    max_repairs: int = 2
    min_confidence: float | Literal["auto"] | None = "auto"
    samples: int = 3
    sample_temperature: float = 0.8
    agree_on: Callable[[Any], Hashable] | None = None
    check: Check | None = None

    def __post_init__(self) -> None:
        if self.max_repairs < 0:
            raise ConfigError("acceptance.max_repairs", "must be >= 0")
        bar = self.min_confidence
        if bar is not None and bar != "auto" and (isinstance(bar, str) or not 0.0 <= bar <= 1.0):
            raise ConfigError("acceptance.min_confidence", f'must be between 0 and 1, "auto" or None, got {bar!r}')
        if self.samples < 1:
            raise ConfigError("acceptance.samples", "must be >= 1")
        if self.check is not None and is_async(self.check):
            raise ConfigError("acceptance.check", "must be a plain function `(input, output) -> reason | None`, "
                              "not async: the check is called, never awaited")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Skill(Generic[InT, OutT]):
    """A typed unit of work.

    A skill never names a backend: ``model`` is a *binding key* that the graph
    resolves to a concrete model from its configuration (``"small"`` by default),
    so one skill runs on Ollama in production, on the embedded engine offline and
    on a :class:`~slmgraph.testing.ScriptedModel` in tests.

    Attributes:
        name: identifier used by routers and in the ledger (``snake_case``).
        description: one line a router reads to decide whether the skill fits.
        instructions: the system prompt for the small model.
        output_type: pydantic model the reply must validate against.
        input_type: pydantic model of the input; :class:`TextInput` by default.
        examples: few-shot examples, shown as prior turns.
        acceptance: when an answer stands and when it escalates.
        model: binding key of the model that runs the skill.
        runner: replaces the default single structured call for composite skills
            (map-reduce, batching, retrieval first): ``async (skill, input, ctx,
            node) -> Accepted | Rejected``. A runner usually builds smaller skills
            and calls :func:`~slmgraph.run_skill` on them, so repairs, checks,
            confidence and the ledger work the same inside.
        memory: show the thread's earlier turns (``ctx.history``) to the model.
        render: turns an accepted output into the run's answer text (default: JSON).
        max_tokens: the reply budget per call (``None``: the backend's default, and
            256 tokens reserved when checking that a prompt fits).
    """

    name: str
    description: str
    instructions: str
    output_type: type[OutT]
    input_type: type[BaseModel] = TextInput
    examples: Sequence[Example] = ()
    acceptance: AcceptancePolicy = field(default_factory=AcceptancePolicy)
    model: str = "small"
    runner: SkillRunner | None = None
    memory: bool = False
    render: Callable[[Any], str] | None = None
    max_tokens: int | None = None
    #: What every run of this skill shares, worked out on its first run (the
    #: prompt's fixed head, the call settings): see ``slmgraph.skills._run``. Not a
    #: field to set; a clone starts with its own.
    _prepared: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError("skill.name", f"{self.name!r} must be snake_case, 1-64 chars")
        if self.name == "none":
            raise ConfigError("skill.name", "'none' is reserved for the no-skill route")
        for attr in ("output_type", "input_type"):
            value = getattr(self, attr)
            if not (isinstance(value, type) and issubclass(value, BaseModel)):
                shown = getattr(value, "__name__", None) or repr(value)
                raise ConfigError(
                    f"skill.{attr}",
                    f"skill {self.name!r}: {attr} must be a pydantic BaseModel subclass, got {shown}; "
                    f"declare one, e.g. `class {self.name.title().replace('_', '')}{attr[:-5].title()}(BaseModel): ...`"
                    + (" (for a list or a plain value, wrap it in a field or use pydantic.RootModel)" if attr == "output_type" else ""),
                )
        if self.runner is not None and (inspect.isfunction(self.runner) or inspect.ismethod(self.runner)) \
                and not is_async(self.runner):
            raise ConfigError("skill.runner", f"skill {self.name!r}: the runner must be `async def "
                              "runner(skill, input, ctx, node)`: the graph awaits it")  # fmt: skip

    def clone(self, **changes: Any) -> Skill[InT, OutT]:
        """A copy with some fields changed, e.g. ``skill.clone(model="large")``."""
        return dataclasses.replace(self, **changes)

    def answer_text(self, output: BaseModel) -> str:
        """The run's answer for an accepted ``output``."""
        return self.render(output) if self.render is not None else output.model_dump_json()

    def output_schema(self) -> dict[str, Any]:
        """The output type's JSON schema (cached per type; do not mutate it)."""
        return _schema(self.output_type)

    def output_schema_json(self) -> str:
        """The schema as compact JSON, for prompts (cached per type)."""
        return _schema_json(self.output_type)

    def parse_input(self, request: str | dict | BaseModel) -> BaseModel:
        """Turn a request into the skill's input type.

        Text goes into the one string field of a single-field input type, or is
        parsed as JSON otherwise.

        Raises:
            pydantic.ValidationError: the request does not fit the input type.
        """
        if isinstance(request, self.input_type):
            return request
        if self.input_type is TextInput and isinstance(request, str):
            return TextInput.model_construct(text=request)
        if isinstance(request, BaseModel):
            request = request.model_dump()
        if isinstance(request, dict):
            return self.input_type.model_validate(request)
        fields = self.input_type.model_fields
        if len(fields) == 1:
            (only,) = fields
            return self.input_type.model_validate({only: request})
        return self.input_type.model_validate_json(request)

    def check_request(self, request: str | dict | BaseModel) -> None:
        """Refuse a request that is not shaped like the input type (see
        :meth:`shape_error`); a request that has the shape but a bad value is left
        to the run, which rejects it as ``bad_input``.

        Raises:
            RequestShapeError: naming the required fields and how to pass them.
        """
        try:
            self.parse_input(request)
        except ValidationError as exc:
            if (err := self.shape_error(request, exc)) is not None:
                raise err from None  # the ValidationError would repeat the request's values

    def shape_error(self, request: Any, exc: ValidationError) -> RequestShapeError | None:
        """The error for a request that :meth:`parse_input` refused for its shape:
        text (or a JSON value that is not an object) for an input type with
        several fields, or an object without a required field. ``None`` when the
        problem is a value (a wrong type, a failed constraint, broken JSON)."""
        required = [f.alias or n for n, f in self.input_type.model_fields.items() if f.is_required()]
        if not required:
            return None
        errors = exc.errors(include_url=False, include_input=False)
        whole = {e["type"] for e in errors if not e["loc"]}
        if isinstance(request, str):
            # Text that is not JSON; JSON that breaks off or nests too deep is a bad value.
            if "json_invalid" in whole and not request.lstrip().startswith(("{", "[")):
                return RequestShapeError(self.name, self.input_type.__name__, required, required, "plain text")
            if "model_type" in whole:
                got = "a JSON value that is not an object"
                return RequestShapeError(self.name, self.input_type.__name__, required, required, got)
        missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing" and len(e["loc"]) == 1]
        if not missing:
            return None
        got = "a JSON object" if isinstance(request, str) else f"a {type(request).__name__}"
        return RequestShapeError(self.name, self.input_type.__name__, required, missing, got)

    def parse_output(self, value: Any, text: str = "") -> OutT:
        """Validate a decoded reply against the output type.

        Raises:
            InvalidModelOutputError: with the validation errors in the message.
        """
        try:
            return self.output_type.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidModelOutputError(
                f"the reply does not match {self.output_type.__name__}: {problems}",
                text=text or json.dumps(value, default=str),
            ) from None


@functools.lru_cache(maxsize=1024)
def _schema(output_type: type[BaseModel]) -> dict[str, Any]:
    return output_type.model_json_schema()


@functools.lru_cache(maxsize=1024)
def _schema_json(output_type: type[BaseModel]) -> str:
    return json.dumps(_schema(output_type), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Accepted(Generic[OutT]):
    """The skill's answer stands."""

    output: OutT
    confidence: float | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """The skill could not answer confidently; the request should escalate.

    Attributes:
        reason: the category of failure.
        detail: a sentence saying what exactly failed.
        draft: the best output the small model produced (JSON value or raw text).
    """

    reason: EscalationReason
    detail: str
    draft: Any
    attempts: int
    confidence: float | None = None
