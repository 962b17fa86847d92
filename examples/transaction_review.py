"""Transaction review: flag suspicious rows of a transaction log, with reasons.

Generates a small synthetic log (made-up accounts and payees, a few anomalies
planted on purpose, one malformed line), sends it through the transaction review
graph and prints what was flagged, by which rules, what the small model said, and
what escalated. Runs on the embedded SmolLM2-135M model with nothing else
installed; with a large model configured (SLMGRAPH_LARGE_MODEL + OPENAI_BASE_URL /
OPENAI_API_KEY) the escalated rows go to it.

    python examples/transaction_review.py              # 80 rows, 4 kinds of anomaly (3 model calls)
    python examples/transaction_review.py 400 [jsonl]  # every kind of anomaly (about 15 model calls)
    python examples/transaction_review.py --file my_log.csv

On the embedded model a call takes a few seconds on 2 cores, so the default run
takes well under a minute and the 400-row run a few minutes.

The same graph from the command line: ``slmgraph run --graph transaction_review < my_log.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from slmgraph import load_config, models_from_config, prices_from_config
from slmgraph.graphs.transactions import transaction_review_graph
from slmgraph.testing import ANOMALY_KINDS, synthetic_transaction_log


def main() -> None:
    args = sys.argv[1:]
    planted: dict[str, str] = {}
    if args[:1] == ["--file"]:
        text = Path(args[1]).read_text()
        print(f"log: {args[1]}")
    else:
        rows = int(args[0]) if args else 80
        fmt = args[1] if len(args) > 1 else "csv"
        kinds = ANOMALY_KINDS if args else ("amount_outlier", "new_payee_large", "duplicate", "foreign_country")
        synth = synthetic_transaction_log(rows, seed=11, fmt=fmt, anomaly_every=80, malformed=1, kinds=kinds)
        text, planted = synth.text, synth.planted
        print(f"synthetic {fmt} log: {rows} rows, planted anomalies:")
        for tx_id, kind in sorted(planted.items()):
            print(f"  {tx_id}: {kind}")
    config = load_config()
    graph = transaction_review_graph(models_from_config(config), config=config, prices=prices_from_config(config))
    r = graph.invoke(text)
    report = r.output_json or (r.draft if isinstance(r.draft, dict) else None)
    print(f"\nstatus={r.status} ({r.message})")
    if r.escalation_reason:
        print(f"escalated because: {r.escalation_reason} ({r.escalation_detail})")
    if report:
        print(f"\n{report['rule_hits']} rows picked by the rules out of {report['transactions']}; "
              f"{report['judged']} judged by the small model in {report['batches']} batches")
        for title in ("flagged", "escalated", "cleared"):
            rows_ = report[title]
            print(f"\n{title.upper()} ({len(rows_)}):")
            for row in rows_:
                rules = "; ".join(f"{h['rule']} ({h['strength']}): {h['reason']}" for h in row["rules"])
                mark = f"  [planted: {planted[row['id']]}]" if row["id"] in planted else ""
                print(f"  line {row['line']} {row['id']} {row['account']} -> {row['payee']!r} "
                      f"{row['amount']:,.2f} {row['currency']}{mark}")
                print(f"      rules: {rules}")
                print(f"      small model: {row['verdict']} ({row['model_reason']})"
                      + (f" -> escalated: {row['escalation_detail']}" if row["escalation_detail"] else ""))
        for m in report["malformed"]:
            print(f"\nmalformed line {m['line']}: {m['reason']}")
        missed = sorted(set(planted) - {row["id"] for t in ("flagged", "escalated", "cleared") for row in report[t]})
        if planted:
            print(f"\nplanted anomalies the rules missed: {', '.join(missed) or 'none'}")
    if r.status == "escalated":
        print(f"\nlarge model's review:\n{r.answer}")
    t = r.totals
    print(f"\nledger: {t.calls} calls, {t.prompt_tokens}+{t.completion_tokens} tokens, ${t.cost_usd:.6f} "
          f"(all-large would be ${t.all_large_cost_usd:.6f})")


if __name__ == "__main__":
    main()
