"""The ``slmgraph`` command: ``run``, ``serve``, ``doctor``, ``models``, ``eval``, ``calibrate``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._errors import RequestError, SlmGraphError
from .config import Config, load_config

if TYPE_CHECKING:  # `slmgraph --help` loads no graph, backend or LangChain module
    from .graphs._state import RunResult

__all__ = ["main"]



def _as_json(result: Any) -> dict[str, Any]:
    """A result for ``--json``: its fields, with ``output`` as plain JSON."""
    return {**result.model_dump(mode="json"), "output": result.output_json}

def _config(args: argparse.Namespace) -> Config:
    small = {"provider": args.small_provider, "model": args.small_model, "host": args.ollama_host}
    overrides: dict[str, Any] = {"small": small, "checkpoint": args.checkpoint, "route_threshold": args.threshold}
    overrides["large"] = {"provider": args.large_provider, "model": args.large_model, "base_url": args.large_base_url}
    return load_config(args.config, overrides=overrides)


def _print_result(r: RunResult) -> None:
    conf = f" (confidence {r.route_confidence:.2f})" if r.route_confidence is not None else ""
    print(f"route:   {r.route or 'none'}{conf}")
    print(f"status:  {r.status}: {r.message}")
    if r.escalation_reason:
        print(f"reason:  {r.escalation_reason}: {r.escalation_detail}")
    print(f"answer:  {r.answer if r.answer is not None else '(none)'}")
    if r.status == "escalation_needed":
        print(f"draft:   {json.dumps(r.draft, ensure_ascii=False)}")
    t = r.totals
    print(
        f"ledger:  {t.calls} calls ({t.small_calls} small, {t.large_calls} large), "
        f"{t.prompt_tokens}+{t.completion_tokens} tokens, {t.latency_s:.2f}s in models, "
        f"cost ${t.cost_usd:.6f} (local ${t.local_cost_usd:.6f}), " + (
            f"vs ${t.baseline_usd:.6f} sent straight to the large model, saved ${t.saved_usd:.6f}"
            if t.baseline_usd else "no large-model price configured, so no baseline to compare with"
        )
    )
    for e in r.ledger:
        print(
            f"  - {e.node:<15} {e.skill or '-':<12} {e.provider}:{e.model} "
            f"{e.prompt_tokens}+{e.completion_tokens} tok {e.latency_s * 1000:.0f} ms ${e.cost_usd:.6f}"
        )
    print(f"thread:  {r.thread_id}")


def _stdin_text() -> str:
    """The request from stdin, which must be UTF-8."""
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"stdin is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "convert it (e.g. `iconv -t UTF-8`) or pass the request as arguments"
        ) from None


def _check_text(text: str) -> None:
    """Arguments that were not UTF-8 reach Python as lone surrogates: refuse them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"the request is not valid UTF-8 text (at character {exc.start}); "
                           "send UTF-8 text") from None


def _cmd_run(args: argparse.Namespace) -> int:
    from .graphs._blueprints import graph_from_config

    graph = graph_from_config(args.graph, _config(args))
    if args.resume:
        result = graph.resume(args.resume)
    else:
        text = " ".join(args.request) if args.request else _stdin_text()
        _check_text(text)
        result = graph.invoke(text, thread_id=args.thread_id)
    if args.json:
        print(json.dumps(_as_json(result), indent=2, ensure_ascii=False))
    else:
        _print_result(result)
    return 0


async def _doctor(cfg: Config) -> list[tuple[str, bool, str]]:
    from ._factory import DEFAULT_OLLAMA_HOST, ollama_models

    checks: list[tuple[str, bool, str]] = []
    host = cfg.small.host or DEFAULT_OLLAMA_HOST
    pulled = ollama_models(host)
    if pulled is None:
        checks.append(("ollama", False, f"no server at {host}; start it with `ollama serve` or set OLLAMA_HOST"))
    else:
        checks.append(("ollama", True, f"{host} answers; pulled: {', '.join(pulled) or '(none; try `ollama pull qwen2.5:0.5b`)'}"))
    if cfg.large is None:
        checks.append(("large model", False, "not configured; escalations end as 'escalation needed' (set --large-model / SLMGRAPH_LARGE_MODEL)"))
    else:
        from ._factory import build_model

        try:
            model = build_model(cfg.large)
            names = await model.list_models()  # type: ignore[attr-defined]
            await model.aclose()
            have = cfg.large.model in names
            checks.append(("large model", have, f"{model.provider} endpoint answers; {cfg.large.model!r} {'is' if have else 'is NOT'} listed"))
        except SlmGraphError as exc:
            checks.append(("large model", False, str(exc)))
    try:
        from .models._llamacpp import LlamaCppModel

        engine = LlamaCppModel()
        tokens = await asyncio.to_thread(engine.count_tokens, "hello world")
        checks.append(("embedded", tokens > 0, f"{engine.name} loads from {engine.model_path}"))
    except SlmGraphError as exc:
        checks.append(("embedded", False, str(exc)))
    return checks


def _cmd_doctor(args: argparse.Namespace) -> int:
    checks = asyncio.run(_doctor(_config(args)))
    for name, ok, detail in checks:
        print(f"[{'ok' if ok else '--'}] {name:<12} {detail}")
    usable = any(ok for name, ok, _ in checks if name in ("ollama", "embedded"))
    print("a small model is available" if usable else "no small model is available")
    return 0 if usable else 1


async def _models(cfg: Config) -> dict[str, Any]:
    from ._factory import DEFAULT_OLLAMA_HOST, build_model, ollama_models

    out: dict[str, Any] = {"ollama": ollama_models(cfg.small.host or DEFAULT_OLLAMA_HOST)}
    try:
        from .models._llamacpp import default_gguf_path

        out["embedded"] = [str(default_gguf_path())]
    except SlmGraphError as exc:
        out["embedded"] = str(exc)
    if cfg.large is not None:
        try:
            model = build_model(cfg.large)
            out["large"] = await model.list_models()  # type: ignore[attr-defined]
            await model.aclose()
        except SlmGraphError as exc:
            out["large"] = str(exc)
    return out


def _cmd_models(args: argparse.Namespace) -> int:
    found = asyncio.run(_models(_config(args)))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for backend, names in found.items():
        if names is None:
            print(f"{backend}: not reachable")
        elif isinstance(names, str):
            print(f"{backend}: {names}")
        else:
            print(f"{backend}:" + "".join(f"\n  {n}" for n in names) if names else f"{backend}: (none)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import check_bind, graphs_from_config, load_serve_config, serve

    serve_cfg = load_serve_config(args.config, overrides={"host": args.host, "port": args.port})
    check_bind(serve_cfg)  # refuse a public bind without API keys before building anything
    serve(graphs_from_config(args.graphs, _config(args)), serve_cfg, log_level=args.log_level, workers=args.workers)
    return 0


def _cmd_recover(args: argparse.Namespace) -> int:
    from .graphs._blueprints import graph_from_config

    graph = graph_from_config(args.graph, _config(args))
    found = graph.pending_runs(include_failed=args.include_failed)
    results = graph.recover(include_failed=args.include_failed)
    left = graph.pending_runs(include_failed=args.include_failed)
    if args.json:
        print(json.dumps({"interrupted": len(found), "finished": [_as_json(r) for r in results],
                          "left": [r.run_id for r in left]}, indent=2))
    else:
        print(f"interrupted runs: {len(found)}; finished now: {len(results)}; left: {len(left)}")
        for r in results:
            print(f"  {r.thread_id}: {r.status} ({r.message})")
        for r in left:
            print(f"  {r.thread_id}: still {r.status}: {r.error or 'its thread is busy'}")
    return 0 if not left else 1


#: The ready graphs' names for --help, which must not import the graphs (a test keeps it
#: in step with ``slmgraph.graphs.GRAPHS``).
_READY = "quickstart, helpdesk, contract_review, contract_pipeline, transaction_review, assistant"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML config file")
    common.add_argument("--small-provider", choices=["auto", "embedded", "ollama", "openai"])
    common.add_argument("--small-model", help="small model name (e.g. an Ollama tag)")
    common.add_argument("--ollama-host", help="Ollama server URL (default $OLLAMA_HOST or http://127.0.0.1:11434)")
    common.add_argument("--large-provider", choices=["openai", "ollama"])
    common.add_argument("--large-model", help="large model name; enables escalation")
    common.add_argument("--large-base-url", help="OpenAI-compatible base URL (default $OPENAI_BASE_URL)")
    common.add_argument("--checkpoint", help="SQLite checkpoint file, or a postgresql:// DSN (default $SLMGRAPH_CHECKPOINT)")
    common.add_argument("--threshold", type=float, help="route confidence threshold (0..1)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    p = argparse.ArgumentParser(prog="slmgraph", description="Agent graphs of small language models.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="send one request through a graph")
    run.add_argument("request", nargs="*", help="the request text (read from stdin when absent)")
    run.add_argument("--graph", default="quickstart", help=f"ready graph name ({_READY}) or module:function (default: quickstart)")
    run.add_argument("--thread-id", help="thread id for the checkpoint (default: a new one)")
    run.add_argument("--resume", metavar="THREAD_ID", help="finish an interrupted run")
    run.set_defaults(fn=_cmd_run)
    srv = sub.add_parser("serve", parents=[common], help="serve graphs over the OpenAI and Ollama chat protocols")
    srv.add_argument("graphs", nargs="+", help="ready graph names, each served as a model")
    srv.add_argument("--host", help="bind address (default 127.0.0.1; others need API keys)")
    srv.add_argument("--port", type=int, help="TCP port (default 8000)")
    srv.add_argument("--workers", type=int, default=1, help="server processes on the one port (default 1); share state with a postgresql:// checkpoint")
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    srv.set_defaults(fn=_cmd_serve)
    sub.add_parser("doctor", parents=[common], help="check which backends are usable").set_defaults(fn=_cmd_doctor)
    sub.add_parser("models", parents=[common], help="list what each backend offers").set_defaults(fn=_cmd_models)
    rec = sub.add_parser("recover", parents=[common], help="finish the runs a crash interrupted")
    rec.add_argument("--graph", default="quickstart", help=f"ready graph name ({_READY}) or module:function (default: quickstart)")
    rec.add_argument("--include-failed", action="store_true", help="also retry runs that failed with an error")
    rec.set_defaults(fn=_cmd_recover)
    from .eval._cli import add_eval_commands

    add_eval_commands(sub, common, _config)  # `slmgraph eval`, `slmgraph calibrate`
    from .batch._cli import add_batch_commands

    add_batch_commands(sub, common, _config)  # `slmgraph batch`, `slmgraph prune`
    from .learn._cli import add_learning_commands

    add_learning_commands(sub, common, _config)  # `slmgraph data ...`, `slmgraph learn ...`
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.fn(args)
    except SlmGraphError as exc:
        print(f"slmgraph: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
