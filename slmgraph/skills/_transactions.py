"""flag_transactions: deterministic rules over a whole transaction log, then a small
model's judgement of the rows the rules picked, in batches that fit its context.

Escalation policy, row by row (escalated rows stay provisionally flagged):

- rules hit and the model says ``suspicious``: **flagged**;
- rules hit with a weak signal and the model says ``benign``: **cleared**;
- the model says ``benign`` against a strong signal: **escalated** (``disagreement``);
- the model says ``unsure``, or its verdict changes across samples (agreement
  below ``min_agreement``): **escalated** (``low_confidence``);
- no valid verdict after the repairs, or the row does not fit the model's context:
  **escalated** (``invalid_output``).

A signal is strong when one hit is strong or two different rules hit the row. The
skill is accepted when no row escalated; otherwise it returns ``Rejected`` with the
full report as its draft, so the graph escalates and nothing is lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from .._context import DEFAULT_REPLY_RESERVE, RunContext
from .._errors import ConfigError, InvalidModelOutputError
from ..models._base import Message, Model, ModelSettings
from ._run import run_skill, skill_messages
from ._skill import AcceptancePolicy, Accepted, Check, EscalationReason, Example, Rejected, Skill, TextInput
from ._transaction_rules import (
    LogFormatError,
    RuleHit,
    Transaction,
    TransactionRules,
    account_profiles,
    apply_rules,
    parse_log,
    signal_strength,
)

__all__ = [
    "flag_transactions_skill",
    "TransactionReport",
    "ReviewedTransaction",
    "RuleFinding",
    "MalformedRow",
    "render_transaction_report",
    "BatchItem",
    "batch_output_type",
    "refs_check",
    "run_in_batches",
    "prompt_tokens",
    "reply_budget",
]

Verdict = Literal["suspicious", "benign", "unsure"]
Status = Literal["flagged", "cleared", "escalated"]
EscalationKind = Literal["invalid_output", "low_confidence", "disagreement"]


class RuleFinding(BaseModel):
    rule: str
    strength: Literal["weak", "strong"]
    reason: str


class ReviewedTransaction(BaseModel):
    """A row the rules picked, with the model's verdict and what became of it."""

    line: int
    id: str
    timestamp: str
    account: str
    payee: str
    amount: float
    currency: str
    country: str
    rules: list[RuleFinding] = Field(description="the rules that picked the row, each with its reason")
    signal: Literal["weak", "strong"]
    verdict: Verdict | None = Field(None, description="the small model's verdict; None if it gave none")
    model_reason: str | None = None
    agreement: float | None = Field(None, description="share of samples giving the same verdict")
    status: Status
    escalation: EscalationKind | None = None
    escalation_detail: str | None = None
    context: str = Field("", description="the account context the model was shown")


class MalformedRow(BaseModel):
    line: int
    reason: str
    text: str


class TransactionReport(BaseModel):
    """The outcome of one review: every rule-picked row is in exactly one list."""

    format: Literal["csv", "jsonl"]
    lines: int = Field(description="data lines read (transactions plus malformed lines)")
    transactions: int
    malformed: list[MalformedRow]
    rule_hits: int = Field(description="rows at least one rule picked")
    judged: int = Field(description="rule-picked rows that got a valid verdict from the small model")
    batches: int
    flagged: list[ReviewedTransaction]
    escalated: list[ReviewedTransaction]
    cleared: list[ReviewedTransaction]


_INSTRUCTIONS = (
    "You review bank transactions that automatic fraud rules picked out. Each row (r1, r2, ...) shows the "
    "transaction, the rules that fired and why, and what is usual for its account. For each row decide:\n"
    "- suspicious: a person should check it (likely fraud, misuse or an error);\n"
    "- benign: the rule fired but the row looks normal for this account;\n"
    "- unsure: you cannot tell.\n"
    "Give a short reason of a few words naming the evidence. Answer once for every row, by its ref."
)
_HEADER = "Rows to judge:"
#: Reply tokens allowed per judged row: the JSON keys and verdict (about 25) plus a
#: reason of at most 80 characters.
_REPLY_PER_ROW = 60
_ITEM_FIELDS: dict[str, Any] = {
    "verdict": (Verdict, Field(description="suspicious, benign or unsure")),
    "reason": (str, Field(max_length=80, description="a few words naming the evidence")),
}
_EXAMPLE_INPUT = (
    f"{_HEADER}\n"
    "r1: 2025-03-02 01:14 | account AC7 | payee 'Quick Cash 24' | 1,900.00 EUR | country DE\n"
    "    rules: new_payee_large (strong): first payment to 'Quick Cash 24', 1,900.00 EUR against an earlier "
    "median of 38.20; amount_outlier (strong): 1,900.00 EUR is 49.7x the account's median 38.20 (robust z 9.1)\n"
    "    account AC7: 60 transactions in the log, median amount 38.20 EUR, home country DE, 6 distinct payees\n"
    "r2: 2025-03-05 12:30 | account AC3 | payee 'Fresh Market' | 64.10 EUR | country FR\n"
    "    rules: foreign_country (weak): country FR; the account's home country is DE\n"
    "    account AC3: 41 transactions in the log, median amount 58.00 EUR, home country DE, 5 distinct payees"
)


def _batch_skill(name: str, model: str, k: int) -> Skill:
    output = batch_output_type("Judgement", k, _ITEM_FIELDS)
    example_out = batch_output_type("Judgement", 2, _ITEM_FIELDS).model_validate({"items": [
        {"ref": "r1", "verdict": "suspicious", "reason": "huge first payment to an unknown payee"},
        {"ref": "r2", "verdict": "benign", "reason": "usual amount and payee, nearby country"},
    ]})
    return Skill(
        name=name,
        description="judge transactions that fraud rules picked",
        instructions=_INSTRUCTIONS,
        output_type=output,
        examples=[Example(_EXAMPLE_INPUT, example_out)],
        acceptance=AcceptancePolicy(max_repairs=1, check=refs_check(k)),
        model=model,
        max_tokens=reply_budget(_REPLY_PER_ROW, k),
    )


def _row_text(tx: Transaction, hits: list[RuleHit], context: str) -> str:
    money = f"{tx.amount:,.2f}{' ' + tx.currency if tx.currency else ''}"
    country = f" | country {tx.country}" if tx.country else ""
    rules = "; ".join(f"{h.rule} ({h.strength}): {h.reason}" for h in hits)
    return (f"{tx.timestamp:%Y-%m-%d %H:%M} | account {tx.account[:40]} | payee {tx.payee[:60]!r} | {money}{country}\n"
            f"    rules: {rules}\n    {context}")


def _decide(signal: str, item: BatchItem, min_agreement: float) -> tuple[Status, EscalationKind | None, str | None]:
    verdict = item.value.get("verdict") if item.value else None
    if verdict is None:
        return "escalated", "invalid_output", f"no valid verdict from the small model: {item.problem}"
    if verdict == "unsure":
        return "escalated", "low_confidence", "the small model is unsure"
    if item.agreement is not None and item.agreement < min_agreement:
        return "escalated", "low_confidence", (f"the small model's verdict is unstable (agreement "
                                               f"{item.agreement:.2f} < {min_agreement:.2f})")
    if verdict == "benign" and signal == "strong":
        return "escalated", "disagreement", "the small model calls it benign against a strong rule signal"
    return ("flagged" if verdict == "suspicious" else "cleared"), None, None


_REASON = {"invalid_output": EscalationReason.INVALID_OUTPUT, "low_confidence": EscalationReason.LOW_CONFIDENCE,
           "disagreement": EscalationReason.FAILED_CHECK}


def flag_transactions_skill(
    *,
    rules: TransactionRules | None = None,
    model: str = "small",
    batch_rows: int = 4,
    samples: int = 3,
    sample_temperature: float = 0.8,
    min_agreement: float = 0.6,
    name: str = "flag_transactions",
) -> Skill:
    """Flag suspicious rows of a transaction log (CSV or JSON lines) with reasons.

    The rules (:class:`TransactionRules`) run over every row in Python; only the
    rows they pick go to the small model, at most ``batch_rows`` per call and never
    more than fits its context window. Each batch is drawn ``samples`` times; a
    row's agreement is the share of draws giving the first draw's verdict. The
    escalation policy is in this module's docstring.

    Args:
        rules: rule thresholds.
        model: binding key of the judging model.
        batch_rows: most rows per model call (fewer when the prompt would not fit).
            Each call's reply budget (``max_tokens``) is 60 tokens a row, and the
            prompt gets what the context window leaves.
        samples: draws per batch for the agreement measure (1: one draw, the
            backend's logprob confidence if any).
        min_agreement: rows below this agreement escalate.
    """
    if batch_rows < 1 or samples < 1:
        raise ConfigError("flag_transactions", "batch_rows and samples must be >= 1")
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError("flag_transactions.min_agreement", "must be between 0 and 1")
    rules = rules or TransactionRules()

    async def runner(skill: Skill, data: BaseModel, ctx: RunContext, node: str) -> Accepted | Rejected:
        try:
            log = parse_log(getattr(data, "text", ""))
        except LogFormatError as exc:
            return Rejected(EscalationReason.BAD_INPUT, f"the transaction log cannot be read: {exc}", None, 0)
        malformed = [MalformedRow(line=m.line, reason=m.reason, text=m.text) for m in log.malformed]
        if not log.transactions:
            first = "; ".join(f"line {m.line}: {m.reason}" for m in malformed[:3])
            return Rejected(EscalationReason.BAD_INPUT, f"no line of the log is a readable transaction ({first})", None, 0)
        hits = apply_rules(log.transactions, rules)
        picked = [tx for tx in log.transactions if tx.line in hits]
        profiles = account_profiles(log.transactions, rules)
        contexts = [profiles[tx.account].describe(tx.account) for tx in picked]
        texts = [_row_text(tx, hits[tx.line], c) for tx, c in zip(picked, contexts)]
        items, batches = await run_in_batches(
            lambda k: _batch_skill(skill.name, skill.model, k), texts, ctx, node, header=_HEADER,
            max_items=batch_rows, samples=samples, sample_temperature=sample_temperature, agree_on="verdict",
        )
        lists: dict[Status, list[ReviewedTransaction]] = {"flagged": [], "escalated": [], "cleared": []}
        for tx, item, context in zip(picked, items, contexts):
            signal = signal_strength(hits[tx.line])
            status, kind, why = _decide(signal, item, min_agreement)
            value = item.value or {}
            lists[status].append(ReviewedTransaction(
                line=tx.line, id=tx.id, timestamp=tx.timestamp.isoformat(), account=tx.account, payee=tx.payee,
                amount=tx.amount, currency=tx.currency, country=tx.country,
                rules=[RuleFinding(rule=h.rule, strength=h.strength, reason=h.reason) for h in hits[tx.line]],
                signal=signal, verdict=value.get("verdict"), model_reason=value.get("reason"),
                agreement=item.agreement, status=status, escalation=kind, escalation_detail=why, context=context,
            ))
        report = TransactionReport(
            format=log.format, lines=log.lines, transactions=len(log.transactions), malformed=malformed,
            rule_hits=len(picked), judged=sum(1 for i in items if i.value is not None), batches=batches, **lists,
        )
        if report.escalated:
            kinds = Counter(r.escalation for r in report.escalated)
            kind = kinds.most_common(1)[0][0]
            detail = (f"{len(report.escalated)} of {len(picked)} rule-picked rows need a closer look ("
                      + ", ".join(f"{n} {k}" for k, n in kinds.items()) + "); lines "
                      + ", ".join(str(r.line) for r in report.escalated[:20]) + ("..." if len(report.escalated) > 20 else ""))
            return Rejected(_REASON[kind], detail, report.model_dump(mode="json"), batches)
        agreements = [i.agreement for i in items if i.agreement is not None]
        return Accepted(report, min(agreements) if agreements else None, max(1, batches))

    return Skill(
        name=name,
        description="read a transaction log (CSV or JSON lines) and flag suspicious transactions with reasons",
        instructions=_INSTRUCTIONS,
        output_type=TransactionReport,
        input_type=TextInput,
        model=model,
        runner=runner,
        render=render_transaction_report,
    )


def _row_line(r: ReviewedTransaction) -> str:
    money = f"{r.amount:,.2f}{' ' + r.currency if r.currency else ''}"
    verdict = f"; model: {r.verdict} ({r.model_reason})" if r.verdict else ""
    why = f"; escalated: {r.escalation_detail}" if r.escalation_detail else ""
    return (f"  line {r.line} {r.id} {r.account} -> {r.payee!r} {money}"
            f"{' [' + r.country + ']' if r.country else ''}: rules {', '.join(h.rule for h in r.rules)}{verdict}{why}")


def render_transaction_report(report: TransactionReport, *, limit: int = 50) -> str:
    """A plain-text summary of a report: flagged, escalated, cleared, malformed."""
    out = [f"Read {report.lines} lines ({report.format}): {report.transactions} transactions, "
           f"{len(report.malformed)} malformed. Rules picked {report.rule_hits} rows; the small model judged "
           f"{report.judged} in {report.batches} batches."]
    for title, rows in (("FLAGGED", report.flagged), ("ESCALATED (provisionally flagged)", report.escalated),
                        ("CLEARED by the model (weak rule signal, judged benign)", report.cleared)):
        if rows:
            out.append(f"{title} ({len(rows)}):")
            out += [_row_line(r) for r in rows[:limit]]
            if len(rows) > limit:
                out.append(f"  ... and {len(rows) - limit} more")
    if report.malformed:
        out.append(f"MALFORMED ({len(report.malformed)}):")
        out += [f"  line {m.line}: {m.reason}" for m in report.malformed[:limit]]
    return "\n".join(out)


# ------------------------------------------------------------------------ batching
# Generic: shared with the sentiment batch skill (and any skill judging many items).


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One item's result: the model's item (without ``ref``) or ``None``, its
    agreement across samples (or the batch's logprob confidence), and why it has
    no value."""

    value: dict[str, Any] | None
    agreement: float | None = None
    problem: str | None = None


_TYPES: dict[tuple[str, int, str], type[BaseModel]] = {}


def batch_output_type(prefix: str, k: int, item_fields: dict[str, Any]) -> type[BaseModel]:
    """``{"items": [{"ref": "r1", ...}, ...]}`` with exactly ``k`` items whose ``ref``
    is one of ``r1..rk``, so a schema-constrained decoder cannot skip or invent rows.
    ``item_fields`` are pydantic field definitions ``name -> (type, Field(...))``."""
    cache_key = (prefix, k, repr(sorted(item_fields.items(), key=lambda kv: kv[0])))
    if cache_key not in _TYPES:
        refs = tuple(f"r{i}" for i in range(1, k + 1))
        item = create_model(f"{prefix}Item{k}", ref=(Literal[refs], Field(description="the item's ref")), **item_fields)
        _TYPES[cache_key] = create_model(f"{prefix}Batch{k}", items=(list[item], Field(min_length=k, max_length=k)))
    return _TYPES[cache_key]


def refs_check(k: int) -> Check:
    """An acceptance check: the reply answers each of ``r1..rk`` exactly once."""
    want = {f"r{i}" for i in range(1, k + 1)}

    def check(_: Any, output: BaseModel) -> str | None:
        refs = [item.ref for item in output.items]
        if len(refs) != len(set(refs)) or set(refs) != want:
            return f"answer each of {', '.join(sorted(want))} exactly once; got {', '.join(refs) or 'none'}"
        return None

    return check


def prompt_tokens(model: Model, messages: Sequence[Message]) -> int:
    """Tokens of a prompt, counted the way :meth:`RunContext.call` checks it."""
    return sum(model.count_tokens(m.content) + 4 for m in messages)


def reply_budget(per_item: int, k: int) -> int:
    """A batch's ``max_tokens``: ``per_item`` tokens per item plus the JSON around them."""
    return 24 + per_item * k


def _budget(model: Model, skill: Skill) -> int:
    """Prompt tokens allowed for ``skill`` on ``model``: the window less the reply
    budget, less room for one repair turn (the bad reply plus the complaint)."""
    reply = skill.max_tokens or DEFAULT_REPLY_RESERVE
    room = model.context_window - reply
    return room - min(reply + 96, room // 4)


def _batch_text(header: str, texts: Sequence[str]) -> str:
    return header + "".join(f"\nr{i}: {t}" for i, t in enumerate(texts, start=1))


def _prompt(make_skill: Callable[[int], Skill], header: str, texts: Sequence[str]) -> tuple[Skill, TextInput, list[Message]]:
    skill = make_skill(len(texts))
    request = TextInput(text=_batch_text(header, texts))
    return skill, request, skill_messages(skill, request)


def _pack(make_skill: Callable[[int], Skill], header: str, texts: Sequence[str], model: Model, max_items: int) -> list[list[int]]:
    """Greedy batches of item indices, at most ``max_items`` each, whose prompts fit
    the model's budget. Sizes are estimated from the pieces, then each batch's real
    prompt is counted and split until it fits; an item too large on its own stays
    alone (the caller reports it instead of sending it)."""
    skills = {k: make_skill(k) for k in range(1, max_items + 1)}
    room = {k: _budget(model, s) - prompt_tokens(model, skill_messages(s, TextInput(text=header)))
            for k, s in skills.items()}
    sizes = [model.count_tokens(f"\nr{max_items}: {t}") + 1 for t in texts]
    estimated: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in range(len(texts)):
        if current and (len(current) == max_items or used + sizes[i] > room[len(current) + 1]):
            estimated.append(current)
            current, used = [], 0
        current.append(i)
        used += sizes[i]
    if current:
        estimated.append(current)
    batches: list[list[int]] = []
    for batch in estimated:
        while len(batch) > 1 and not _fits(make_skill, header, [texts[j] for j in batch], model):
            batches.append(batch[:1])
            batch = batch[1:]
        batches.append(batch)
    return batches


def _fits(make_skill: Callable[[int], Skill], header: str, texts: Sequence[str], model: Model) -> bool:
    skill, _, messages = _prompt(make_skill, header, texts)
    return prompt_tokens(model, messages) <= _budget(model, skill)


async def run_in_batches(
    make_skill: Callable[[int], Skill],
    texts: Sequence[str],
    ctx: RunContext,
    node: str,
    *,
    header: str,
    max_items: int,
    samples: int,
    sample_temperature: float,
    agree_on: str,
) -> tuple[list[BatchItem], int]:
    """Judge ``texts`` in batches of at most ``max_items``, never sending a prompt
    larger than the model's context allows (counted with the model's own tokenizer,
    with room kept for the reply and one repair).

    ``make_skill(k)`` gives the skill for a batch of ``k`` items (its output type
    from :func:`batch_output_type`). Each batch runs through :func:`run_skill`
    (validation, repair, the refs check, the ledger); then ``samples - 1`` more
    draws at ``sample_temperature`` measure each item's agreement on the field
    ``agree_on``. Returns one :class:`BatchItem` per text, in order, and the number
    of batches sent.
    """
    results: list[BatchItem] = [BatchItem(None, None, "not judged")] * len(texts)
    if not texts:
        return results, 0
    model = ctx.model(make_skill(1).model)
    header = header.rstrip()
    sent = 0
    for batch in _pack(make_skill, header, texts, model, max(1, max_items)):
        chunk = [texts[j] for j in batch]
        if not _fits(make_skill, header, chunk, model):
            for j in batch:
                results[j] = BatchItem(None, None, "the item alone does not fit the model's context window")
            continue
        skill, request, _ = _prompt(make_skill, header, chunk)
        sent += 1
        outcome = await run_skill(skill, request, ctx, node=node)
        if isinstance(outcome, Rejected):
            for j in batch:
                results[j] = BatchItem(None, None, f"{outcome.reason.value}: {outcome.detail}")
            continue
        first = {item.ref: item.model_dump(mode="json", exclude={"ref"}) for item in outcome.output.items}
        agree = await _agreement(skill, request, first, ctx, node, samples, sample_temperature, agree_on)
        for n, j in enumerate(batch, start=1):
            ref = f"r{n}"
            results[j] = BatchItem(first[ref], agree.get(ref, outcome.confidence))
    return results, sent


async def _agreement(
    skill: Skill, request: TextInput, first: dict[str, dict[str, Any]], ctx: RunContext, node: str,
    samples: int, temperature: float, field: str,
) -> dict[str, float]:
    if samples <= 1:
        return {}
    messages = skill_messages(skill, request)
    votes = Counter(first.keys())
    settings = ModelSettings(temperature=temperature, max_tokens=skill.max_tokens)
    for _ in range(samples - 1):
        reply = await ctx.call(skill.model, messages, node=node, skill=skill.name, schema=skill.output_schema(), settings=settings)
        try:
            drawn = skill.parse_output(reply.value(), reply.text)
        except InvalidModelOutputError:
            continue  # an invalid draw agrees with nothing
        seen: set[str] = set()
        for item in drawn.items:
            if item.ref in first and item.ref not in seen and item.model_dump(mode="json").get(field) == first[item.ref].get(field):
                votes[item.ref] += 1
            seen.add(item.ref)
    return {ref: votes[ref] / samples for ref in first}
