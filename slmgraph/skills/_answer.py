"""The ``answer`` skill: a chat assistant with conversation memory that hands
multi-step reasoning to the large model.

Small models answer simple questions well and word problems badly. Two signals
decide that a question needs reasoning: a deterministic detector over the text
(:func:`detect_reasoning`: several quantities plus arithmetic or word-problem cues,
"how many ... if ...", chained conditions), which escalates before any model call,
and the model's own ``needs_reasoning`` flag, which by default escalates only when
the detector sees some evidence short of firing (two quantities and an arithmetic
word or a condition), so a weak model's stray flag never sends
"what is the capital of France?" to the large model). How far the flag is trusted
is a parameter of :func:`answer_skill`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from .._context import DEFAULT_REPLY_RESERVE, RunContext
from .._errors import ConfigError
from ..models._base import Message
from ._run import run_skill, skill_messages
from ._skill import AcceptancePolicy, Accepted, EscalationReason, Example, Rejected, Skill, TextInput

__all__ = ["AnswerOutput", "ReasoningSignal", "answer_skill", "detect_reasoning"]


class AnswerOutput(BaseModel):
    """The assistant's turn."""

    reply: str = Field(description="the reply to the user; short and direct")
    needs_reasoning: bool = Field(
        default=False,
        description="true only for a word problem or a question that takes several steps of calculation or logic",
    )


# -- the deterministic detector -------------------------------------------------------

_NUMBER_WORDS = (
    "two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand million billion dozen dozens half halves twice thrice double doubles doubled triple "
    "tripled quadruple third thirds quarter quarters fourth fourths fifth fifths tenth"
).split()
_QUANTITY = re.compile(
    r"(?<![\w.])[$€£]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)\s*%?"
    r"|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b"
    r"|\b(?:one|a)[- ](?:half|third|quarter|fourth|fifth)\b",
    re.IGNORECASE,
)
_ASKS_QUANTITY = re.compile(
    r"\bhow (?:many|much|long|far|old|fast|often|tall|heavy|big)\b"
    r"|\bwhat(?:'s| is| was| were| will be| would be)\b[^.?!]{0,40}\b(?:total|sum|difference|average|percent(?:age)?|"
    r"ratio|number|amount|cost|price|profit|value|age|probability|speed|distance|measure|mean|score|"
    r"temperature|area|perimeter|floor|weight|length|width|height|time)\b"
    r"|\bwhat (?:percent(?:age)?|fraction|proportion)\b"
    r"|\b(?:calculate|compute|determine|work out|figure out)\b|\bfind (?:her|his|their|its) \w+"
    r"|\bfind (?:the|how|out)\b",
    re.IGNORECASE,
)
_ARITHMETIC_CUES = re.compile(
    r"\b(?:each|per|every|total|totals|remaining|remainder|left|rest|more than|fewer|less than|times|"
    r"twice|thrice|half|percent|average|profit|discount|split|share|altogether|in all|combined|"
    r"together|increase[sd]?|decrease[sd]?|cost[s]?|spen[dt]|spends|earn(?:s|ed)?|pa(?:y|ys|id)|"
    r"sell(?:s)?|sold|b(?:uy|uys|ought)|salary|rate|ratio|older|younger|faster|slower|equally|"
    r"hour[s]?|minute[s]?|week[s]?|day[s]?|month[s]?|year[s]?|dollar[s]?|cent[s]?|mile[s]?)\b|%",
    re.IGNORECASE,
)
_CONDITION = re.compile(r"\b(?:if|when|after|then|until|assuming|suppose|given that)\b", re.IGNORECASE)
_EXPLICIT = re.compile(
    r"\b(?:step[- ]by[- ]step|show (?:your|the) work|prove that|solve (?:for|this|the)|word problem|"
    r"how did you get)\b",
    re.IGNORECASE,
)
_EXPRESSION = re.compile(r"\d\s*[-+*/x×÷^]\s*\(?\s*\d[^=?]*[-+*/×÷^]\s*\(?\s*\d")
_SENTENCE = re.compile(r"[.?!;]+(?:\s|$)")


@dataclass(frozen=True, slots=True)
class ReasoningSignal:
    """What the detector saw in a question.

    Attributes:
        needs_reasoning: the question looks like a multi-step problem.
        evidence: some sign of arithmetic short of that (two quantities and an
            arithmetic word, a condition or a question about a quantity).
        quantities: numbers and number words in the text ("12", "$3.50", "twice").
        cues: the features that fired, for the escalation detail.
    """

    needs_reasoning: bool
    evidence: bool
    quantities: int
    cues: tuple[str, ...]


def detect_reasoning(text: str) -> ReasoningSignal:
    """Decide, without a model, whether ``text`` is a multi-step reasoning problem.

    It fires on a question that asks for a quantity and gives at least two;
    on three or more quantities with arithmetic vocabulary across several
    sentences; on two quantities with a condition ("if", "after") and arithmetic
    vocabulary; on an arithmetic expression with two or more operators; and on
    an explicit request to reason step by step about numbers.
    """
    quantities = len(_QUANTITY.findall(text))
    asks = bool(_ASKS_QUANTITY.search(text))
    arithmetic = len(_ARITHMETIC_CUES.findall(text))
    conditions = len(_CONDITION.findall(text))
    sentences = max(1, len(_SENTENCE.findall(text.strip())))
    cues: list[str] = [f"{quantities} quantities"] if quantities else []
    if asks:
        cues.append("asks for a quantity")
    if arithmetic:
        cues.append(f"{arithmetic} arithmetic words")
    if conditions:
        cues.append("a condition")
    if sentences > 1:
        cues.append(f"{sentences} sentences")
    fires = (
        (asks and quantities >= 2 and (arithmetic >= 1 or conditions >= 1 or sentences >= 2))
        or (quantities >= 3 and sentences >= 2 and (arithmetic >= 1 or conditions >= 1))
        or (quantities >= 2 and conditions >= 1 and arithmetic >= 2)
        or bool(_EXPRESSION.search(text))
        or (bool(_EXPLICIT.search(text)) and quantities >= 1)
    )
    if _EXPRESSION.search(text):
        cues.append("an arithmetic expression")
    if _EXPLICIT.search(text):
        cues.append("asks for explicit reasoning")
    evidence = fires or (quantities >= 2 and (asks or arithmetic >= 1 or conditions >= 1))
    return ReasoningSignal(fires, evidence, quantities, tuple(cues))


# -- the skill ------------------------------------------------------------------------

_INSTRUCTIONS = (
    "You are a friendly, concise assistant. Answer the user's last message in one to "
    "three sentences, using the earlier conversation when it matters. Set "
    "needs_reasoning to true only when the question is a word problem that needs "
    "several steps of calculation or logic."
)

_EXAMPLES = (
    Example("What is the capital of Italy?", AnswerOutput(reply="The capital of Italy is Rome.")),
    Example("How many days are in a week?", AnswerOutput(reply="A week has 7 days.")),
)

#: Tokens kept free for one repair turn when fitting the history into the window.
_REPAIR_ROOM = 96


def _check(_: TextInput, out: AnswerOutput) -> str | None:
    return None if out.reply.strip() else "the reply is empty; write a short answer"


def _fit_history(skill: Skill, data: TextInput, ctx: RunContext) -> tuple[Message, ...]:
    """The most recent turns of the thread that fit the model's window, leaving room
    for the reply and one repair."""
    model = ctx.model(skill.model)
    history = list(ctx.history)

    def size(turns: list[Message]) -> int:
        return sum(model.count_tokens(m.content) + 4 for m in skill_messages(skill, data, turns))

    limit = model.context_window - 2 * DEFAULT_REPLY_RESERVE - _REPAIR_ROOM
    while history and size(history) > limit:
        history = history[1:]
        while history and history[0].role != "user":  # a conversation starts with the user
            history = history[1:]
    return tuple(history)


ModelFlag = Literal["never", "with_evidence", "always"]


def _runner(model_flag: ModelFlag):
    async def run(skill: Skill, data: TextInput, ctx: RunContext, node: str) -> Accepted | Rejected:
        signal = detect_reasoning(data.text)
        if signal.needs_reasoning:
            return Rejected(
                EscalationReason.FAILED_CHECK,
                f"the question needs multi-step reasoning ({', '.join(signal.cues)})",
                {"needs_reasoning": True, "detector": list(signal.cues)},
                0,
            )
        inner = skill.clone(runner=None)
        scoped = dataclasses.replace(ctx, history=_fit_history(inner, data, ctx))
        outcome = await run_skill(inner, data, scoped, node=node)
        trusted = model_flag == "always" or (model_flag == "with_evidence" and signal.evidence)
        if isinstance(outcome, Accepted) and outcome.output.needs_reasoning and trusted:
            return Rejected(
                EscalationReason.FAILED_CHECK,
                "the model flagged the question as needing multi-step reasoning"
                + (f" ({', '.join(signal.cues)})" if signal.cues else ""),
                outcome.output.model_dump(mode="json"),
                outcome.attempts,
                outcome.confidence,
            )
        return outcome

    return run


def answer_skill(*, model: str = "small", max_repairs: int = 1, model_flag: ModelFlag = "with_evidence") -> Skill:
    """A chat assistant turn with the thread's memory.

    Simple questions are answered by the small model; word problems and other
    multi-step reasoning escalate (reason ``failed_check``, the detector's cues in
    the detail). The run's answer is the reply text. Older turns are dropped when
    the conversation no longer fits the model's context window.

    Args:
        model: binding key of the model that answers.
        max_repairs: re-asks after invalid output or an empty reply.
        model_flag: when the model's own ``needs_reasoning`` flag escalates:
            ``"with_evidence"`` (default) only when the detector sees some sign of
            arithmetic (tiny models such as SmolLM2-135M set the flag on most
            questions that hold a number); ``"always"`` for small models whose flag
            can be trusted on its own (it then also catches logic puzzles without
            numbers); ``"never"`` to rely on the detector alone.
    """
    if model_flag not in ("never", "with_evidence", "always"):
        raise ConfigError("answer.model_flag", f"must be never, with_evidence or always, not {model_flag!r}")
    return Skill(
        name="answer",
        description="answer a question or chat message from the user, keeping the conversation in mind",
        instructions=_INSTRUCTIONS,
        output_type=AnswerOutput,
        examples=_EXAMPLES,
        acceptance=AcceptancePolicy(max_repairs=max_repairs, check=_check),
        model=model,
        runner=_runner(model_flag),
        memory=True,
        render=lambda o: o.reply,
    )
