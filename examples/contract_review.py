"""Contract review: find the termination, governing-law, liability, confidentiality
and payment clauses of a contract, each quoted verbatim with its character offsets.

Every quote the small model gives is looked up in the contract; one that does not
occur verbatim is re-asked once, then the contract escalates (only verified
clauses are kept in the draft). Long contracts are split into overlapping chunks.

    python examples/contract_review.py               # the built-in sample contract
    python examples/contract_review.py contract.txt  # your own
"""

from __future__ import annotations

import sys
from pathlib import Path

from slmgraph import load_config, models_from_config, prices_from_config
from slmgraph.graphs.contracts import contract_review_graph

SAMPLE_CONTRACT = """\
SOFTWARE SUPPORT AGREEMENT

This agreement is made between Larkspur Systems GmbH ("Supplier") and Meadowbrook Dental Clinics ("Customer").

1. Services. Supplier will maintain the Customer's booking software and answer support requests within one business day.

2. Payment. Customer shall pay a fee of EUR 900 per month. Invoices are due within 30 days of the invoice date.

3. Confidentiality. Each party shall keep the other party's confidential information secret and use it only for this agreement.

4. Liability. Supplier's total liability under this agreement is limited to the fees paid in the twelve months before the claim.

5. Termination. Either party may terminate this agreement with 60 days' written notice.

6. Governing law. This agreement is governed by the laws of Austria.
"""


def main() -> None:
    text = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else SAMPLE_CONTRACT
    config = load_config()
    graph = contract_review_graph(models_from_config(config), config=config, prices=prices_from_config(config))
    r = graph.invoke(text)
    print(f"status={r.status}  ({r.message})")
    if r.escalation_reason:
        print(f"escalated because: {r.escalation_reason}: {r.escalation_detail}")
    found = (r.output_json or (r.draft if isinstance(r.draft, dict) else None) or {}).get("clauses", [])
    label = "clauses" if r.output_json is not None else "verified clauses in the draft"
    print(f"{label}: {len(found)}")
    for c in found:
        assert text[c["start"]:c["end"]] == c["quote"]  # the skill's guarantee
        print(f"  {c['type']:<24} [{c['start']}:{c['end']}] {c['quote']!r}")
    if r.status == "escalated":
        print(f"large model's answer:\n{r.answer}")
    t = r.totals
    print(f"ledger: {t.calls} calls, {t.prompt_tokens}+{t.completion_tokens} tokens, "
          f"${t.cost_usd:.6f} (all-large would be ${t.all_large_cost_usd:.6f})")


if __name__ == "__main__":
    main()
