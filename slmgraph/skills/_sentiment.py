"""sentiment_batch: sentiment and aspect of many texts, with counts over the batch.

The texts go to the small model a few at a time (never more than fits its context
window); each batch is drawn ``samples`` times and a text's confidence is the share
of draws that give its first label. Texts below ``min_confidence`` (or without a
valid answer) are reported as unsure; when more than ``max_unsure_share`` of the
batch is unsure, the skill escalates with the whole report as its draft.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from .._context import RunContext
from .._errors import ConfigError
from ._skill import AcceptancePolicy, Accepted, EscalationReason, Example, Rejected, Skill, TextInput
from ._transactions import batch_output_type, refs_check, reply_budget, run_in_batches

__all__ = ["sentiment_batch_skill", "SentimentReport", "TextSentiment", "parse_texts", "render_sentiment_report"]

Label = Literal["positive", "neutral", "negative"]
LABELS: tuple[str, ...] = ("positive", "neutral", "negative")
#: The aspect given to a text that is about none of the listed aspects.
GENERAL = "general"


class TextSentiment(BaseModel):
    """One text's result; ``item`` is its 1-based position in the batch."""

    item: int
    text: str = Field(description="the text, cut to 120 characters")
    label: Label | None = Field(None, description="None when the model gave no valid answer")
    aspect: str | None = None
    confidence: float | None = Field(None, description="share of samples giving the same label")
    unsure: bool = False
    clipped: bool = Field(False, description="the text was cut before the model saw it")
    problem: str | None = None


class SentimentReport(BaseModel):
    """Per-text results and the counts over the batch."""

    items: list[TextSentiment]
    counts: dict[str, int] = Field(description="texts per label (unanswered texts are not counted)")
    by_aspect: dict[str, dict[str, int]] = Field(description="aspect -> label -> texts")
    unsure: list[int] = Field(description="items below the confidence threshold or without an answer")
    unsure_share: float
    batches: int


def parse_texts(request: str) -> list[str]:
    """A batch as a JSON list (of strings, or of objects with a ``text`` field), or
    one text per non-empty line."""
    body = request.strip()
    if body.startswith("["):
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list):
            texts = [v.get("text", "") if isinstance(v, dict) else v for v in value]
            return [str(t).strip() for t in texts if isinstance(t, str | int | float) and str(t).strip()]
    return [line.strip() for line in body.splitlines() if line.strip()]


def _item_fields(aspects: Sequence[str] | None) -> dict[str, Any]:
    if aspects:
        aspect_type: Any = Literal[tuple(dict.fromkeys([*aspects, GENERAL]))]
        aspect = (aspect_type, Field(description=f"the aspect the text is mostly about, or {GENERAL}"))
    else:
        aspect = (str, Field(max_length=40, description="what the text is mostly about, in one to three words"))
    return {"label": (Label, Field(description="positive, neutral or negative")), "aspect": aspect}


def _instructions(aspects: Sequence[str] | None) -> str:
    what = (f"the aspect it is mostly about, one of: {', '.join(aspects)} (or {GENERAL} if none fits)"
            if aspects else "the aspect it is mostly about, in one to three words (e.g. delivery, price, staff)")
    return ("You analyse customer feedback. For each numbered text (r1, r2, ...) give the sentiment the writer "
            f"expresses (positive, neutral or negative) and {what}. Answer once for every text, by its ref.")


_HEADER = "Texts:"
#: Reply tokens allowed per text: keys, label and an aspect of at most 40 characters.
_REPLY_PER_TEXT = 40


def _example(aspects: Sequence[str] | None, fields: dict[str, Any]) -> Example:
    first, second = ("price", "delivery") if not aspects else (aspects[0], aspects[-1])
    out = batch_output_type("Sentiment", 2, fields).model_validate({"items": [
        {"ref": "r1", "label": "negative", "aspect": first},
        {"ref": "r2", "label": "positive", "aspect": second},
    ]})
    text = (f"{_HEADER}\nr1: Far too expensive for what you get, the {first} put me off.\n"
            f"r2: Really happy with the {second}, great job!")
    return Example(text, out)


def sentiment_batch_skill(
    *,
    aspects: Sequence[str] | None = None,
    model: str = "small",
    batch_texts: int = 5,
    samples: int = 3,
    sample_temperature: float = 0.8,
    min_confidence: float = 0.6,
    max_unsure_share: float = 0.25,
    max_chars: int = 500,
    name: str = "sentiment_batch",
) -> Skill:
    """Label many texts positive, neutral or negative, each with an aspect and a
    confidence, and count the labels over the batch and per aspect.

    The request is a JSON list of texts or one text per line. Texts longer than
    ``max_chars`` are cut (``clipped``) before the model sees them.

    Args:
        aspects: the aspect list the answer must come from (plus ``"general"``);
            ``None`` lets the model name the aspect in a few words.
        batch_texts: most texts per model call.
        samples: draws per batch for the confidence measure. With 1, a text's
            confidence is the batch reply's token-probability confidence when the
            backend gives logprobs, else ``None`` (not counted as unsure).
        min_confidence: texts below it are reported as unsure.
        max_unsure_share: escalate when more than this share of the texts is unsure
            (default 0.25: one text in four).
    """
    if aspects is not None and not [a for a in aspects if a.strip()]:
        raise ConfigError("aspects", "give at least one aspect, or None for free aspects")
    aspects = [a.strip() for a in aspects] if aspects else None
    if not 0.0 <= max_unsure_share <= 1.0 or not 0.0 <= min_confidence <= 1.0:
        raise ConfigError("sentiment_batch", "min_confidence and max_unsure_share must be between 0 and 1")
    if batch_texts < 1 or samples < 1:
        raise ConfigError("sentiment_batch", "batch_texts and samples must be >= 1")
    fields = _item_fields(aspects)
    instructions = _instructions(aspects)
    example = _example(aspects, fields)

    def batch_skill(k: int) -> Skill:
        return Skill(name=name, description="label the sentiment of numbered texts", instructions=instructions,
                     output_type=batch_output_type("Sentiment", k, fields), examples=[example],
                     acceptance=AcceptancePolicy(max_repairs=1, check=refs_check(k)), model=model,
                     max_tokens=reply_budget(_REPLY_PER_TEXT, k))

    async def runner(skill: Skill, data: BaseModel, ctx: RunContext, node: str) -> Accepted | Rejected:
        texts = parse_texts(getattr(data, "text", ""))
        if not texts:
            return Rejected(EscalationReason.BAD_INPUT, "the batch holds no text (give a JSON list or one text per line)", None, 0)
        shown = [" ".join(t.split())[:max_chars] for t in texts]
        results, batches = await run_in_batches(
            batch_skill, shown, ctx, node, header=_HEADER, max_items=batch_texts,
            samples=samples, sample_temperature=sample_temperature, agree_on="label",
        )
        items = []
        for n, (text, result) in enumerate(zip(texts, results), start=1):
            value = result.value or {}
            label, conf = value.get("label"), result.agreement
            aspect = str(value["aspect"]).strip().lower() if value.get("aspect") else None
            unsure = label is None or (conf is not None and conf < min_confidence)
            items.append(TextSentiment(item=n, text=text[:120], label=label, aspect=aspect, confidence=conf,
                                       unsure=unsure, clipped=len(" ".join(text.split())) > max_chars,
                                       problem=result.problem))
        report = _report(items, batches)
        if all(i.label is None for i in items):
            return Rejected(EscalationReason.INVALID_OUTPUT, f"no text got a valid answer: {items[0].problem}",
                            report.model_dump(mode="json"), batches)
        if report.unsure_share > max_unsure_share:
            detail = (f"{len(report.unsure)} of {len(items)} texts ({report.unsure_share:.0%}) are unsure "
                      f"(confidence below {min_confidence:.2f} or no answer); the limit is {max_unsure_share:.0%}")
            return Rejected(EscalationReason.LOW_CONFIDENCE, detail, report.model_dump(mode="json"), batches)
        confidences = [i.confidence for i in items if i.confidence is not None]
        return Accepted(report, min(confidences) if confidences else None, max(1, batches))

    return Skill(
        name=name,
        description="rate the sentiment and aspect of many reviews or comments and count them",
        instructions=instructions,
        output_type=SentimentReport,
        input_type=TextInput,
        model=model,
        runner=runner,
        render=render_sentiment_report,
    )


def _report(items: list[TextSentiment], batches: int) -> SentimentReport:
    counts = Counter(i.label for i in items if i.label is not None)
    by_aspect: dict[str, Counter] = defaultdict(Counter)
    for i in items:
        if i.label is not None:
            by_aspect[i.aspect or GENERAL][i.label] += 1
    unsure = [i.item for i in items if i.unsure]
    return SentimentReport(
        items=items,
        counts={label: counts.get(label, 0) for label in LABELS},
        by_aspect={a: dict(c) for a, c in sorted(by_aspect.items())},
        unsure=unsure,
        unsure_share=len(unsure) / len(items),
        batches=batches,
    )


def render_sentiment_report(report: SentimentReport, *, limit: int = 50) -> str:
    """A plain-text summary: counts, counts per aspect, then each text."""
    out = [f"{len(report.items)} texts: " + ", ".join(f"{n} {label}" for label, n in report.counts.items())
           + f"; {len(report.unsure)} unsure ({report.unsure_share:.0%})"]
    for aspect, counts in report.by_aspect.items():
        out.append(f"  {aspect}: " + ", ".join(f"{n} {label}" for label, n in counts.items()))
    for i in report.items[:limit]:
        conf = f" {i.confidence:.2f}" if i.confidence is not None else ""
        mark = " UNSURE" if i.unsure else ""
        out.append(f"  {i.item}. {i.label or '-'} [{i.aspect or '-'}]{conf}{mark}: {i.text[:70]}")
    if len(report.items) > limit:
        out.append(f"  ... and {len(report.items) - limit} more")
    return "\n".join(out)
