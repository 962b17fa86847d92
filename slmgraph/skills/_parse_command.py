"""The parse_command skill: a free-text command becomes one of a set of declared
command templates, with typed arguments.

The model fills one branch of a union schema (one branch per template, each
argument nullable, plus a ``"none"`` branch), so a schema-constrained backend can
only name a declared command with arguments of the declared types. The skill then
keeps only argument values that occur in the request (a number written in it, a
string it contains): a value the model made up counts as missing, never as given.

Outcomes:

- ``status="command"``: every required argument was found and validated.
- ``status="needs_argument"``: a required argument is missing; ``missing`` names
  it and ``question`` is what to ask the user. This is an *accepted* answer, not
  an escalation: only the user knows the missing value, so a larger model could
  not supply it either.
- no template fits: :class:`Rejected` with ``none_fits``, so the graph escalates.
  That is when the model answers ``"none"``, and also when it names a command
  that nothing in the request points to (none of the command's words, nor any of
  its argument values, occurs in the text): a small model tends to force an
  unrelated request onto some command rather than say "none".
"""

from __future__ import annotations

import enum
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, RootModel, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .._errors import ConfigError
from ._run import run_skill
from ._skill import Accepted, AcceptancePolicy, EscalationReason, Rejected, Skill

__all__ = ["CommandTemplate", "ParsedCommand", "parse_command_skill", "value_in_text", "grounded"]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class CommandTemplate:
    """A command the skill may produce, with typed arguments.

    Attributes:
        name: snake_case command name (``"none"`` is reserved).
        description: what the command does; the model reads it.
        args: argument name -> type. A type is ``str``, ``int``, ``float``, ``bool``,
            a ``Literal`` of strings or a string ``Enum``; constraints and defaults
            come as ``Annotated[int, Field(ge=1, description=...)]`` or as a pair
            ``(int, Field(...))`` / ``(int, default)``, like ``pydantic.create_model``.
        required: the arguments that must be given; ``None`` means every argument
            without a default.
        questions: per argument, the question to ask when it is missing.
        keywords: more words that point to this command (besides the words of its
            name and description), e.g. ``("remind", "alarm")`` for ``set_timer``.

    Example:
        >>> CommandTemplate("set_timer", "start a countdown timer", {"minutes": int})
    """

    name: str
    description: str
    args: Mapping[str, Any] = field(default_factory=dict)
    required: Sequence[str] | None = None
    questions: Mapping[str, str] = field(default_factory=dict)
    keywords: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name == "none":
            raise ConfigError("templates", f"command name {self.name!r} must be snake_case and not 'none'")
        for arg in self.args:
            if not _NAME.match(arg) or arg == "command":
                raise ConfigError(f"templates.{self.name}", f"argument name {arg!r} must be snake_case and not 'command'")
        specs = {arg: _spec(self.name, arg, tp) for arg, tp in self.args.items()}
        object.__setattr__(self, "_specs", specs)
        for r in self.required or ():
            if r not in self.args:
                raise ConfigError(f"templates.{self.name}", f"required argument {r!r} is not among its args")

    @property
    def specs(self) -> dict[str, tuple[Any, FieldInfo]]:
        """Argument name -> (base type, field info)."""
        return self._specs  # type: ignore[attr-defined]

    def is_required(self, arg: str) -> bool:
        if self.required is not None:
            return arg in self.required
        return self.specs[arg][1].default is PydanticUndefined

    def signature(self) -> str:
        parts = []
        for arg, (tp, info) in self.specs.items():
            kind = _type_name(tp)
            parts.append(f"{arg}: {kind}" + ("" if self.is_required(arg) else " (optional)"))
        return f"{self.name}({', '.join(parts)})"


def _spec(command: str, arg: str, tp: Any) -> tuple[Any, FieldInfo]:
    info = FieldInfo()
    if isinstance(tp, tuple):
        tp, extra = tp
        info = extra if isinstance(extra, FieldInfo) else FieldInfo(default=extra)
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        infos = [m for m in meta if isinstance(m, FieldInfo)]
        info = FieldInfo.merge_field_infos(info, *infos) if infos else info
        tp = base
    ok = tp in _SCALARS or (isinstance(tp, type) and issubclass(tp, enum.Enum)) or (
        typing.get_origin(tp) is Literal and all(isinstance(v, str) for v in typing.get_args(tp))
    )
    if not ok:
        raise ConfigError(f"templates.{command}.{arg}", f"type {tp!r} is not supported; use str, int, float, "
                          "bool, a Literal of strings or a string Enum (optionally Annotated with Field)")
    return tp, info


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(v) for v in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(repr(m.value) for m in tp)
    return {str: "text", int: "integer", float: "number", bool: "true/false"}[tp]


class ParsedCommand(BaseModel):
    """What the skill answers.

    Attributes:
        status: ``"command"`` (ready to run) or ``"needs_argument"`` (ask the user).
        command: the template's name.
        arguments: the arguments found in the text, validated against the
            template (plus declared defaults of optional arguments not given).
        missing: required arguments not found (empty when ``status="command"``).
        question: what to ask the user for the missing arguments.
    """

    status: Literal["command", "needs_argument"]
    command: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)
    question: str | None = None


_NUMBER = re.compile(r"(?<![\d.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\d.])\.\d+")
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split()
)} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
      "hundred": 100, "thousand": 1000, "dozen": 12}


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", s.casefold()).split())


def _numbers(text: str) -> set[float]:
    found = {float(m.group().replace(",", "")) for m in _NUMBER.finditer(text)}
    found |= {abs(n) for n in found}  # "5-10 minutes" holds 10, not only -10
    return found | {float(_WORDS[w]) for w in _norm(text).split() if w in _WORDS}


def value_in_text(value: Any, text: str) -> bool:
    """Whether ``value`` occurs in (or is read directly from) ``text``.

    Numbers must be written in the text (digits, with or without thousands
    separators, or a number word up to twenty and the tens); strings and choices
    must appear as words (case and punctuation ignored; a plural ``s`` allowed).
    Booleans are a yes/no reading of the request and always pass.
    """
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return any(abs(float(value) - n) < 1e-9 for n in _numbers(text))
    if isinstance(value, enum.Enum):
        value = value.value
    if not isinstance(value, str):
        return False
    needle, hay = _norm(value), _norm(text)
    if not needle:
        return False
    variants = {needle, needle.replace("_", " ")}
    return any(re.search(rf"(?<!\w){re.escape(v)}(?:s|es)?(?!\w)", hay) for v in variants)


_STOPWORDS = frozenset("a an the to of on in for and or with from by at my me your it this that".split())


def grounded(t: CommandTemplate, values: Mapping[str, Any], text: str) -> bool:
    """Whether anything in ``text`` points to command ``t``: one of its words (name,
    description, keywords; a word matches its inflections, e.g. send/sending) or one
    of the argument values the model read (booleans do not count)."""
    if any(v is not None and not isinstance(v, bool) and value_in_text(v, text) for v in values.values()):
        return True
    words = {w for w in _norm(" ".join([t.name.replace("_", " "), t.description, *t.keywords])).split()
             if len(w) >= 3 and w not in _STOPWORDS}
    said = [w for w in _norm(text).split() if len(w) >= 3]
    return any(s == w or (len(w) >= 4 and s.startswith(w)) or (len(s) >= 4 and w.startswith(s)) for w in words for s in said)


def _branch(t: CommandTemplate) -> type[BaseModel]:
    fields: dict[str, Any] = {"command": (Literal[t.name], Field(description=t.description))}  # type: ignore[valid-type]
    for arg, (tp, info) in t.specs.items():
        fields[arg] = (tp | None, Field(description=info.description or None))
    return create_model(f"{t.name}_call", **fields)


_NoCommand = create_model("no_command", command=(Literal["none"], Field(description="no declared command fits")))


def _reply_type(templates: Sequence[CommandTemplate]) -> type[BaseModel]:
    branches = tuple(_branch(t) for t in templates) + (_NoCommand,)
    union = Annotated[Union[branches], Field(discriminator="command")]  # type: ignore[valid-type]
    return RootModel[union]  # type: ignore[valid-type,return-value]


def _question(t: CommandTemplate, missing: list[str]) -> str:
    if len(missing) == 1 and missing[0] in t.questions:
        return t.questions[missing[0]]
    labels = []
    for arg in missing:
        desc = t.specs[arg][1].description
        labels.append(f"the {arg.replace('_', ' ')}" + (f" ({desc})" if desc else ""))
    listing = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
    return f"To {t.description.rstrip('.')}, I need {listing}. What should {'it' if len(labels) == 1 else 'they'} be?"


def resolve(t: CommandTemplate, values: Mapping[str, Any], text: str) -> ParsedCommand:
    """Keep the values that occur in ``text`` and validate against the template;
    what is left out or invalid is missing (required) or takes its default."""
    arguments: dict[str, Any] = {}
    missing: list[str] = []
    for arg, (tp, info) in t.specs.items():
        value = values.get(arg)
        if value is not None and value_in_text(value, text):
            try:
                arguments[arg] = TypeAdapter(Annotated[tp, info]).validate_python(value)
                continue
            except ValidationError:
                pass
        if info.default is not PydanticUndefined and info.default is not None:
            arguments[arg] = info.default
        elif t.is_required(arg):
            missing.append(arg)
    dumped = {k: TypeAdapter(Any).dump_python(v, mode="json") for k, v in arguments.items()}
    if missing:
        return ParsedCommand(status="needs_argument", command=t.name, arguments=dumped, missing=missing,
                             question=_question(t, missing))
    return ParsedCommand(status="command", command=t.name, arguments=dumped)


def _render(out: ParsedCommand) -> str:
    if out.status == "needs_argument":
        return f"needs_argument: {out.command} is missing {', '.join(out.missing)}. {out.question}"
    args = ", ".join(f"{k}={v!r}" for k, v in out.arguments.items())
    return f"command: {out.command}({args})"


def parse_command_skill(
    templates: Sequence[CommandTemplate],
    *,
    model: str = "small",
    min_confidence: float | None = 0.6,
    max_repairs: int = 1,
) -> Skill:
    """Turn a free-text command into one of ``templates`` with typed arguments.

    Output: :class:`ParsedCommand` (``status`` says ``command`` or
    ``needs_argument``). A request no template fits, or a command the request
    does not point to (:func:`grounded`), is :class:`Rejected` with ``none_fits``
    and escalates. Argument values must occur in the request text
    (:func:`value_in_text`); a value the model invented counts as missing.

    Args:
        templates: the declared commands; names must be unique.
        model: binding key of the model.
        min_confidence: reject (escalate) below this confidence in the chosen
            command; measured by token logprobs or by agreement among samples.
        max_repairs: re-asks after a reply that does not fit the schema.
    """
    if not templates:
        raise ConfigError("templates", "parse_command needs at least one command template")
    by_name = {t.name: t for t in templates}
    if len(by_name) != len(templates):
        raise ConfigError("templates", "two command templates share a name")
    listing = "\n".join(f"- {t.signature()}: {t.description}" for t in templates)
    chooser = Skill(
        name="parse_command",
        description="turn a command into one of the declared commands",
        instructions=(
            "You turn a user's command into one of these commands:\n"
            f"{listing}\n"
            "Fill each argument with the value written in the command. If the command does "
            "not say a value, use null; never guess one. If no command fits, answer "
            '{"command": "none"}.'
        ),
        output_type=_reply_type(templates),
        acceptance=AcceptancePolicy(
            max_repairs=max_repairs, min_confidence=min_confidence, agree_on=lambda o: o.root.command
        ),
        model=model,
    )

    async def runner(skill: Skill, data: BaseModel, ctx: Any, node: str) -> Accepted | Rejected:
        sub = chooser if skill.model == chooser.model else chooser.clone(model=skill.model)
        out = await run_skill(sub, data, ctx, node=node)
        if isinstance(out, Rejected):
            return out
        reply = out.output.root
        if reply.command == "none":
            return Rejected(EscalationReason.NONE_FITS,
                            f"no declared command fits the request (known: {', '.join(by_name)})",
                            reply.model_dump(mode="json"), out.attempts, out.confidence)
        values = reply.model_dump(exclude={"command"})
        template, text = by_name[reply.command], data.text  # type: ignore[attr-defined]
        if not grounded(template, values, text):
            return Rejected(EscalationReason.NONE_FITS,
                            f"the model chose {template.name!r}, but nothing in the request points to it "
                            f"(none of its words or argument values occurs); known: {', '.join(by_name)}",
                            reply.model_dump(mode="json"), out.attempts, out.confidence)
        return Accepted(resolve(template, values, text), out.confidence, out.attempts)

    return Skill(
        name="parse_command",
        description="turn a free-text command (" + ", ".join(by_name) + ") into a declared command with typed arguments",
        instructions=chooser.instructions,
        output_type=ParsedCommand,
        acceptance=chooser.acceptance,
        model=model,
        runner=runner,
        render=_render,
    )
