"""The start gate of `slmgraph serve` (slmgraph/_starting.py): at most ``max_starting``
runs in set-up at once, each holding its place until its first model call is
requested (or its end), and none waiting for a place longer than ``max_wait_s``."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from slmgraph._starting import StartGate, started
from slmgraph.serve._host import GraphHost
from slmgraph.testing import FunctionModel

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("serve_helpers", HERE / "test_serve.py")
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)


async def _spin(n: int = 50) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_second_run_waits_until_the_first_asks_for_its_model() -> None:
    gate = StartGate(1, max_wait_s=30)
    order: list[str] = []
    first_in, first_call, first_end = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with gate.starting():
            order.append("first set-up")
            first_in.set()
            await first_call.wait()
            started()
            order.append("first calls its model")
            await first_end.wait()

    async def second() -> None:
        await first_in.wait()
        async with gate.starting():
            order.append("second set-up")

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await _spin()
    assert order == ["first set-up"]  # the second is held at the gate
    first_call.set()
    await _spin()
    assert order == ["first set-up", "first calls its model", "second set-up"]  # let in before the first ended
    first_end.set()
    await asyncio.gather(*tasks)


async def test_a_run_that_ends_without_a_model_call_frees_its_place_and_started_twice_is_harmless() -> None:
    gate = StartGate(1, max_wait_s=30)
    async with gate.starting():
        started()
        started()  # a second call must not release a place it no longer holds
    async with gate.starting():
        pass
    for _ in range(3):  # one place, given back each time: never more than one holder
        async with gate.starting():
            held = asyncio.create_task(_enter(gate))
            await _spin()
            assert not held.done()
        await asyncio.wait_for(held, 10)


async def _enter(gate: StartGate) -> None:
    async with gate.starting():
        pass


async def test_a_stalled_set_up_holds_the_others_back_no_longer_than_max_wait() -> None:
    gate = StartGate(1, max_wait_s=0.05)
    stalled = asyncio.Event()

    async def stall() -> None:
        async with gate.starting():
            stalled.set()
            await asyncio.Event().wait()  # never calls a model, never ends

    holder = asyncio.create_task(stall())
    await stalled.wait()
    await asyncio.wait_for(_enter(gate), 10)  # gets in without a place after max_wait_s
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    await asyncio.wait_for(_enter(gate), 10)  # the cancelled holder gave its place back


async def test_served_runs_pass_the_gate_at_their_model_call_not_at_their_end() -> None:
    """Two served runs, a gate of one: the second reaches the model while the first
    is still inside its model call. Were the place kept to the run's end, the
    second would wait the gate's 30 s and the test would time out."""
    arrived: list[str] = []
    both = asyncio.Event()

    async def answer(msgs, schema):
        arrived.append(msgs[-1].content)
        if len(arrived) == 2:
            both.set()
        await both.wait()
        return ts.echo(msgs, schema)

    graph = ts.chat_graph(FunctionModel(answer, name="waits-for-two"))
    host = GraphHost({"echo": graph}, max_concurrency=4, max_queue=4, max_starting=1)
    host.limiter.gate.max_wait_s = 30
    await host.start()
    try:

        async def run(i: int) -> list[object]:
            return [e async for e in host.events("echo", f"hello {i}", f"t{i}", host.limiter.admit())]

        events = await asyncio.wait_for(asyncio.gather(run(1), run(2)), 20)
        assert all(events)
        assert sorted(m.rsplit("\n", 1)[-1] for m in arrived) == ["hello 1", "hello 2"]
    finally:
        await host.aclose()
