"""Skills: typed units of work, their acceptance policy, and the runner."""

from ._extract import DEFAULT_CLAUSE_TYPES, Clause, Extraction, extract_skill, locate_quote, split_chunks
from ._parse_command import CommandTemplate, ParsedCommand, grounded, parse_command_skill, value_in_text
from ._run import run_skill, skill_messages
from ._skill import (
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
]
