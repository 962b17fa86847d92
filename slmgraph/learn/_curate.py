"""Curation: from raw records to an immutable, time-ordered train/holdout snapshot.

In order: human corrections replace the teacher's answer on the same request;
records whose teacher answer failed the skill's schema or checks are dropped;
exact duplicates (same normalised text) and near duplicates (embedding cosine at
or above ``near``) are removed, keeping the earliest; a request on which repeated
teacher answers disagree is dropped altogether, so the teacher's mistakes do not
become the student's. The rest is split by time: the newest ``holdout`` share is
held out. Nothing is deleted from the store: a snapshot is a curated copy.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ..models._embed import Embedder
from ._embedcache import cached, embed_all
from ._errors import EmptySnapshotError
from ._records import LearningRecord, canonical_json, record_key
from ._store import Snapshot

__all__ = ["curate", "load_corrections", "label_balance", "normalise"]

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s<>]")


def normalise(text: str) -> str:
    """Lower case, punctuation out, whitespace collapsed: what makes two texts 'the same'."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def _target_key(r: LearningRecord) -> str:
    return canonical_json(r.target())


def load_corrections(path: str | Path, *, skill: str | None = None) -> list[LearningRecord]:
    """Read human corrections: JSON lines ``{"request": ..., "label": ...}`` or
    ``{"request": ..., "output": {...}}``, optionally with ``"skill"``.

    Every line is checked before any is returned, so a bad file imports nothing.

    Raises:
        ConfigError: names the file and line of a bad record.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("corrections", f"cannot read {str(p)!r}: {exc}") from None
    out = []
    now = time.time()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError("corrections", f"{p}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("request"), str) or not row["request"].strip():
            raise ConfigError("corrections", f'{p}:{n}: needs a non-empty "request"')
        label, output = row.get("label"), row.get("output")
        if (label is None) == (output is None):
            raise ConfigError("corrections", f'{p}:{n}: give exactly one of "label" or "output"')
        if label is not None and not isinstance(label, str):
            raise ConfigError("corrections", f'{p}:{n}: "label" must be a string')
        if output is not None and not isinstance(output, dict):
            raise ConfigError("corrections", f'{p}:{n}: "output" must be a JSON object')
        name = row.get("skill", skill)
        out.append(LearningRecord(
            key=record_key("correction", name, row["request"], label, output),
            kind="correction", created_at=float(row.get("created_at", now)), request=row["request"], skill=name,
            teacher_answer=label if label is not None else json.dumps(output),
            teacher_output={"label": label} if label is not None else output,
            teacher_valid=True, label=label,
        ))
    return out


def label_balance(records: Sequence[LearningRecord]) -> dict[str, Any]:
    """Counts per label (or per distinct target), with the largest/smallest ratio."""
    counts = Counter(r.label if r.label is not None else _target_key(r)[:60] for r in records)
    if not counts:
        return {"labels": 0, "counts": {}, "imbalance": None}
    top, low = max(counts.values()), min(counts.values())
    return {"labels": len(counts), "counts": dict(counts.most_common()), "imbalance": round(top / low, 2)}


async def curate(
    records: Sequence[LearningRecord],
    *,
    target: str,
    embedder: Embedder | None = None,
    near: float = 0.97,
    holdout: float = 0.2,
    progress: bool = False,
) -> Snapshot:
    """Curate ``records`` of one target into a snapshot (not yet stored).

    Args:
        records: the target's records, any order; ``correction`` records override
            the teacher on the same (normalised) request.
        embedder: for near duplicates; ``None`` removes exact duplicates only.
        near: the cosine at or above which two requests are near duplicates.
        holdout: the newest share of records kept for evaluation.
        progress: draw a progress bar while embedding.

    Raises:
        EmptySnapshotError: no record survives curation.
        ConfigError: ``near`` or ``holdout`` out of range.
    """
    if not 0.0 < near <= 1.0:
        raise ConfigError("learning.near_duplicate", f"must be in (0, 1], got {near}")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError("learning.holdout", f"must be in [0, 1), got {holdout}")
    ordered = sorted(records, key=lambda r: (r.created_at, r.key))
    dropped: Counter[str] = Counter()
    fixes = {normalise(r.request): r for r in ordered if r.kind == "correction"}
    usable: list[LearningRecord] = []
    for r in ordered:
        fix = fixes.get(normalise(r.request))
        if fix is not None and r.kind != "correction":
            r = r.model_copy(update={
                "teacher_output": fix.teacher_output, "teacher_answer": fix.teacher_answer,
                "label": fix.label, "teacher_valid": True, "teacher_problem": None,
            })
            dropped["corrected"] += 1  # counted, not dropped: replaced by the human answer
        if not r.teacher_valid:
            dropped["invalid_teacher"] += 1
            continue
        usable.append(r)
    # Exact duplicates; a text whose answers disagree goes altogether (unless corrected).
    groups: dict[str, list[LearningRecord]] = {}
    for r in usable:
        groups.setdefault(normalise(r.request), []).append(r)
    kept: list[LearningRecord] = []
    for text, group in groups.items():
        if len({_target_key(r) for r in group}) > 1 and text not in fixes:
            dropped["teacher_disagreed"] += len(group)
            continue
        kept.append(group[0])
        dropped["exact_duplicate"] += len(group) - 1
    kept.sort(key=lambda r: (r.created_at, r.key))
    if embedder is not None and len(kept) > 1:
        kept = await _near_duplicates(kept, cached(embedder), near, dropped, progress)
    if not kept:
        raise EmptySnapshotError(f"no usable record for {target!r} ({len(records)} in, dropped: {dict(dropped) or 'none'})")
    n_hold = math.ceil(len(kept) * holdout) if len(kept) > 1 and holdout > 0 else 0
    train, held = kept[: len(kept) - n_hold], kept[len(kept) - n_hold :]
    report = {
        "records_in": len(records), "kept": len(kept), "train": len(train), "holdout": len(held),
        "dropped": {k: v for k, v in dropped.items() if k != "corrected"}, "corrected": dropped.get("corrected", 0),
        "balance": label_balance(kept), "near_duplicate": near, "embedder": getattr(embedder, "name", None),
    }
    return Snapshot.build(target, train, held, report)


async def _near_duplicates(
    kept: list[LearningRecord], embedder: Embedder, near: float, dropped: Counter[str], progress: bool,
) -> list[LearningRecord]:
    import numpy as np

    vectors = await embed_all(embedder, [r.request for r in kept], progress=progress, label="curate: embedding")
    m = np.asarray(vectors, dtype=np.float32)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    chosen: list[int] = []
    bad: set[int] = set()
    for i in range(len(kept)):
        if chosen:
            sims = m[chosen] @ m[i]
            j = int(np.argmax(sims))
            if sims[j] >= near:
                if _target_key(kept[chosen[j]]) != _target_key(kept[i]):
                    bad.add(chosen[j])
                    dropped["teacher_disagreed"] += 1
                else:
                    dropped["near_duplicate"] += 1
                continue
        chosen.append(i)
    dropped["teacher_disagreed"] += len(bad)
    return [kept[i] for i in chosen if i not in bad]
