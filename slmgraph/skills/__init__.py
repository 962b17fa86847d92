"""Skills: typed units of work, their acceptance policy, and the runner."""

from ._answer import AnswerOutput, ReasoningSignal, answer_skill, detect_reasoning
from ._classify import ClassifyOutput, ExampleBank, LabelScore, classify_skill
from ._bank import Ranked, load_examples
from ._head import LinearHead
from ._oos import OOSRule
from ._codegen import CodeResult, CodeTask, GeneratedCode, TestReport, generate_code_skill, run_tests
from ._extract import DEFAULT_CLAUSE_TYPES, Clause, Extraction, extract_skill, locate_quote, split_chunks
from ._parse_command import CommandTemplate, ParsedCommand, grounded, parse_command_skill, value_in_text
from ._run import run_skill, skill_messages
from ._summarize import SummaryOutput, summarize_skill
from ._sentiment import SentimentReport, TextSentiment, parse_texts, sentiment_batch_skill
from ._transaction_rules import LogFormatError, TransactionRules, parse_log
from ._transactions import (
    MalformedRow,
    ReviewedTransaction,
    RuleFinding,
    TransactionReport,
    flag_transactions_skill,
    render_transaction_report,
)
from ._skill import (
    DEFAULT_MIN_CONFIDENCE,
    AcceptancePolicy,
    Accepted,
    EscalationReason,
    Example,
    Rejected,
    Skill,
    SkillRunner,
    TextInput,
)

__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "Skill",
    "Example",
    "AcceptancePolicy",
    "TextInput",
    "Accepted",
    "Rejected",
    "EscalationReason",
    "SkillRunner",
    "run_skill",
    "skill_messages",
    # the catalogue
    "extract_skill",
    "Clause",
    "Extraction",
    "DEFAULT_CLAUSE_TYPES",
    "split_chunks",
    "locate_quote",
    "parse_command_skill",
    "CommandTemplate",
    "ParsedCommand",
    "value_in_text",
    "grounded",
    "flag_transactions_skill",
    "TransactionReport",
    "ReviewedTransaction",
    "RuleFinding",
    "MalformedRow",
    "render_transaction_report",
    "TransactionRules",
    "parse_log",
    "LogFormatError",
    "sentiment_batch_skill",
    "SentimentReport",
    "TextSentiment",
    "parse_texts",
    "classify_skill",
    "ClassifyOutput",
    "LabelScore",
    "ExampleBank",
    "Ranked",
    "load_examples",
    "LinearHead",
    "OOSRule",
    "summarize_skill",
    "SummaryOutput",
    "generate_code_skill",
    "CodeTask",
    "GeneratedCode",
    "CodeResult",
    "TestReport",
    "run_tests",
    "answer_skill",
    "AnswerOutput",
    "ReasoningSignal",
    "detect_reasoning",
]
