"""Skills: typed units of work, their acceptance policy, and the runner."""

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
]
