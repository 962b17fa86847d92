"""Helper for the scale-out tests: a graph factory that counts its work in files.

``make(models, *, config, prices)`` (for ``slmgraph batch tests.scale_graph:make``
and served graphs) builds a one-skill graph on ``config.checkpoint`` whose small
model:

* appends ``<request>`` to ``$SCALE_TEST_DIR/calls.log`` on every call;
* sleeps ``$SCALE_TEST_SLOW`` seconds (default 0) before answering;
* SIGKILLs its own process once, on the request ``$SCALE_TEST_KILL_ON`` (a marker
  file makes it happen in one process only);
* raises ``ModelUnavailableError`` for requests containing "fail" (the run fails);
* answers ``{"label": "bad"}`` (failing the check, so the run escalates and has
  a large-model cost) for requests containing "escalate".

The specialist also runs a declared effect, ``ctx.effect("charge", ...)``, which
appends ``<request>`` to ``effects.log``: the count of exactly-once effects.
The effect's idempotency key goes to ``keys.log`` (``<request>\t<key>``): a crash
after the effect but before its result is stored repeats it with the same key,
which the external system uses to drop the repeat. Both logs are also merged, in order, into ``events.log`` (``calls X`` / ``effects X``).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from pydantic import BaseModel

from slmgraph import AcceptancePolicy, ModelUnavailableError, EscalationReason, Rejected, Skill, build_graph, run_skill
from slmgraph.ledger import Price, PriceTable
from slmgraph.testing import FunctionModel


class Label(BaseModel):
    label: str


def _dir() -> Path:
    return Path(os.environ["SCALE_TEST_DIR"])


def append(name: str, line: str) -> None:
    """One line in ``name`` and, tagged with the file's stem, in ``events.log``."""
    for target, text in ((name, line), ("events.log", f"{name.split('.')[0]} {line}")):
        with open(_dir() / target, "a", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())


def lines(workdir: Path, name: str) -> list[str]:
    path = workdir / name
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _maybe_kill(request: str) -> None:
    target = os.environ.get("SCALE_TEST_KILL_ON")
    if not target or request != target:
        return
    try:
        fd = os.open(_dir() / f"killed-{target}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # already killed once: answer this time
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


INNER = Skill(name="label", description="labels a request", instructions="Label it.", output_type=Label,
              acceptance=AcceptancePolicy(max_repairs=0))


def make(models=None, *, config=None, prices=None):
    slow = float(os.environ.get("SCALE_TEST_SLOW", "0"))

    async def small(messages, schema):
        request = messages[-1].content
        append("calls.log", request)
        if slow:
            await asyncio.sleep(slow)
        _maybe_kill(request)
        if "fail" in request:
            raise ModelUnavailableError("scripted outage", model="small-fn", provider="function")
        return {"label": "bad" if "escalate" in request else "ok"}

    async def runner(skill, data, ctx, node):
        outcome = await run_skill(INNER, data, ctx, node=node)
        text = getattr(data, "text", str(data))
        def charge(key: str) -> dict:
            append("effects.log", text)
            with open(_dir() / "keys.log", "a", encoding="utf-8") as f:  # what an external system would see
                f.write(f"{text}\t{key}\n")
            return {"charged": text}

        await ctx.effect("charge", charge)
        if outcome.output.label == "bad":
            return Rejected(EscalationReason.FAILED_CHECK, "asked to escalate", outcome.output.model_dump(), 1)
        return outcome

    skill = Skill(name="label_and_charge", description="labels and charges", instructions="-",
                  output_type=Label, runner=runner)
    price = PriceTable(prices={"small-fn": Price(input_per_mtok=1.0, output_per_mtok=1.0),
                        "large-fn": Price(input_per_mtok=100.0, output_per_mtok=100.0)}, baseline_model="large-fn")
    return build_graph(
        [skill],
        models={"small": FunctionModel(small, name="small-fn"),
                "large": FunctionModel(lambda m, s: {"action": "final", "answer": "large says ok"}, name="large-fn")},
        prices=price,
        checkpoint=config.checkpoint if config is not None else None,
        lease_ttl_s=float(os.environ.get("SCALE_TEST_TTL", "3")),
        name="scale",
    )


def keys(workdir: Path) -> dict[str, set[str]]:
    """The idempotency keys each request's effect was called with."""
    out: dict[str, set[str]] = {}
    for line in lines(workdir, "keys.log"):
        text, key = line.split("\t")
        out.setdefault(text, set()).add(key)
    return out
