"""The contract pipeline: find the clauses -> rate each clause's risk (in parallel) -> summarise.

Three skill nodes in one LangGraph graph, with a ``Send`` fan-out between the
first two. Each sub-task escalates on its own: a clause whose rating is rejected
goes to the large model for that clause alone (the same typed output, the same
checks), and without a large model it ends ``escalation_needed`` while the other
clauses keep their small-model ratings. When finding the clauses escalates
without an answer, the clauses its draft verified verbatim are still rated and
summarised, and the run stays ``escalation_needed``.

    slmgraph run --graph contract_pipeline "$(cat contract.txt)"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, Field

from ..agents._router import RulesRouter
from ..config import Config
from ..ledger import PriceTable
from ..models._base import Model
from ..skills._extract import DEFAULT_CLAUSE_TYPES, extract_skill
from ..skills._skill import AcceptancePolicy, Example, Skill
from ._graph import GraphSpec, SLMGraph, build_graph
from ._nodes import SkillNode, fan_out
from ._state import SLMState, add_run_list

__all__ = [
    "contract_pipeline_graph", "ContractPipelineState", "ClauseRisk", "RatedClause", "RiskSummary",
    "clause_risk_skill", "risk_summary_skill",
]

Risk = Literal["low", "medium", "high"]
_ORDER = {"low": 0, "medium": 1, "high": 2}


class ClauseInput(BaseModel):
    type: str
    quote: str


class ClauseRisk(BaseModel):
    risk: Risk = Field(description="how risky the clause is for the customer")
    reason: str = Field(description="one short sentence on why")


class RatedClause(BaseModel):
    type: str
    quote: str
    risk: Risk | None = Field(default=None, description="None: the rating escalated")
    reason: str = ""


class RatedClauses(BaseModel):
    clauses: list[RatedClause]


class RiskSummary(BaseModel):
    overall_risk: Risk = Field(description="the highest risk among the clauses (low when there are none)")
    summary: str = Field(description="two or three sentences for the reader of the contract")


def clause_risk_skill(*, model: str = "small") -> Skill:
    """Rate one clause's risk for the customer: low, medium or high, with a reason."""
    return Skill(
        name="rate_risk",
        description="rate how risky one contract clause is for the customer",
        instructions=(
            "You rate contract clauses for the customer who signs. High: unlimited or one-sided "
            "liability, termination without notice, automatic renewal traps. Medium: short "
            "notice periods, strict payment terms. Low: ordinary, balanced wording."
        ),
        output_type=ClauseRisk,
        input_type=ClauseInput,
        examples=[Example(ClauseInput(type="termination", quote="Either party may terminate with 60 days' notice."),
                          ClauseRisk(risk="low", reason="balanced notice for both parties"))],
        acceptance=AcceptancePolicy(max_repairs=1),
        model=model,
    )


def _highest(data: RatedClauses, out: RiskSummary) -> str | None:
    rated = [c.risk for c in data.clauses if c.risk is not None]
    want = max(rated, key=_ORDER.__getitem__) if rated else "low"
    if out.overall_risk != want:
        return f"overall_risk must be the highest clause risk, {want!r}, not {out.overall_risk!r}"
    return None


def risk_summary_skill(*, model: str = "small") -> Skill:
    """Summarise the rated clauses; ``overall_risk`` must be the highest clause risk."""
    return Skill(
        name="summarize_risk",
        description="summarise the risk of a contract from its rated clauses",
        instructions=(
            "You summarise a contract review for the customer. Say which clauses matter most and "
            "why, in two or three sentences. overall_risk is the highest risk among the clauses."
        ),
        output_type=RiskSummary,
        input_type=RatedClauses,
        acceptance=AcceptancePolicy(max_repairs=1, check=_highest),
        model=model,
    )


class ContractPipelineState(SLMState, total=False):
    """The pipeline's state: the contract, its clauses, one rating per clause, the summary."""

    request: str
    clauses: dict[str, Any] | None
    ratings: Annotated[list[dict[str, Any]], add_run_list]
    output: dict[str, Any] | None
    answer: str | None


def _found(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The clauses found: the accepted extraction, or, when it escalated, the clauses
    of its draft (which holds only quotes verified verbatim in the contract)."""
    if state.get("clauses") is not None:
        return state["clauses"]
    for e in state.get("escalations") or ():
        if e["node"] == "find_clauses" and isinstance(e.get("draft"), dict):
            # A draft with no verified clause leaves nothing to rate or summarise.
            return e["draft"] if e["draft"].get("clauses") else None
    return None


def _rated(state: Mapping[str, Any]) -> dict[str, Any] | None:
    if _found(state) is None:
        return None  # nothing was found, not even a verified draft: nothing to summarise
    rated = []
    for r in state.get("ratings") or ():
        rating = r["output"] or {}
        rated.append({**r["input"], "risk": rating.get("risk"), "reason": rating.get("reason", "")})
    return {"clauses": rated}


def _clauses(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = _found(state) or {}
    return [{"type": c["type"], "quote": c["quote"]} for c in found.get("clauses", ())]


def pipeline_shape(spec: GraphSpec) -> StateGraph:
    """find_clauses -> (Send, one per clause) rate_risk -> summarize -> END."""
    bind = spec.bindings
    find = SkillNode(spec.skills["extract"], models=bind, output="clauses", name="find_clauses",
                     starts_run=ContractPipelineState)
    rate = SkillNode(spec.skills["rate_risk"], models=bind, input="item", output="ratings", collect=True, name="rate_risk")
    summary = SkillNode(spec.skills["summarize_risk"], models=bind, input=_rated, output="output", answer="answer",
                        name="summarize")
    builder = StateGraph(ContractPipelineState)
    builder.add_node("find_clauses", find)
    builder.add_node("rate_risk", rate)
    builder.add_node("summarize", summary)
    builder.add_edge(START, "find_clauses")
    builder.add_conditional_edges("find_clauses", fan_out(_clauses, "rate_risk", empty="summarize"), ["rate_risk", "summarize"])
    builder.add_edge("rate_risk", "summarize")
    builder.add_edge("summarize", END)
    return builder


def contract_pipeline_graph(
    models: Mapping[str, Model],
    *,
    config: Config | None = None,
    prices: PriceTable | None = None,
    clause_types: Sequence[str] | None = None,
) -> SLMGraph:
    """Contract review as a pipeline of three skills. The request is the contract
    text; ``result.output`` is the :class:`RiskSummary`, the state keeps the
    clauses (``clauses``) and one rating per clause (``ratings``)."""
    cfg = config or Config()
    skills = [extract_skill(tuple(clause_types) if clause_types else DEFAULT_CLAUSE_TYPES),
              clause_risk_skill(), risk_summary_skill()]
    return build_graph(
        skills,
        models=models,
        router=RulesRouter([], default="extract"),  # not consulted: the pipeline has no router node
        prices=prices,
        checkpoint=cfg.checkpoint,
        name="contract_pipeline",
        shape=pipeline_shape,
        output_skill="summarize_risk",
        request_skills=("extract",),
    )
