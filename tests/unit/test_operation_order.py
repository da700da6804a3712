"""The order a batch's operations run in (app/http/batching.py): consecutive queries together,
each mutation alone; and the gate that starts the queries of a group together."""

from __future__ import annotations

import asyncio

from strawberry.types import ExecutionResult

from app.http.batching import Member, run_in_order


async def test_queries_together_mutations_alone_in_request_order() -> None:
    events: list[str] = []
    started: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(6)}
    kinds = [False, True, False, False, False, True]  # query, mutation, 3 queries, mutation

    async def run(i: int, gate: Member | None) -> ExecutionResult:
        events.append(f"start {i}")
        started[i].set()
        if i in (2, 3, 4):
            # Each of the group waits until all three have started: they run together.
            await asyncio.gather(*(started[k].wait() for k in (2, 3, 4)))
        await asyncio.sleep(0)
        events.append(f"end {i}")
        return ExecutionResult(data={"i": i}, errors=None)

    results = await asyncio.wait_for(run_in_order(kinds, run), timeout=5)
    assert [r.data for r in results] == [{"i": i} for i in range(6)]
    assert events[:4] == ["start 0", "end 0", "start 1", "end 1"]
    assert set(events[4:7]) == {"start 2", "start 3", "start 4"}
    assert set(events[7:10]) == {"end 2", "end 3", "end 4"}
    assert events[10:] == ["start 5", "end 5"]


async def test_the_gate_opens_once_every_member_arrived_or_ended() -> None:
    events: list[str] = []
    waiting = asyncio.Event()

    async def run(i: int, gate: Member | None) -> ExecutionResult:
        assert gate is not None
        if i == 0:
            await waiting.wait()  # its charge before it runs answers after 2 is at the gate
        if i == 1:
            gate.arrive()  # refused before it ran: it never reaches the gate
            events.append("1 ended")
            return ExecutionResult(data=None, errors=None)
        events.append(f"{i} waits")
        waiting.set()
        await gate()
        events.append(f"{i} runs")
        return ExecutionResult(data={}, errors=None)

    await asyncio.wait_for(run_in_order([False, False, False], run), timeout=5)
    # 2 waits for 0, which 1 (ended without reaching the gate) does not hold up.
    assert events[:3] == ["1 ended", "2 waits", "0 waits"]
    assert sorted(events[3:]) == ["0 runs", "2 runs"]


async def test_a_single_operation_or_a_mutation_has_no_gate() -> None:
    gates: list[Member | None] = []

    async def run(i: int, gate: Member | None) -> ExecutionResult:
        gates.append(gate)
        return ExecutionResult(data={}, errors=None)

    await run_in_order([False, True, False], run)
    assert gates == [None, None, None]
