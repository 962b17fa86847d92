"""``slmgraph data list|show|snapshot|import|export`` and ``slmgraph learn status|run|promote|rollback|report``.

Heavy modules load inside the commands, so ``slmgraph --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["add_learning_commands"]


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


async def _with_store(cfg: Any, fn: Callable[[Any], Any]) -> int:
    from ._config import store_of

    store = store_of(cfg)
    try:
        return await fn(store)
    finally:
        await store.close()


def _graph(args: argparse.Namespace, cfg: Any) -> Any:
    from ..graphs._blueprints import graph_from_config

    return graph_from_config(args.graph, cfg)


def _learner(args: argparse.Namespace, cfg: Any, store: Any, strategy: str = "memory") -> Any:
    from ..models._embed import default_embedder
    from ._config import learning_config
    from ._loop import Learner
    from ._strategies import MemoryStrategy

    lc = learning_config(cfg)
    if strategy == "memory":
        made: Any = MemoryStrategy(adopt_after=lc.adopt_after)
    elif strategy == "head":
        from ._head import HeadStrategy

        made = HeadStrategy(adopt_after=lc.adopt_after)
    else:
        from ._lora import LoraStrategy

        made = LoraStrategy(store.artifacts / "adapters", progress=not args.no_progress)
    return Learner.for_graph(_graph(args, cfg), store, strategy=made, embedder=default_embedder(),
                             near=lc.near_duplicate, holdout=lc.holdout, margin=lc.margin, progress=not args.no_progress)


# -- data ---------------------------------------------------------------------------
async def _data_list(args: argparse.Namespace, store: Any) -> int:
    counts = await store.count(skill=args.skill)
    snaps = await store.snapshots(args.skill)
    if args.json:
        print(json.dumps({"records": counts, "snapshots": snaps}, indent=2))
        return 0
    print(f"store:     {store.where}")
    print(f"records:   {sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none'})")
    print(f"snapshots: {len(snaps)}")
    for s in snaps:
        print(f"  {s['id']}  {s['target']:<16} train {s['train']:>5}  holdout {s['holdout']:>5}  {_when(s['created_at'])}")
    return 0


async def _data_show(args: argparse.Namespace, store: Any) -> int:
    snap = await store.snapshot(args.snapshot)
    if args.json:
        print(json.dumps({"id": snap.id, "content_hash": snap.content_hash, "target": snap.target,
                          "train": len(snap.train), "holdout": len(snap.holdout), "report": snap.report}, indent=2))
        return 0
    rep = snap.report
    print(f"snapshot {snap.id} ({snap.content_hash}) for {snap.target}, made {_when(snap.created_at)}")
    print(f"records in {rep.get('records_in')}, kept {rep.get('kept')}: train {len(snap.train)}, holdout {len(snap.holdout)}")
    print(f"dropped: {rep.get('dropped') or 'none'}; corrected by humans: {rep.get('corrected', 0)}")
    bal = rep.get("balance") or {}
    print(f"labels: {bal.get('labels')} (largest/smallest {bal.get('imbalance')})")
    for label, n in list((bal.get("counts") or {}).items())[: args.top]:
        print(f"  {n:>5}  {label}")
    return 0


async def _data_snapshot(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    learner = _learner(args, cfg, store)
    for target in [args.skill] if args.skill else list(learner.skills):
        snap = await learner.snapshot(target)
        print(f"{target}: snapshot {snap.id} (train {len(snap.train)}, holdout {len(snap.holdout)})")
    return 0


async def _data_import(args: argparse.Namespace, store: Any) -> int:
    from ._curate import load_corrections

    fixes = load_corrections(args.file, skill=args.skill)
    added = sum([await store.add(r) for r in fixes])
    print(f"imported {added} corrections ({len(fixes) - added} already there)")
    return 0


async def _data_export(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from ._export import export_chat, export_csv, system_prompt

    snap = await store.snapshot(args.snapshot)
    records = {"train": snap.train, "holdout": snap.holdout, "all": snap.records}[args.split]
    if args.format == "csv":
        export_csv(snap, args.out)
        print(f"wrote {len(snap.records)} rows to {args.out}")
        return 0
    system = None
    if args.graph:
        system = system_prompt(_graph(args, cfg).skills.get(snap.target))
    n = export_chat(records, args.out, system=system)
    print(f"wrote {n} chat examples to {args.out}")
    return 0


# -- learn --------------------------------------------------------------------------
async def _status(args: argparse.Namespace, store: Any) -> int:
    versions = await store.versions(args.skill)
    targets = sorted({v.target for v in versions} | ({args.skill} if args.skill else set()))
    out = {}
    for t in targets:
        out[t] = {"current": await store.current(t), "history": await store.history(t),
                  "records": await store.count(skill=t), "versions": [v.id for v in versions if v.target == t]}
    events = [e.model_dump() for e in await store.events(args.skill, limit=args.events)]
    if args.json:
        print(json.dumps({"targets": out, "events": events}, indent=2, default=str))
        return 0
    if not targets:
        print("no versions yet; run `slmgraph learn run --graph NAME` after some escalations")
    for t, info in out.items():
        print(f"{t}: serving {info['current'] or '(the skill as built)'}; records {info['records']}; "
              f"{len(info['versions'])} versions")
    for e in events:
        print(f"  {_when(e['at'])} {e['target']:<14} {e['kind']:<10} {e['version'] or '-'}  {e['detail'].get('reason') or e['detail'].get('why') or ''}")
    return 0


async def _run(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from ._errors import EmptySnapshotError

    learner = _learner(args, cfg, store, args.strategy)
    code = 0
    for target in [args.skill] if args.skill else list(learner.skills):
        try:
            result = await learner.cycle(target, promote=not args.no_promote, live_sample=args.live)
        except EmptySnapshotError as exc:
            print(f"{target}: nothing to learn yet: {exc}")
            code = code or 1
            continue
        print(f"{target}: snapshot {result.snapshot.id}, candidate {result.candidate.id if result.candidate else '-'}")
        if result.report is not None:
            _print_report("holdout", result.report)
        print(f"  {'promoted' if result.promoted else 'not promoted'}: {result.note}")
    return code


def _print_report(what: str, rep: Any) -> None:
    c, n = rep.current, rep.candidate
    print(f"  {what} {rep.n}: quality {c.quality[0]:.3f} -> {n.quality[0]:.3f} (diff {rep.quality_diff[0]:+.3f}, "
          f"95% CI {rep.quality_diff[1]:+.3f}..{rep.quality_diff[2]:+.3f}); escalation {c.escalation_rate[0]:.3f} -> "
          f"{n.escalation_rate[0]:.3f}; cost/request ${c.cost[0]:.6f} -> ${n.cost[0]:.6f}")


async def _shadow(args: argparse.Namespace, store: Any) -> int:
    if args.stop:
        await store.set_shadow(args.version, None, reason=args.reason)
        print(f"{args.version}: no version in shadow")
        return 0
    if not 0.0 < args.sample <= 1.0:
        from .._errors import ConfigError

        raise ConfigError("--sample", f"must be above 0 and at most 1, got {args.sample}")
    version = await store.version(args.version)
    await store.set_shadow(version.target, version.id, args.sample, reason=args.reason)
    print(f"{version.target}: {version.id} in shadow on {args.sample:.0%} of live traffic (it never answers)")
    return 0


async def _judge(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    learner = _learner(args, cfg, store)
    version = await store.version(args.version)
    promoted_before = await store.current(version.target)
    rep = await learner.judge_live(version.id, promote=not args.no_promote, min_labelled=args.min_labelled)
    print(f"{version.target}: {version.id} on {rep.n} live shadow results ({rep.extra['labelled']} with a teacher answer)")
    _print_report("live", rep)
    now = await store.current(version.target)
    print(f"  {'promoted' if now != promoted_before else 'not promoted'}: {rep.why}")
    return 0


async def _promote(args: argparse.Namespace, store: Any) -> int:
    version = await store.version(args.version)
    await store.promote(version.target, version.id, args.reason)
    print(f"{version.target}: now serving {version.id}")
    return 0


async def _rollback(args: argparse.Namespace, store: Any) -> int:
    before = await store.current(args.skill)
    now = await store.rollback(args.skill, args.reason)
    print(f"{args.skill}: {before or '(as built)'} -> {now or '(the skill as built)'}")
    return 0


async def _report(args: argparse.Namespace, store: Any) -> int:
    from ._report import windows_from_store, write_report

    windows, marks = await windows_from_store(store, args.skill)
    md, png = write_report(args.out, windows, marks, title=f"learning loop: {args.skill or 'all skills'}")
    print(f"written: {md}, {png}")
    return 0


def add_learning_commands(sub: Any, common: argparse.ArgumentParser, config_of: Callable[[argparse.Namespace], Any]) -> None:
    """Register ``data`` and ``learn`` on the ``slmgraph`` parser."""

    def run(fn: Callable[..., Any], with_cfg: bool = False) -> Callable[[argparse.Namespace], int]:
        def call(args: argparse.Namespace) -> int:
            cfg = config_of(args)
            return asyncio.run(_with_store(cfg, (lambda s: fn(args, cfg, s)) if with_cfg else (lambda s: fn(args, s))))
        return call

    data = sub.add_parser("data", help="the learning loop's records and snapshots")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("list", parents=[common], help="record counts and snapshots")
    p.add_argument("--skill")
    p.set_defaults(fn=run(_data_list))
    p = dsub.add_parser("show", parents=[common], help="one snapshot: sizes, what curation dropped, label balance")
    p.add_argument("snapshot", help="snapshot id (or a unique prefix)")
    p.add_argument("--top", type=int, default=20, help="labels to list")
    p.set_defaults(fn=run(_data_show))
    p = dsub.add_parser("snapshot", parents=[common], help="curate the records into a new snapshot")
    p.add_argument("--graph", default="helpdesk")
    p.add_argument("--skill")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=run(_data_snapshot, True))
    p = dsub.add_parser("import", parents=[common], help="import human corrections (JSON lines)")
    p.add_argument("file")
    p.add_argument("--skill", help="the skill of lines without one")
    p.set_defaults(fn=run(_data_import))
    p = dsub.add_parser("export", parents=[common], help="export a snapshot as chat JSON lines or CSV")
    p.add_argument("snapshot")
    p.add_argument("--format", choices=["chat", "csv"], default="chat")
    p.add_argument("--split", choices=["train", "holdout", "all"], default="train")
    p.add_argument("--graph", help="add the skill's instructions as the system message")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=run(_data_export, True))

    learn = sub.add_parser("learn", help="run, inspect, promote and roll back learned versions")
    lsub = learn.add_subparsers(dest="learn_command", required=True)
    p = lsub.add_parser("status", parents=[common], help="what each skill serves, and the registry's log")
    p.add_argument("--skill")
    p.add_argument("--events", type=int, default=20)
    p.set_defaults(fn=run(_status))
    p = lsub.add_parser("run", parents=[common], help="one learning cycle: snapshot, candidate, shadow eval, promote")
    p.add_argument("--graph", default="helpdesk")
    p.add_argument("--skill")
    p.add_argument("--strategy", choices=["memory", "head", "lora"], default="memory")
    p.add_argument("--no-promote", action="store_true", help="evaluate only")
    p.add_argument("--live", type=float, metavar="SHARE",
                   help="put a passing candidate in shadow on this share of live traffic instead of promoting it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=run(_run, True))
    p = lsub.add_parser("shadow", parents=[common], help="run a version in shadow on live traffic (it never answers)")
    p.add_argument("version", help="the version (with --stop: the skill)")
    p.add_argument("--sample", type=float, default=0.1, help="share of live requests (default 0.1)")
    p.add_argument("--stop", action="store_true", help="stop the skill's shadow")
    p.add_argument("--reason", default="manual")
    p.set_defaults(fn=run(_shadow))
    p = lsub.add_parser("judge", parents=[common], help="judge a version on its live shadow results; promote if it passes")
    p.add_argument("version")
    p.add_argument("--graph", default="helpdesk")
    p.add_argument("--min-labelled", type=int, default=10, help="live results with a teacher answer needed")
    p.add_argument("--no-promote", action="store_true", help="evaluate only")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=run(_judge, True))
    p = lsub.add_parser("promote", parents=[common], help="serve a version (atomic)")
    p.add_argument("version")
    p.add_argument("--reason", default="manual")
    p.set_defaults(fn=run(_promote))
    p = lsub.add_parser("rollback", parents=[common], help="restore the version served before the last promotion")
    p.add_argument("skill")
    p.add_argument("--reason", default="manual")
    p.set_defaults(fn=run(_rollback))
    p = lsub.add_parser("report", parents=[common], help="Markdown + PNG: escalation rate and cost over the stream")
    p.add_argument("--skill")
    p.add_argument("--out", default=".slmgraph/learning-report")
    p.set_defaults(fn=run(_report))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `slmgraph data` or `slmgraph learn`")
