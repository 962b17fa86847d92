"""The escalation agent: a large model that finishes what the small models could not.

It sees the request, the specialist's draft and why the request escalated. Each
step it either gives the final answer or calls one of the graph's skills as a tool,
so a multi-step task can be split into pieces the small models handle. Which
skills it may call is fixed by the graph's policy: a name outside that list, from
the model or from text inside the request, is refused and never executed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._context import RunContext
from .._errors import ConfigError, InvalidModelOutputError, StepLimitError
from ..models._base import Message, ModelSettings
from ..skills._run import run_skill
from ..skills._skill import Accepted, Skill

__all__ = ["EscalationAgent", "EscalationResult", "ToolCall"]

_INSTRUCTIONS = (
    "You are the expert fallback of a system of small specialist models. A request "
    "reached you because the specialists could not answer it confidently. Answer it "
    "correctly and concisely. You may call a specialist skill as a tool to do part of "
    "the work; each call returns its result. When you know the answer, give it."
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    skill: str
    input: Any
    result: Any
    accepted: bool


@dataclass(slots=True)
class EscalationResult:
    answer: str
    steps: int
    tool_calls: list[ToolCall] = field(default_factory=list)


class EscalationAgent:
    """A bounded tool-using loop on the large model.

    Args:
        model: binding key of the large model.
        max_steps: model calls allowed before :class:`~slmgraph.StepLimitError`.
        tools: names of the skills the agent may call; ``None`` allows all of the
            graph's skills, ``()`` none.
        instructions: replaces the default system prompt.
    """

    def __init__(
        self,
        model: str = "large",
        *,
        max_steps: int = 4,
        tools: Sequence[str] | None = None,
        instructions: str = _INSTRUCTIONS,
    ) -> None:
        if max_steps < 1:
            raise ConfigError("escalation.max_steps", "must be >= 1")
        self.model = model
        self.max_steps = max_steps
        self.tools = None if tools is None else tuple(tools)
        self.instructions = instructions

    def allowed(self, skills: Mapping[str, Skill]) -> list[str]:
        names = list(skills) if self.tools is None else [t for t in self.tools if t in skills]
        return names

    def _schema(self, tools: list[str]) -> dict[str, Any]:
        props: dict[str, Any] = {
            "action": {"type": "string", "enum": ["final", "call_skill"] if tools else ["final"]},
            "answer": {"type": "string"},
        }
        if tools:
            props["skill"] = {"type": "string", "enum": tools}
            props["input"] = {"type": "string"}
        return {"type": "object", "properties": props, "required": ["action"]}

    def _system(self, skills: Mapping[str, Skill], tools: list[str]) -> str:
        lines = [self.instructions, ""]
        if tools:
            lines.append("Skills you may call (input is the text or JSON the skill takes):")
            lines += [f"- {n}: {skills[n].description}" for n in tools]
            lines.append(
                'Reply with JSON: {"action": "call_skill", "skill": "<name>", "input": "<text>"} '
                'or {"action": "final", "answer": "<your answer>"}.'
            )
        else:
            lines.append('Reply with JSON: {"action": "final", "answer": "<your answer>"}.')
        return "\n".join(lines)

    async def run(
        self,
        request: str,
        *,
        draft: Any,
        reason: str,
        detail: str,
        skills: Mapping[str, Skill],
        ctx: RunContext,
    ) -> EscalationResult:
        """Answer ``request``; raises :class:`~slmgraph.StepLimitError` when out of steps."""
        tools = self.allowed(skills)
        schema = self._schema(tools)
        brief = {"request": request, "escalation_reason": reason, "detail": detail, "specialist_draft": draft}
        messages = [
            Message("system", self._system(skills, tools)),
            Message("user", json.dumps(brief, default=str, ensure_ascii=False)),
        ]
        calls: list[ToolCall] = []
        for step in range(1, self.max_steps + 1):
            reply = await ctx.call(
                self.model, messages, node="escalation", schema=schema,
                settings=ModelSettings(temperature=0.0), reason=reason,
            )
            try:
                action = reply.value()
            except InvalidModelOutputError:
                # A model without JSON output answered in plain text: that is the answer.
                return EscalationResult(reply.text, step, calls)
            kind = action.get("action") if isinstance(action, dict) else None
            answer = action.get("answer") if isinstance(action, dict) else None
            if kind == "final" and isinstance(answer, str) and answer.strip():
                return EscalationResult(answer, step, calls)
            if kind != "call_skill":
                messages.append(Message("assistant", reply.text))
                messages.append(Message("user", "That reply is invalid: give a non-empty \"answer\" with "
                                        '"action": "final", or call a skill with "action": "call_skill".'))
                continue
            name, arg = str(action.get("skill", "")), action.get("input", "")
            messages.append(Message("assistant", reply.text))
            if name not in tools:
                messages.append(Message("user", f"Skill {name!r} is not available. Available: {', '.join(tools)}."))
                continue
            seen = _same_call(calls, name, arg)
            if seen is not None:
                # A looping model repeats a call: answer from the first run, never re-execute.
                messages.append(Message("user", f"You already called {name} with this input. Its result: "
                                        f"{json.dumps(seen.result, ensure_ascii=False, default=str)}. "
                                        "Do not repeat a call; give the final answer."))
                continue
            outcome = await run_skill(skills[name], arg if isinstance(arg, (str, dict)) else json.dumps(arg), ctx, node="escalation.tool")
            if isinstance(outcome, Accepted):
                result: Any = outcome.output.model_dump(mode="json")
                note = f"Result of {name}: {json.dumps(result, ensure_ascii=False)}"
            else:
                result = {"rejected": outcome.reason.value, "detail": outcome.detail, "draft": outcome.draft}
                note = f"{name} could not answer ({outcome.reason.value}): {outcome.detail}"
            calls.append(ToolCall(name, arg, result, isinstance(outcome, Accepted)))
            messages.append(Message("user", note))
        exc = StepLimitError(self.max_steps)
        exc.tool_calls = calls  # kept in the graph state with the failed escalation
        raise exc


def _same_call(calls: list[ToolCall], name: str, arg: Any) -> ToolCall | None:
    for call in calls:
        if call.skill == name and call.input == arg:
            return call
    return None
