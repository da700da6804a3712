"""Redis's guard (app/core/redisguard.py) on a FakeClock: the timeout is paid once, then the
breaker answers every operation with its fallback until a background probe finds Redis
again; one log line per transition, and every state change reported to the observer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from app.core import redisguard
from app.core.observer import Observer
from app.core.redisguard import RedisGuard, RedisUnavailable
from tests.fakeclock import FakeClock, settle

TIMEOUT_S = 0.1
OPEN_S = 1.0


class FakeRedis:
    """What the guard uses of a client (`ping`, `aclose`), plus a command the tests run through
    it. `stalled`: nothing answers (SIGSTOP); `refusing`: every call fails at once."""

    def __init__(self) -> None:
        self.stalled = False
        self.refusing = False
        self.calls: list[str] = []
        self._stall = asyncio.Event()

    async def _answer(self, name: str, value: Any) -> Any:
        self.calls.append(name)
        if self.refusing:
            raise ConnectionError("connection refused")
        if self.stalled:
            await self._stall.wait()  # never set: only cancellation ends it
        return value

    async def get(self) -> bytes:
        return await self._answer("get", b"value")

    async def ping(self) -> bool:
        return await self._answer("ping", True)

    async def aclose(self) -> None:
        pass


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[int, bool]] = []

    def redis_changed(self, state: int, outage: bool) -> None:
        self.events.append((state, outage))


def make() -> tuple[RedisGuard, FakeRedis, FakeClock, Recorder]:
    client, clock, observer = FakeRedis(), FakeClock(), Recorder()
    return (RedisGuard(client, timeout_s=TIMEOUT_S, open_s=OPEN_S, observer=observer,
                       clock=clock), client, clock, observer)


async def run_get(guard: RedisGuard, client: FakeRedis) -> Any:
    return await guard.run("get", client.get, "fallback")


def transitions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split(" (")[0].split(" after")[0] for r in caplog.records
            if r.name == "gateway.redis" and r.levelno == logging.WARNING]


async def test_a_stall_costs_one_timeout_then_fallbacks_at_once_until_a_probe_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "gateway.redis")
    guard, client, clock, observer = make()
    assert observer.events == [(0, False)]  # the gauge exists before anything happens
    assert await run_get(guard, client) == b"value"

    client.stalled = True
    first = asyncio.ensure_future(run_get(guard, client))
    await settle()
    assert not first.done()  # waiting for Redis: the one timeout
    clock.advance(TIMEOUT_S)
    await settle()
    assert first.result() == "fallback"
    assert not guard.up and guard.state == "open"
    assert transitions(caplog) == ["redis unavailable"]

    # While it is open, operations never reach Redis and take no time at all.
    calls = len(client.calls)
    for _ in range(100):
        assert await run_get(guard, client) == "fallback"
    assert len(client.calls) == calls

    # After OPEN_S a background probe (not a request) pays the timeout; meanwhile requests
    # still get their fallback at once, and a failed probe opens the breaker again.
    clock.advance(OPEN_S)
    await settle()
    assert client.calls[-1] == "ping" and guard.state == "half_open"
    assert await run_get(guard, client) == "fallback"
    assert client.calls[-1] == "ping"
    clock.advance(TIMEOUT_S)
    await settle()
    assert guard.state == "open"
    assert transitions(caplog) == ["redis unavailable"]  # still the same outage

    # Redis answers again: the next probe closes the breaker, and operations go through.
    client.stalled = False
    clock.advance(OPEN_S)
    await settle()
    assert guard.up
    assert await run_get(guard, client) == b"value"
    assert transitions(caplog) == ["redis unavailable", "redis available again"]
    assert observer.events == [(0, False), (2, True), (1, False), (2, False), (1, False),
                               (0, False)]
    await guard.close()


async def test_a_refused_connection_opens_it_without_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "gateway.redis")
    guard, client, clock, observer = make()
    client.refusing = True
    assert await run_get(guard, client) == "fallback"  # no clock advance needed
    assert not guard.up and guard.retry_in() == OPEN_S
    assert "ConnectionError: connection refused" in caplog.records[0].getMessage()
    # Probes keep failing (the server is gone) until it is restarted.
    for _ in range(3):
        clock.advance(OPEN_S)
        await settle()
        assert guard.state == "open"
    client.refusing = False
    clock.advance(OPEN_S)
    await settle()
    assert guard.up
    assert transitions(caplog) == ["redis unavailable", "redis available again"]
    assert observer.events.count((2, True)) == 1  # one outage
    await guard.close()


async def test_a_failure_seen_outside_run_opens_it_once() -> None:
    guard, client, _, observer = make()
    guard.failed("pub/sub", ConnectionError("connection reset"))
    guard.failed("pub/sub", ConnectionError("connection reset"))
    assert not guard.up and observer.events == [(0, False), (2, True)]
    assert await guard.ping() is False and client.calls == []  # /readyz: no wait
    await guard.close()


async def test_a_blocking_command_gets_its_own_wait_on_top_of_the_timeout() -> None:
    guard, client, clock, _ = make()
    client.stalled = True
    blpop = asyncio.ensure_future(guard.run("ack", client.get, None, wait_s=0.25))
    await settle()
    clock.advance(0.25)
    await settle()
    assert not blpop.done() and guard.up  # within its wait
    clock.advance(TIMEOUT_S)
    await settle()
    assert blpop.result() is None and not guard.up
    await guard.close()


async def test_an_answer_read_late_because_the_loop_was_busy_is_not_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answer is in when the timer fires (the loop ran the timer first): the guard gives
    the read a few turns instead of calling Redis down. Without the grace it would."""
    for grace, expected_up in ((redisguard.GRACE_TURNS, True), (0, False)):
        monkeypatch.setattr(redisguard, "GRACE_TURNS", grace)
        guard, _, clock, _ = make()
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def late(answer: asyncio.Future[str] = answer) -> str:
            return await answer

        call = asyncio.ensure_future(guard.run("get", late, "fallback"))
        await settle()
        clock.advance(TIMEOUT_S)  # the timer fires first...
        await asyncio.sleep(0)
        answer.set_result("value")  # ...and the answer, already in, is read at the next turn
        await settle()
        assert (call.result() == "value") is expected_up
        assert guard.up is expected_up
        await guard.close()


async def test_call_raises_where_run_falls_back() -> None:
    """For callers without a fallback (the invalidation channel): the failure itself, then
    RedisUnavailable at once while the breaker is open; the outage is the same one."""
    guard, client, clock, observer = make()
    assert await guard.call("membership", client.get) == b"value"
    client.stalled = True
    beat = asyncio.ensure_future(guard.call("membership", client.get))
    await settle()
    clock.advance(TIMEOUT_S)
    await settle()
    with pytest.raises(TimeoutError):
        beat.result()
    calls = len(client.calls)
    with pytest.raises(RedisUnavailable):
        await guard.call("subscribe", client.get)
    assert len(client.calls) == calls and observer.events == [(0, False), (2, True)]
    await guard.close()
