"""``slmgraph batch`` and ``slmgraph prune``."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

from ..config import Config

__all__ = ["add_batch_commands"]


def _cmd_batch(args: argparse.Namespace, config_of: Callable[[argparse.Namespace], Config]) -> int:
    from ._run import GraphSource, run_batch

    executor = None
    if args.ray:
        from ._ray import RayExecutor

        executor = RayExecutor(args.ray, workers=args.workers, shard_size=args.shard_size)
    source = GraphSource(args.graph, config_of(args))
    summary = asyncio.run(run_batch(
        source, args.input, args.out, input_col=args.input_col, id_col=args.id_col,
        concurrency=args.concurrency, executor=executor, progress=not args.no_progress and not args.json,
    ))
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print("\n".join(summary.lines()))
    return 0


def _cmd_prune(args: argparse.Namespace, config_of: Callable[[argparse.Namespace], Config]) -> int:
    from ..storage._prune import parse_age, prune

    age = parse_age(args.older_than)
    report = asyncio.run(prune(config_of(args).checkpoint, older_than_s=age, dry_run=args.dry_run))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.line())
        for t in report.threads[:50]:
            print(f"  {t}")
        if len(report.threads) > 50:
            print(f"  ... and {len(report.threads) - 50} more")
    return 0


def add_batch_commands(sub: Any, common: argparse.ArgumentParser, config_of: Callable[[argparse.Namespace], Config]) -> None:
    b = sub.add_parser("batch", parents=[common], help="run a graph over every row of a JSON-lines or CSV file, resumably")
    b.add_argument("graph", help="ready graph name, or module:function (a graph factory)")
    b.add_argument("input", help="input rows: .jsonl or .csv")
    b.add_argument("--out", required=True, help="JSON-lines output; rerunning with the same file resumes the job")
    b.add_argument("--input-col", default="input", help="the column / field holding the request (default: input)")
    b.add_argument("--id-col", default="id", help="the id column, kept in the output (default: id; else the row number)")
    b.add_argument("--concurrency", type=int, help="rows in flight (default: twice the model hosts' capacity)")
    b.add_argument("--ray", metavar="auto|ADDRESS", help="run shards on Ray: 'auto' or a cluster address")
    b.add_argument("--workers", type=int, default=2, help="Ray shard tasks at once (default 2)")
    b.add_argument("--shard-size", type=int, help="rows per Ray shard")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(fn=lambda a: _cmd_batch(a, config_of))
    p = sub.add_parser("prune", parents=[common], help="remove the checkpoints and runs of old finished threads")
    p.add_argument("--older-than", required=True, help="age bound, e.g. 30d, 12h")
    p.add_argument("--dry-run", action="store_true", help="show what would be removed, remove nothing")
    p.set_defaults(fn=lambda a: _cmd_prune(a, config_of))
