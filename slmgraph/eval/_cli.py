"""``slmgraph eval`` and ``slmgraph calibrate``: the command-line side of slmgraph.eval."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from ..config import Config, load_config
from ..ledger import Price
from ..models._base import Model
from ._calibrate import sweep_thresholds, write_thresholds
from ._data import EvalRow, load_dataset, split_rows
from ._large import DEFAULT_CALL_COST, OfflineLargeModel, OracleModel, RecordedModel
from ._plot import plot_cost_quality
from ._report import routing_summary, summarize, to_markdown
from ._runner import run_eval
from ._scoring import load_scorer

if TYPE_CHECKING:
    from ..graphs._graph import SLMGraph

__all__ = ["add_eval_commands", "build_eval_graph"]


def _large(spec: str, cost: float) -> OfflineLargeModel | None:
    if spec == "oracle":
        return OracleModel(cost_per_call=cost)
    if spec.startswith("recorded:"):
        return RecordedModel(spec.split(":", 1)[1], cost_per_call=cost)
    if spec == "live":
        return None
    raise ConfigError("large_answers", f"unknown source {spec!r}; use oracle, recorded:FILE or live")


def build_eval_graph(graph: str, config: Config, large: Model | None) -> SLMGraph:
    """A ready graph (a name, or ``module:function``) with ``large`` bound as ``"large"``,
    the config's thresholds applied and no checkpointing."""
    from .._factory import models_from_config, prices_from_config
    from ..graphs._blueprints import GRAPHS, _factory, register_graph
    from ..graphs._thresholds import apply_config_thresholds, with_thresholds

    if graph not in GRAPHS:
        if ":" not in graph:
            _factory(graph)  # raises the "unknown graph" error with the names available
        register_graph(graph, graph)
    try:
        factory = _factory(graph)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("graph", f"cannot import {graph!r}: {exc}") from None
    models = models_from_config(config)
    prices = prices_from_config(config)
    if large is not None:
        models["large"] = large
        prices.prices[large.name] = Price(per_call_usd=getattr(large, "cost_per_call", 0.0))
        prices.baseline_model = large.name
    built = apply_config_thresholds(factory(models, config=config, prices=prices), config)
    return with_thresholds(built, checkpoint=None)


def _rows(args: argparse.Namespace) -> list[EvalRow]:
    rows = load_dataset(
        args.dataset, input_col=args.input_col, expected_col=args.expected_col, id_col=args.id_col, skill_col=args.skill_col
    )
    if args.limit:
        rows = rows[: args.limit]
    return rows


def _out_dir(args: argparse.Namespace, kind: str) -> Path:
    if args.out:
        return Path(args.out)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{args.graph}-{Path(args.dataset).stem}")
    return Path(".slmgraph") / kind / slug


def _meta(args: argparse.Namespace, large: OfflineLargeModel | None, config: Config, scorer: str) -> dict[str, Any]:
    if large is not None:
        lm = {"kind": large.kind, "name": large.name, "cost_per_call": large.cost_per_call}
    else:
        lm = {"kind": "live", "name": config.large.model if config.large else None, "cost_per_call": args.large_cost_per_call}
    return {"graph": args.graph, "dataset": str(args.dataset), "scorer": scorer, "large_model": lm}


def _prepare(args: argparse.Namespace, config_of: Callable[[argparse.Namespace], Config]) -> tuple:
    config = config_of(args)
    large = _large(args.large_answers, args.large_cost_per_call)
    if large is None and config.large is None:
        raise ConfigError("large", "--large-answers live needs a configured large model (--large-model)")
    scorer = load_scorer(args.scorer, label_field=args.label_field)
    return config, large, scorer, _rows(args)


def _cmd_eval(args: argparse.Namespace, config_of: Callable[[argparse.Namespace], Config]) -> int:
    config, large, scorer, rows = _prepare(args, config_of)
    graph = build_eval_graph(args.graph, config, large)
    out = _out_dir(args, "eval")
    results = Path(args.results) if args.results else out / "results.jsonl"
    records = asyncio.run(
        run_eval(graph, rows, results, scorer=scorer, large=large, concurrency=args.concurrency, progress=not args.no_progress)
    )
    report = summarize(records, _meta(args, large, config, scorer.name), large_call_cost=args.large_cost_per_call, seed=args.seed)
    report["results_file"] = str(results)
    figure = None
    if report["routing"].get("available"):
        op = report["routing"]["operating_point"]
        figure = plot_cost_quality(
            report["routing"], out / "cost_quality.png", title=f"{args.graph} on {Path(args.dataset).name}",
            points=[("this run", op["share"], op["quality"])],
        )
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(to_markdown(report, figure=figure.name if figure else None), encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(to_markdown(report, figure=str(figure) if figure else None))
        print(f"written: {out / 'report.json'}, {out / 'report.md'}" + (f", {figure}" if figure else ""))
    return 0


def _cmd_calibrate(args: argparse.Namespace, config_of: Callable[[argparse.Namespace], Config]) -> int:
    from ..graphs._thresholds import ALL_SKILLS, with_thresholds

    config, large, scorer, rows = _prepare(args, config_of)
    if large is None:
        raise ConfigError("large_answers", "calibrate needs the large model's answer for every row: use oracle or recorded:FILE")
    # one recording run: no threshold escalates anything, every confidence is measured
    graph = with_thresholds(build_eval_graph(args.graph, config, large), route_threshold=0.0, min_confidence={ALL_SKILLS: 0.0})
    out = _out_dir(args, "calibrate")
    results = Path(args.results) if args.results else out / "recorded.jsonl"
    records = asyncio.run(
        run_eval(graph, rows, results, scorer=scorer, large=large, concurrency=args.concurrency, progress=not args.no_progress)
    )
    by_id = {r["id"]: r for r in records}
    calib, hold = split_rows(rows, args.holdout, args.seed)
    calib_r, hold_r = [by_id[r.id] for r in calib], [by_id[r.id] for r in hold]
    cal = sweep_thresholds(calib_r, target=args.target, large_call_cost=args.large_cost_per_call, holdout=hold_r)
    written = None
    if not args.dry_run:
        target_file = args.write_config or args.config or "slmgraph.toml"
        written = write_thresholds(target_file, cal.chosen.thresholds)
        load_config(written)  # the file still loads
    routing = routing_summary(calib_r, large_call_cost=args.large_cost_per_call, seed=args.seed)
    points = [("chosen (calibration)", cal.chosen.share, cal.chosen.quality)]
    if cal.holdout is not None:
        points.append(("chosen (held out)", cal.holdout.share, cal.holdout.quality))
    figure = plot_cost_quality(routing, out / "cost_quality.png", title=f"calibrate {args.graph}: target {args.target:.0%} of large", points=points)
    report = {
        **_meta(args, large, config, scorer.name), "target": args.target, "rows": len(rows),
        "calibration_rows": len(calib_r), "holdout_rows": len(hold_r), "calibration": cal.to_dict(),
        "routing": routing, "written_to": str(written) if written else None, "figure": str(figure),
    }
    (out / "calibration.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    t, h = cal.chosen.thresholds, cal.holdout
    lines = [
        f"# Calibration: graph `{args.graph}`, target {args.target:.0%} of the large model's quality",
        "",
        f"- large model: **{large.kind}** `{large.name}` at ${large.cost_per_call:.4f} per call",
        f"- rows: {len(calib_r)} calibration, {len(hold_r)} held out (seed {args.seed})",
        f"- chosen: route_threshold = {t.route_threshold:.4g}, min_confidence = {t.min_confidence:.4g} "
        f"(best of {cal.candidates} pairs)",
        f"- calibration split: quality {cal.chosen.quality:.3f} (target {cal.target_quality:.3f}, "
        f"{'reached' if cal.reached else 'NOT reached'}), {cal.chosen.share:.1%} to the large model, "
        f"${cal.chosen.cost_per_1000:.4f} per 1,000 requests",
    ]
    if h is not None:
        lines.append(
            f"- held-out split: quality {h.quality:.3f} (target {cal.holdout_target:.3f}, "
            f"{'reached' if cal.holdout_reached else 'NOT reached'}), {h.share:.1%} to the large model, "
            f"${h.cost_per_1000:.4f} per 1,000 requests"
        )
    lines.append(f"- thresholds written to `{written}`" if written else "- dry run: nothing written")
    lines += ["", f"![cost-quality curve]({figure.name})", ""]
    (out / "calibration.md").write_text("\n".join(lines), encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print("\n".join(lines[:-2]))
        print(f"written: {out / 'calibration.json'}, {out / 'calibration.md'}, {figure}")
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph", help="a ready graph name, or module:function returning an SLMGraph")
    p.add_argument("dataset", help="JSON lines (.jsonl) or CSV with an input and an expected output per row")
    p.add_argument("--input-col", default="input", help="column holding the request (default: input)")
    p.add_argument("--expected-col", default="expected", help="column holding the gold output (default: expected)")
    p.add_argument("--id-col", help="column with unique row ids (default: the row's position)")
    p.add_argument("--skill-col", help="column naming the skill that should answer (routing confusion)")
    p.add_argument("--scorer", default="label", help="label (the output's label field, else the answer), exact, or module:function (default: label)")
    p.add_argument("--label-field", default="label", help="output field the label scorer reads (default: label)")
    p.add_argument("--large-answers", default="oracle", help="oracle (gold answers), recorded:FILE, or live (default: oracle)")
    p.add_argument("--large-cost-per-call", type=float, default=DEFAULT_CALL_COST, help=f"USD per large-model call (default {DEFAULT_CALL_COST})")
    p.add_argument("--concurrency", type=int, default=4, help="rows in flight at once (default 4)")
    p.add_argument("--limit", type=int, help="only the first N rows")
    p.add_argument("--out", help="output directory (default .slmgraph/<command>/<graph>-<dataset>)")
    p.add_argument("--results", help="results JSON-lines file (default OUT/results.jsonl); a rerun resumes it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def add_eval_commands(sub: Any, common: argparse.ArgumentParser, config_of: Callable[[argparse.Namespace], Config]) -> None:
    """Register ``eval`` and ``calibrate`` on the ``slmgraph`` parser."""
    ev = sub.add_parser("eval", parents=[common], help="run a graph over a dataset and report quality, cost and routing")
    _data_args(ev)
    ev.set_defaults(fn=lambda a: _cmd_eval(a, config_of))
    cal = sub.add_parser("calibrate", parents=[common], help="choose confidence thresholds for a quality target")
    _data_args(cal)
    cal.add_argument("--target", type=float, default=0.95, help="share of the large model's quality to reach (default 0.95)")
    cal.add_argument("--holdout", type=float, default=0.3, help="share of rows held out to check the choice (default 0.3)")
    cal.add_argument("--write-config", help="TOML file to write the thresholds to (default: --config, else slmgraph.toml)")
    cal.add_argument("--dry-run", action="store_true", help="report the thresholds without writing them")
    cal.set_defaults(fn=lambda a: _cmd_calibrate(a, config_of))


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `slmgraph eval` or `slmgraph calibrate`")
