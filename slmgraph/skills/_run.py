"""Running a skill on its small model: prompt, validate, repair, measure confidence, check."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from .._context import RunContext
from .._errors import InvalidModelOutputError, RequestTooLargeError, UserError
from .._untrusted import mark_clean
from ..models._base import Message, ModelReply, ModelSettings
from ._skill import DEFAULT_MIN_CONFIDENCE, Accepted, EscalationReason, Rejected, Skill, TextInput

__all__ = ["run_skill", "skill_messages"]


def _as_text(value: BaseModel | str) -> str:
    if isinstance(value, str):
        return value
    fields = type(value).model_fields
    if len(fields) == 1:
        (only,) = fields
        inner = getattr(value, only)
        if isinstance(inner, str):
            return inner
    return value.model_dump_json()


def skill_messages(skill: Skill, data: BaseModel, history: Sequence[Message] = ()) -> list[Message]:
    """The prompt for one run: instructions, schema, few-shot turns, the thread's
    earlier turns (for skills with ``memory``), then the input."""
    return _messages(skill, _as_text(data), history)


def _messages(skill: Skill, text: str, history: Sequence[Message]) -> list[Message]:
    messages = list(_head(skill))
    if skill.memory:
        messages.extend(history)
    messages.append(Message("user", text))
    return messages


def _head(skill: Skill) -> tuple[Message, ...]:
    """The prompt's fixed head (instructions with the schema, then the few-shot
    turns), the same for every run of ``skill``: built once."""
    head = skill._prepared.get("head")
    if head is None:
        system = (
            f"{skill.instructions.strip()}\n\nReply with one JSON object matching this JSON schema:\n"
            f"{skill.output_schema_json()}"
        )
        turns = [Message("system", system)]
        for ex in skill.examples:
            turns.append(Message("user", _as_text(ex.input)))
            turns.append(Message("assistant", ex.output.model_dump_json()))
        head = skill._prepared["head"] = tuple(turns)
        for turn in head:
            mark_clean(turn.content)
    return head


def _settings(skill: Skill) -> ModelSettings:
    """The first call's settings (greedy; logprobs when a confidence bar may apply)."""
    settings = skill._prepared.get("settings")
    if settings is None:
        want_logprobs = skill.acceptance.min_confidence is not None
        settings = skill._prepared["settings"] = ModelSettings(
            temperature=0.0, max_tokens=skill.max_tokens, logprobs=want_logprobs,
            top_logprobs=1 if want_logprobs else None,
        )  # fmt: skip
    return settings


async def run_skill(
    skill: Skill,
    request: str | dict | BaseModel,
    ctx: RunContext,
    *,
    node: str = "specialist",
) -> Accepted | Rejected:
    """Run ``skill`` on its bound model and apply its acceptance policy.

    Returns:
        :class:`Accepted` with the typed output, or :class:`Rejected` with the reason
        and the draft. Transport failures (:class:`~slmgraph.ModelError` other than
        invalid output) propagate.
    """
    policy = skill.acceptance
    data: BaseModel | None = None
    if skill.input_type is TextInput and isinstance(request, str) and skill.runner is None:
        text = request  # TextInput(text=request), as the prompt shows it; built only for a check
    else:
        try:
            data = skill.parse_input(request)
        except (ValidationError, ValueError) as exc:
            if isinstance(exc, ValidationError) and (err := skill.shape_error(request, exc)) is not None:
                # The caller's mistake, not the model's: the large model has the same input type.
                raise err from None
            # The problems without the input: the detail is checkpointed and may be logged.
            problem = _problems(exc) if isinstance(exc, ValidationError) else type(exc).__name__
            # No draft: the request is already in the state, a second copy would only spread it.
            return Rejected(EscalationReason.BAD_INPUT, f"the request does not fit {skill.input_type.__name__}: {problem}", None, 0)
        if skill.runner is not None:
            return await skill.runner(skill, data, ctx, node)
        text = _as_text(data)
    messages = _messages(skill, text, ctx.history)
    settings = _settings(skill)
    schema = skill.output_schema()
    draft: Any = None
    reason, detail = EscalationReason.INVALID_OUTPUT, ""
    for attempt in range(1, policy.max_repairs + 2):
        try:
            reply = await ctx.call(skill.model, messages, node=node, skill=skill.name, schema=schema, settings=settings)
        except RequestTooLargeError as exc:
            if attempt == 1:
                raise
            # The request fit; the repair turns made the prompt too long. Escalate.
            return Rejected(reason, f"{detail}; no room left to repair ({exc})", draft, attempt - 1)
        except InvalidModelOutputError as exc:  # a backend that rejects its own reply
            draft = draft if draft is not None else exc.text
            reason, detail = EscalationReason.INVALID_OUTPUT, str(exc)
            continue
        try:
            value = reply.value()
            draft = value
            output = skill.parse_output(value, reply.text)
        except InvalidModelOutputError as exc:
            draft = draft if draft is not None else reply.text
            cut = " It was cut off at the token limit; be shorter." if reply.finish_reason == "length" else ""
            reason, detail = EscalationReason.INVALID_OUTPUT, f"{exc}{cut}"
            messages = _repair(messages, reply, f"That reply is invalid: {exc}.{cut}")
            continue
        if policy.check is not None and (
            problem := _checked(skill, policy.check(data if data is not None else TextInput.model_construct(text=text), output))
        ):
            reason, detail = EscalationReason.FAILED_CHECK, str(problem)
            messages = _repair(messages, reply, f"That reply fails a check: {problem}.")
            continue
        if reply.logprobs:
            confidence = reply.confidence()
        elif policy.min_confidence in (None, "auto") or policy.samples <= 1:
            confidence = None  # nothing measured, and no samples wanted
        else:
            confidence = await _confidence(skill, messages, reply, output, ctx, node)
        bar = _bar(policy.min_confidence, confidence)
        if bar is not None and (confidence is None or confidence < bar):
            why = (
                f"confidence {confidence:.2f} is below the threshold {bar:.2f}"
                if confidence is not None
                else "confidence cannot be measured: the model gives no logprobs and samples=1; "
                "set AcceptancePolicy(samples=3) or use a backend with logprobs"
            )
            return Rejected(EscalationReason.LOW_CONFIDENCE, why, output.model_dump(mode="json"), attempt, confidence)
        return Accepted(output, confidence, attempt)
    return Rejected(reason, detail, draft, policy.max_repairs + 1)


def _checked(skill: Skill, verdict: object) -> str | None:
    """A check's verdict: ``None`` (or ``""``) accepts, a ``str`` is the reason to reject.
    Anything else (``True`` for "fine", a number) is ambiguous and refused."""
    if verdict is None or isinstance(verdict, str):
        return verdict or None
    raise UserError(
        f"the acceptance check of skill {skill.name!r} returned {verdict!r} "
        f"({type(verdict).__name__}); return None to accept the answer or a str saying why it is wrong"
    )


def _bar(min_confidence: float | str | None, confidence: float | None) -> float | None:
    """The bar a reply must clear: ``"auto"`` is the default bar when a confidence
    was measured and no bar otherwise."""
    if min_confidence == "auto":
        return DEFAULT_MIN_CONFIDENCE if confidence is not None else None
    return min_confidence  # type: ignore[return-value]


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)
    )


def _repair(messages: list[Message], reply: ModelReply, problem: str) -> list[Message]:
    return [
        *messages,
        Message("assistant", reply.text),
        Message("user", f"{problem} Reply again with only the corrected JSON object."),
    ]


async def _confidence(
    skill: Skill, messages: list[Message], first: ModelReply, output: BaseModel, ctx: RunContext, node: str
) -> float | None:
    """Token-probability confidence when the backend gave logprobs; otherwise the
    share of samples (the first answer included) that agree with the first answer."""
    policy = skill.acceptance
    if first.logprobs:
        return first.confidence()
    if policy.min_confidence in (None, "auto") or policy.samples <= 1:
        return None
    key = policy.agree_on or (lambda o: json.dumps(o.model_dump(mode="json"), sort_keys=True))
    votes = Counter([key(output)])
    settings = ModelSettings(temperature=policy.sample_temperature, max_tokens=skill.max_tokens)
    for _ in range(policy.samples - 1):
        reply = await ctx.call(skill.model, messages, node=node, skill=skill.name, schema=skill.output_schema(), settings=settings)
        try:
            votes[key(skill.parse_output(reply.value(), reply.text))] += 1
        except InvalidModelOutputError:
            continue
    return votes[key(output)] / policy.samples
