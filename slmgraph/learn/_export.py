"""Exporting a snapshot: chat JSON lines for fine-tuning tools, and CSV.

The chat format is one JSON object per line with ``messages`` (system, user,
assistant), the shape the OpenAI fine-tuning API, Ollama-oriented trainers and
common trainers (TRL's SFT, axolotl, unsloth) read.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path

from ..skills._skill import Skill
from ._records import LearningRecord
from ._store import Snapshot

__all__ = ["chat_example", "export_chat", "export_csv", "target_text"]


def target_text(record: LearningRecord) -> str:
    """What the assistant should say: the label, or the typed output as JSON."""
    target = record.target()
    return target if isinstance(target, str) else json.dumps(target, ensure_ascii=False, sort_keys=True)


def chat_example(record: LearningRecord, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": record.request}, {"role": "assistant", "content": target_text(record)}]
    return {"messages": messages}


def system_prompt(skill: Skill | None) -> str | None:
    """The skill's instructions and schema, as the small model sees them."""
    if skill is None:
        return None
    return f"{skill.instructions.strip()}\n\nReply with one JSON object matching this JSON schema:\n{skill.output_schema_json()}"


def export_chat(records: Iterable[LearningRecord], path: str | Path, *, system: str | None = None) -> int:
    """Write chat-format JSON lines; returns the number of lines."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(chat_example(r, system), ensure_ascii=False) + "\n")
            n += 1
    return n


_COLUMNS = ["key", "split", "created_at", "kind", "skill", "request", "target", "escalation_reason", "teacher_valid",
            "cost_usd", "graph_version", "skill_version"]


def export_csv(snapshot: Snapshot, path: str | Path | None = None) -> str:
    """Write (and return) the snapshot as CSV, one row per record with its split."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(_COLUMNS)
    for split, recs in (("train", snapshot.train), ("holdout", snapshot.holdout)):
        for r in recs:
            w.writerow([r.key, split, f"{r.created_at:.3f}", r.kind, r.skill or "", r.request, target_text(r),
                        r.escalation_reason or "", r.teacher_valid, f"{r.cost_usd:.6f}", r.graph_version, r.skill_version or ""])
    text = buf.getvalue()
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
