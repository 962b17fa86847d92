"""Curation and snapshots: duplicates out, bad teacher answers out, a stable content
hash that changes with the data, corrections, a time-ordered split, typed errors."""

from __future__ import annotations

import json
import sqlite3

import pytest

from slmgraph import ConfigError
from slmgraph.learn import (
    CorruptSnapshotError,
    EmptySnapshotError,
    LearningRecord,
    SqliteLearningStore,
    curate,
    label_balance,
    load_corrections,
)
from slmgraph.models._embed import HashingEmbedder


def rec(i: int, text: str, label: str | None = "change_pin", *, valid: bool = True, kind: str = "escalation") -> LearningRecord:
    return LearningRecord(key=f"k{i}", kind=kind, created_at=1000.0 + i, request=text, skill="triage",
                          label=label if valid else None, teacher_output={"label": label} if valid else None,
                          teacher_answer=label, teacher_valid=valid)


RECORDS = [
    rec(1, "I want to change my PIN"),
    rec(2, "i want to change my pin!"),                   # exact duplicate once normalised
    rec(3, "I want to change my PIN please"),             # near duplicate (hashing cosine 0.875)
    rec(4, "How can I change the PIN of my card?"),       # a paraphrase, kept
    rec(5, "Is a metal card available?", "card_types"),
    rec(6, "I'd like a card in metal", "card_types"),
    rec(7, "The teacher rambled here", valid=False),      # failed validation
    rec(8, "Where is my refund for the shoes", "refund_request"),
    rec(9, "where is my refund for the shoes?", "wrong_charge"),   # the teacher disagrees with itself
]


async def test_exact_and_near_duplicates_and_bad_teacher_answers_are_removed():
    snap = await curate(RECORDS, target="triage", embedder=HashingEmbedder(), near=0.85, holdout=0.0)
    kept = [r.key for r in snap.train]
    assert kept == ["k1", "k4", "k5", "k6"]
    assert snap.report["dropped"] == {"invalid_teacher": 1, "exact_duplicate": 1, "near_duplicate": 1, "teacher_disagreed": 2}
    # without an embedder only exact duplicates go
    snap2 = await curate(RECORDS, target="triage", holdout=0.0)
    assert [r.key for r in snap2.train] == ["k1", "k3", "k4", "k5", "k6"]


async def test_near_duplicates_that_disagree_are_both_dropped():
    recs = [rec(1, "I want to change my PIN"), rec(2, "I want to change my PIN please", "close_account")]
    with pytest.raises(EmptySnapshotError, match="teacher_disagreed"):
        await curate(recs, target="triage", embedder=HashingEmbedder(), near=0.85)


async def test_the_snapshot_hash_is_stable_and_changes_with_the_data():
    a = await curate(RECORDS, target="triage", embedder=HashingEmbedder(), near=0.85)
    b = await curate(list(reversed(RECORDS)), target="triage", embedder=HashingEmbedder(), near=0.85)
    assert a.id == b.id and a.content_hash == b.content_hash and len(a.id) == 16
    changed = [r.model_copy(update={"label": "other", "teacher_output": {"label": "other"}}) if r.key == "k6" else r for r in RECORDS]
    c = await curate(changed, target="triage", embedder=HashingEmbedder(), near=0.85)
    assert c.content_hash != a.content_hash
    more = await curate([*RECORDS, rec(10, "Can I pay my rent with the card", "card_payment")], target="triage")
    assert more.content_hash != (await curate(RECORDS, target="triage")).content_hash


async def test_the_split_is_by_time_the_newest_held_out():
    recs = [rec(i, f"distinct request number {w}", "lbl") for i, w in enumerate("abcdefghij")]
    snap = await curate(recs, target="triage", holdout=0.3)
    assert [r.key for r in snap.holdout] == ["k7", "k8", "k9"]
    assert max(r.created_at for r in snap.train) < min(r.created_at for r in snap.holdout)


async def test_corrections_beat_the_teacher_and_resolve_disagreement(tmp_path):
    path = tmp_path / "fix.jsonl"
    path.write_text(json.dumps({"request": "Where is my refund for the shoes", "label": "refund_request", "skill": "triage"}) + "\n")
    fixes = load_corrections(path)
    snap = await curate([*RECORDS, *fixes], target="triage", holdout=0.0)
    shoes = [r for r in snap.train if "shoes" in r.request.lower()]
    assert len(shoes) == 1 and shoes[0].label == "refund_request"
    assert snap.report["corrected"] == 2


def test_a_bad_corrections_file_imports_nothing_and_names_the_line(tmp_path):
    path = tmp_path / "fix.jsonl"
    path.write_text('{"request": "a", "label": "x"}\n{"request": "b"}\n')
    with pytest.raises(ConfigError, match="fix.jsonl:2"):
        load_corrections(path)
    path.write_text('{"request": "a", "label": "x"}\nnot json\n')
    with pytest.raises(ConfigError, match="fix.jsonl:2: not JSON"):
        load_corrections(path)


async def test_empty_input_is_a_typed_error():
    with pytest.raises(EmptySnapshotError):
        await curate([], target="triage")
    with pytest.raises(EmptySnapshotError, match="invalid_teacher"):
        await curate([rec(1, "x", valid=False)], target="triage")


def test_label_balance():
    bal = label_balance([rec(1, "a"), rec(2, "b"), rec(3, "c", "other")])
    assert bal["counts"] == {"change_pin": 2, "other": 1} and bal["imbalance"] == 2.0


async def test_a_tampered_snapshot_is_detected_and_the_records_survive(tmp_path):
    store = SqliteLearningStore(tmp_path / "s.sqlite")
    for r in RECORDS:
        assert await store.add(r)
    assert not await store.add(RECORDS[0])  # same key: not added twice
    snap = await curate(await store.records(skill="triage"), target="triage")
    await store.save_snapshot(snap)
    assert (await store.snapshot(snap.id[:8])).content_hash == snap.content_hash
    body = json.loads(sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT body FROM learn_snapshots").fetchone()[0])
    body["train"][0]["label"] = "tampered"
    db = sqlite3.connect(tmp_path / "s.sqlite")
    db.execute("UPDATE learn_snapshots SET body = ?", (json.dumps(body),))
    db.commit()
    with pytest.raises(CorruptSnapshotError, match=snap.id):
        await store.snapshot(snap.id)
    db.execute("UPDATE learn_snapshots SET body = 'garbage'")
    db.commit()
    with pytest.raises(CorruptSnapshotError):
        await store.snapshot(snap.id)
    assert len(await store.records()) == len(RECORDS)
    await store.close()
