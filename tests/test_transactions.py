"""flag_transactions: log parsing, each rule, batching within the context window,
the escalation policy, and the transaction review graph on scripted models."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from slmgraph import Accepted, Config, ConfigError, EscalationReason, Rejected, RunContext, run_skill
from slmgraph._context import DEFAULT_REPLY_RESERVE
from slmgraph.graphs.transactions import transaction_review_graph
from slmgraph.testing import ANOMALY_KINDS, synthetic_transaction_log
from slmgraph.skills._transaction_rules import (
    LogFormatError,
    RuleHit,
    TransactionRules,
    apply_rules,
    parse_log,
    signal_strength,
)
from slmgraph.skills._transactions import TransactionReport, flag_transactions_skill, prompt_tokens
from slmgraph.testing import FunctionModel, ScriptedModel

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
HEADER = "id,timestamp,account,payee,amount,currency,country"


def row(i: int, minutes: float, account: str = "A", payee: str = "Shop", amount: float = 40.25,
        country: str = "DE") -> str:
    ts = (T0 + timedelta(minutes=minutes)).isoformat()
    return f"t{i},{ts},{account},{payee},{amount:.2f},EUR,{country}"


def csv_log(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def history(account: str = "A", n: int = 12, start: int = 0, amount: float = 40.0) -> list[str]:
    """Ordinary rows: a day apart, amounts near ``amount``, two usual payees."""
    return [row(start + i, 1440 * i, account, ("Shop", "Cafe")[i % 2], amount + (i % 5) * 1.37) for i in range(n)]


def rules_of(text: str) -> dict[str, set[str]]:
    """transaction id -> rule names that hit it."""
    log = parse_log(text)
    hits = apply_rules(log.transactions)
    return {tx.id: {h.rule for h in hits[tx.line]} for tx in log.transactions if tx.line in hits}


# ------------------------------------------------------------------ parsing


def test_csv_columns_in_any_order_and_common_aliases():
    text = ("Country;Merchant;Value;Account ID;Date;Txn-Id;CCY\n"
            "de;Corner Shop;1.234,50;A1;2025-01-06 09:00:00;x1;eur\n"
            "FR;Cafe;12,50;A2;1736154000;x2;EUR\n")
    log = parse_log(text)
    assert log.format == "csv" and log.malformed == []
    first, second = log.transactions
    assert (first.id, first.account, first.payee, first.amount, first.currency, first.country) == (
        "x1", "A1", "Corner Shop", 1234.5, "EUR", "DE")
    assert first.timestamp == datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    assert second.amount == 12.5 and second.timestamp == datetime.fromtimestamp(1736154000, tz=UTC)


@pytest.mark.parametrize("raw, value", [
    ("1,234.50", 1234.5), ("1.234,50", 1234.5), ("12,50", 12.5), ("1,234", 1234.0), ("€ 99", 99.0), ("-5", -5.0),
])
def test_amount_formats(raw, value):
    text = f'timestamp,account,amount\n2025-01-06T09:00:00,A,"{raw}"\n'
    assert parse_log(text).transactions[0].amount == value


def test_malformed_csv_lines_are_reported_not_fatal():
    text = csv_log(
        row(1, 0),
        "t2,2025-01-06T09:05:00,A,Shop",                       # too few fields
        "t3,2025-01-06T09:06:00,A,Shop,lots,EUR,DE",           # amount not a number
        "t4,yesterday,A,Shop,10.00,EUR,DE",                    # bad timestamp
        "t5,2025-01-06T09:08:00,,Shop,10.00,EUR,DE",           # no account
        "",
        row(6, 10),
    )
    log = parse_log(text)
    assert [t.id for t in log.transactions] == ["t1", "t6"]
    assert [(m.line, m.reason.split()[0]) for m in log.malformed] == [
        (3, "expected"), (4, "amount"), (5, "timestamp"), (6, "missing")]
    assert "lots" in log.malformed[1].reason and log.lines == 6


def test_a_line_the_csv_reader_cannot_read_is_reported():
    huge = f'2025-01-06T09:00:00,"{"x" * 200_000}",5'
    log = parse_log(f"timestamp,account,amount\n2025-01-06T09:00:00,A,5\n{huge}\n2025-01-06T09:01:00,B,6\n")
    assert [t.line for t in log.transactions] == [2, 4]
    assert log.malformed[0].line == 3 and "unreadable CSV" in log.malformed[0].reason


def test_jsonl_with_aliases_epoch_times_and_bad_lines():
    text = "\n".join([
        json.dumps({"ts": 1736154000, "acct": "A", "merchant": "Shop", "amt": 5, "id": "j1"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"timestamp": "2025-01-06T10:00:00Z", "account": "A", "payee": "Shop"}),
        json.dumps({"timestamp": 1736154000000, "account": "B", "amount": "7.5", "extra": True}),
    ])
    log = parse_log(text)
    assert log.format == "jsonl"
    assert [(t.line, t.id, t.amount) for t in log.transactions] == [(1, "j1", 5.0), (5, "line-5", 7.5)]
    assert log.transactions[1].timestamp == datetime.fromtimestamp(1736154000, tz=UTC)
    assert [(m.line, m.reason) for m in log.malformed] == [
        (2, "not valid JSON (Expecting property name enclosed in double quotes)"),
        (3, "not a JSON object"),
        (4, "missing amount"),
    ]


def test_a_json_array_of_objects_is_accepted():
    text = json.dumps([{"timestamp": "2025-01-06T10:00:00", "account": "A", "amount": 3}])
    assert parse_log(text).transactions[0].amount == 3.0


def test_a_header_without_a_required_column_is_a_format_error():
    with pytest.raises(LogFormatError, match="no column for amount"):
        parse_log("id,timestamp,account,payee\n1,2025-01-06T09:00:00,A,Shop\n")
    with pytest.raises(LogFormatError, match="empty"):
        parse_log("\n  \n")


async def test_an_unreadable_log_is_rejected_as_bad_input_without_model_calls():
    model = ScriptedModel([])
    out = await run_skill(flag_transactions_skill(), "hello,world\n1,2\n", RunContext(models={"small": model}))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.BAD_INPUT
    assert "timestamp" in out.detail and model.calls == []
    out = await run_skill(flag_transactions_skill(), csv_log("garbage"), RunContext(models={"small": model}))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.BAD_INPUT and "line 2" in out.detail


# ------------------------------------------------------------------ rules


def test_velocity_flags_every_row_of_a_burst_and_only_those():
    burst = [row(100 + i, 20000 + i * 1.5) for i in range(6)]
    hits = rules_of(csv_log(*history(), *burst, *history("B", start=50)))
    assert {k for k, v in hits.items() if "velocity" in v} == {f"t{100 + i}" for i in range(6)}
    log = parse_log(csv_log(*[row(i, i * 0.5) for i in range(10)]))
    strengths = {h.strength for hs in apply_rules(log.transactions).values() for h in hs if h.rule == "velocity"}
    assert strengths == {"strong"}  # 10 in 5 minutes


def test_amount_outlier_against_the_accounts_own_history():
    rows = [*history(n=20), row(99, 30000, amount=2000.0), row(98, 30001, amount=4.10),
            *history("RICH", n=20, start=200, amount=1800.0)]
    hits = rules_of(csv_log(*rows))
    assert {k for k, v in hits.items() if "amount_outlier" in v} == {"t99"}  # not the low one, not RICH's rows
    reason = next(h for hs in apply_rules(parse_log(csv_log(*rows)).transactions).values() for h in hs
                  if h.rule == "amount_outlier")
    assert reason.strength == "strong" and "median" in reason.reason


def test_outlier_works_when_most_amounts_are_identical():
    subscription = [row(i, 1440 * i, payee="Stream", amount=9.99) for i in range(12)]
    hits = rules_of(csv_log(*subscription, row(50, 20000, payee="Stream", amount=499.0)))
    assert hits == {"t50": {"amount_outlier"}}


def test_new_payee_with_a_large_amount():
    rows = [*history(n=8), row(90, 20000, payee="Stranger Ltd", amount=900.0),
            row(91, 21000, payee="Another New", amount=35.0), row(92, 22000, payee="Shop", amount=41.0)]
    hits = rules_of(csv_log(*rows))
    assert "new_payee_large" in hits["t90"]
    assert "t91" not in hits and "t92" not in hits
    # with too little history every payee is new: the rule stays quiet
    assert "new_payee_large" not in rules_of(csv_log(row(1, 0), row(2, 3000, payee="X", amount=900.0))).get("t2", set())


def test_round_amount_burst_needs_the_amounts_close_together():
    close = [row(80 + i, 20000 + 10 * i, payee="ATM", amount=a) for i, a in enumerate((500, 1000, 300))]
    spread = [row(85 + i, 20000 + 2000 * i, account="B", payee="ATM", amount=a) for i, a in enumerate((500, 1000, 300))]
    hits = rules_of(csv_log(*history(n=20, amount=400), *close, *history("B", n=20, start=300, amount=400), *spread))
    assert {k for k, v in hits.items() if "round_amount_burst" in v} == {"t80", "t81", "t82"}


def test_duplicate_flags_the_repeat_only():
    hits = rules_of(csv_log(*history(), row(70, 20000, payee="Cafe", amount=12.34),
                            row(71, 20002, payee="Cafe", amount=12.34), row(72, 20100, payee="Cafe", amount=12.34)))
    assert hits == {"t71": {"duplicate"}}


def test_foreign_country_against_the_home_country():
    hits = rules_of(csv_log(*history(n=10), row(60, 20000, country="BR")))
    assert hits == {"t60": {"foreign_country"}}


def test_bad_settings_fail_when_the_skill_is_built():
    with pytest.raises(ConfigError):
        flag_transactions_skill(samples=0)
    with pytest.raises(ConfigError):
        flag_transactions_skill(min_agreement=1.5)


def test_signal_strength():
    weak, strong = RuleHit("duplicate", "weak", ""), RuleHit("velocity", "strong", "")
    assert signal_strength([weak]) == "weak"
    assert signal_strength([strong]) == "strong"
    assert signal_strength([weak, RuleHit("foreign_country", "weak", "")]) == "strong"


def test_thresholds_are_configurable():
    text = csv_log(*[row(i, i * 2, amount=10.0 + i) for i in range(3)])
    assert rules_of(text) == {}
    log = parse_log(text)
    hits = apply_rules(log.transactions, TransactionRules(velocity_count=3))
    assert len(hits) == 3


def test_the_synthetic_log_plants_every_kind_and_the_rules_find_them():
    synth = synthetic_transaction_log(600, seed=4, malformed=2)
    assert set(synth.planted.values()) == set(ANOMALY_KINDS)
    log = parse_log(synth.text)
    assert len(log.transactions) == 600 and len(log.malformed) == 2
    hit_ids = {t.id for t in log.transactions if t.line in apply_rules(log.transactions)}
    assert set(synth.planted) <= hit_ids
    only = synthetic_transaction_log(300, seed=4, kinds=("duplicate",))
    assert set(only.planted.values()) == {"duplicate"}
    with pytest.raises(ValueError):
        synthetic_transaction_log(10, kinds=("nope",))


# ------------------------------------------------------------------ judgement and escalation


def judge(verdicts: dict[str, str] | None = None, default: str = "suspicious"):
    """A judging model: per transaction id, the verdict to give (read from the prompt)."""
    verdicts = verdicts or {}

    def reply(messages, schema):
        items = []
        rows = next(m.content for m in reversed(messages) if m.content.startswith("Rows to judge:"))
        for ref, body in re.findall(r"^(r\d+): (.*)$", rows, re.M):
            tx = next((tid for tid in verdicts if f"| {tid} |" in f"| {body}"), None)
            items.append({"ref": ref, "verdict": verdicts.get(tx, default), "reason": "scripted"})
        return {"items": items}

    return reply


def tagged_log() -> tuple[str, dict[str, str]]:
    """Rows picked by rules, with known signals: t90 strong (two rules), t60 weak."""
    rows = [*history(n=12), row(90, 20000, payee="Stranger Ltd", amount=3000.0), row(60, 21000, country="BR"),
            *history("B", n=12, start=200), row(91, 20000, "B", payee="Stranger", amount=2500.0),
            row(61, 21000, "B", country="US")]
    return csv_log(*rows), {"t90": "strong", "t60": "weak", "t91": "strong", "t61": "weak"}


def with_ids(text: str) -> str:
    """Put each row's id into the payee field so a scripted judge can find it in the prompt."""
    out = [text.splitlines()[0]]
    for line in text.splitlines()[1:]:
        cells = line.split(",")
        cells[3] = f"{cells[3]} | {cells[0]} |"
        out.append(",".join(cells))
    return "\n".join(out) + "\n"


async def test_only_rule_picked_rows_go_to_the_model_with_their_reasons_and_context():
    text, _ = tagged_log()
    model = FunctionModel(judge())
    out = await run_skill(flag_transactions_skill(samples=1), text, RunContext(models={"small": model}))
    assert isinstance(out, Accepted)
    report: TransactionReport = out.output
    assert report.rule_hits == 4 and report.judged == 4 and len(report.flagged) == 4
    sent = "\n".join(c.messages[-1].content for c in model.calls)
    assert sent.count("\nr") == 4  # four rows in all, none of the 24 ordinary ones
    assert "new_payee_large (strong)" in sent and "foreign_country (weak)" in sent
    assert "account A: 14 transactions in the log" in sent
    assert {r.id for r in report.flagged} == {"t90", "t60", "t91", "t61"}
    assert all(r.rules and r.verdict == "suspicious" and r.status == "flagged" for r in report.flagged)


async def test_escalation_policy_row_by_row():
    text, _ = tagged_log()
    verdicts = {"t90": "suspicious", "t60": "benign", "t91": "benign", "t61": "unsure"}
    model = FunctionModel(judge(verdicts))
    out = await run_skill(flag_transactions_skill(samples=1), with_ids(text), RunContext(models={"small": model}))
    assert isinstance(out, Rejected)
    report = TransactionReport.model_validate(out.draft)
    assert [r.id for r in report.flagged] == ["t90"]
    assert [r.id for r in report.cleared] == ["t60"]  # weak signal, model says benign
    escalated = {r.id: r.escalation for r in report.escalated}
    assert escalated == {"t91": "disagreement", "t61": "low_confidence"}
    assert out.reason in (EscalationReason.FAILED_CHECK, EscalationReason.LOW_CONFIDENCE)
    assert "2 of 4 rule-picked rows" in out.detail


async def test_a_verdict_that_changes_across_samples_escalates():
    text, _ = tagged_log()
    draws = iter(range(100))

    def unstable(messages, schema):
        n = next(draws)
        first = judge({"t90": "suspicious"})(messages, schema)
        if n % 3:  # the second and third draws call every row benign
            for item in first["items"]:
                item["verdict"] = "benign"
        return first

    out = await run_skill(flag_transactions_skill(samples=3, batch_rows=4), with_ids(text),
                          RunContext(models={"small": FunctionModel(unstable)}))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.LOW_CONFIDENCE
    report = TransactionReport.model_validate(out.draft)
    assert len(report.escalated) == 4 and report.flagged == []
    assert all(r.agreement == pytest.approx(1 / 3) for r in report.escalated)
    assert all("unstable" in r.escalation_detail for r in report.escalated)


async def test_stable_samples_are_accepted_with_their_agreement():
    text, _ = tagged_log()
    model = FunctionModel(judge())
    out = await run_skill(flag_transactions_skill(samples=3), text, RunContext(models={"small": model}))
    assert isinstance(out, Accepted) and out.confidence == 1.0
    assert len(model.calls) == 3  # one batch of four rows, drawn three times
    assert model.calls[1].settings.temperature == 0.8


async def test_invalid_replies_escalate_the_batch_as_invalid_output():
    text, _ = tagged_log()
    model = ScriptedModel([{"items": [{"ref": "r1", "verdict": "maybe", "reason": "?"}]}] * 2)
    out = await run_skill(flag_transactions_skill(samples=1), text, RunContext(models={"small": model}))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.INVALID_OUTPUT
    report = TransactionReport.model_validate(out.draft)
    assert report.judged == 0 and len(report.escalated) == 4
    assert all(r.escalation == "invalid_output" and r.verdict is None for r in report.escalated)
    assert len(model.calls) == 2  # the first try and one repair


async def test_a_reply_that_skips_a_row_is_repaired():
    text, _ = tagged_log()
    full = judge()
    replies = iter([{"items": [{"ref": "r1", "verdict": "benign", "reason": "x"}] * 4}, None])

    def fn(messages, schema):
        first = next(replies)
        return first if first is not None else full(messages, schema)

    model = FunctionModel(fn)
    out = await run_skill(flag_transactions_skill(samples=1), text, RunContext(models={"small": model}))
    assert isinstance(out, Accepted) and len(out.output.flagged) == 4
    assert "exactly once" in model.calls[1].messages[-1].content


async def test_a_ten_thousand_line_log_is_judged_in_batches_that_fit_the_window():
    synth = synthetic_transaction_log(10_000, seed=7, malformed=5)
    window = 2048
    model = FunctionModel(judge(), context_window=window)
    skill = flag_transactions_skill(samples=2, batch_rows=20)
    out = await run_skill(skill, synth.text, RunContext(models={"small": model}))
    assert isinstance(out, Accepted)
    report: TransactionReport = out.output
    assert (report.lines, report.transactions, len(report.malformed)) == (10_005, 10_000, 5)
    # every prompt fits the window with the reply reserve left free
    sizes = [prompt_tokens(model, call.messages) for call in model.calls]
    assert all(size + call.settings.max_tokens <= window for size, call in zip(sizes, model.calls))
    assert len(sizes) == 2 * report.batches and report.batches > 1
    # the budget, not only the row cap, decides the batch size
    rows_per_call = [len(re.findall(r"^r\d+: ", c.messages[-1].content, re.M)) for c in model.calls[::2]]
    assert max(rows_per_call) < 20
    # every rule-picked row was judged exactly once and lands in the report
    assert sum(rows_per_call) == report.rule_hits == report.judged
    reviewed = report.flagged + report.escalated + report.cleared
    assert len(reviewed) == report.rule_hits == len({r.line for r in reviewed})
    assert set(synth.planted) <= {r.id for r in report.flagged}
    assert all(r.rules for r in reviewed)


async def test_a_row_too_large_for_a_tiny_window_escalates_and_nothing_is_sent():
    text, _ = tagged_log()
    model = FunctionModel(judge(), context_window=600)
    out = await run_skill(flag_transactions_skill(samples=1), text, RunContext(models={"small": model}))
    assert isinstance(out, Rejected) and out.reason is EscalationReason.INVALID_OUTPUT
    assert model.calls == []
    report = TransactionReport.model_validate(out.draft)
    assert all("does not fit" in r.escalation_detail for r in report.escalated) and len(report.escalated) == 4


# ------------------------------------------------------------------ the graph


def cfg(tmp_path) -> Config:
    return Config(checkpoint=str(tmp_path / "c.sqlite"))


async def test_graph_answers_with_the_flagged_rows(tmp_path):
    synth = synthetic_transaction_log(300, seed=2, malformed=1)
    small = FunctionModel(judge(), context_window=2048)
    g = transaction_review_graph({"small": small}, config=cfg(tmp_path), samples=1)
    r = await g.ainvoke(synth.text)
    assert (r.status, r.route) == ("answered", "flag_transactions")
    report = TransactionReport.model_validate(r.output_json)
    assert set(synth.planted) <= {row.id for row in report.flagged}
    assert "FLAGGED" in r.answer and "MALFORMED (1)" in r.answer
    assert all(e.node == "specialist" and e.skill == "flag_transactions" for e in r.ledger)


async def test_graph_takes_a_log_larger_than_the_small_models_window(tmp_path):
    synth = synthetic_transaction_log(2000, seed=3)
    small = FunctionModel(judge(), context_window=2048)
    assert small.count_tokens(synth.text) > 10 * 2048
    r = await transaction_review_graph({"small": small}, config=cfg(tmp_path), samples=1).ainvoke(synth.text)
    assert r.status == "answered"


async def test_graph_escalates_only_the_unsettled_rows_to_the_large_model(tmp_path):
    text, _ = tagged_log()
    small = FunctionModel(judge({"t91": "benign", "t61": "unsure"}))
    large = ScriptedModel([{"action": "final", "answer": "line 27 is fraud; line 28 is fine"}], name="big")
    g = transaction_review_graph({"small": small, "large": large}, config=cfg(tmp_path), samples=1)
    r = await g.ainvoke(with_ids(text))
    assert (r.status, r.answer) == ("escalated", "line 27 is fraud; line 28 is fine")
    assert r.escalation_reason in ("failed_check", "low_confidence")
    brief = large.calls[0].messages[-1].content
    assert "t91" in brief and "t61" in brief
    assert "t90" not in brief.split("specialist_draft")[0] and "Cafe" not in brief  # not the whole log
    assert large.calls[0].schema["properties"]["action"]["enum"] == ["final"]  # no tools
    report = TransactionReport.model_validate(r.draft)
    assert {row.id for row in report.escalated} == {"t91", "t61"}


async def test_the_large_model_sees_only_as_many_escalated_rows_as_fit_its_window(tmp_path):
    synth = synthetic_transaction_log(1000, seed=9)
    small = FunctionModel(judge(default="unsure"))
    large = FunctionModel(lambda messages, schema: {"action": "final", "answer": "reviewed"}, context_window=1500)
    r = await transaction_review_graph({"small": small, "large": large}, config=cfg(tmp_path),
                                       samples=1).ainvoke(synth.text)
    assert (r.status, r.answer) == ("escalated", "reviewed")
    escalated = len(r.draft["escalated"])
    brief = large.calls[0].messages[-1].content
    shown = brief.count('\\"line\\": ')
    assert 0 < shown < escalated and f"and {escalated - shown} more escalated rows not shown" in brief
    assert prompt_tokens(large, large.calls[0].messages) <= 1500 - DEFAULT_REPLY_RESERVE


async def test_graph_without_a_large_model_keeps_the_report_as_the_draft(tmp_path):
    text, _ = tagged_log()
    small = FunctionModel(judge({"t61": "unsure"}))
    r = await transaction_review_graph({"small": small}, config=cfg(tmp_path), samples=1).ainvoke(with_ids(text))
    assert (r.status, r.escalation_reason) == ("escalation_needed", "low_confidence")
    report = TransactionReport.model_validate(r.draft)
    assert [row.id for row in report.escalated] == ["t61"] and len(report.flagged) == 3


# ------------------------------------------------------------------ the real embedded model


@pytest.mark.embedded
async def test_real_model_gives_a_complete_schema_valid_review_through_the_graph(tmp_path):
    from slmgraph import LlamaCppModel

    text, _ = tagged_log()
    model = LlamaCppModel()
    r = await transaction_review_graph({"small": model}, config=cfg(tmp_path), samples=1).ainvoke(text)
    assert r.status in ("answered", "escalation_needed")
    report = TransactionReport.model_validate(r.output_json if r.status == "answered" else r.draft)
    reviewed = report.flagged + report.escalated + report.cleared
    assert sorted(row.id for row in reviewed) == ["t60", "t61", "t90", "t91"]
    for row in reviewed:  # the policy holds whatever the model said
        assert row.verdict in ("suspicious", "benign", "unsure", None)
        if row.status == "cleared":
            assert row.verdict == "benign" and row.signal == "weak"
        if row.status == "flagged":
            assert row.verdict == "suspicious"
        if row.verdict == "benign" and row.signal == "strong" or row.verdict in ("unsure", None):
            assert row.status == "escalated"
    assert (r.status == "answered") == (report.escalated == [])
    assert r.ledger and all(e.prompt_tokens + e.completion_tokens <= model.context_window for e in r.ledger)
