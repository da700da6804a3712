"""Where the components that keep time read it: wall time, a monotonic clock, and waits.

Every component that expires, opens, refills or waits takes a `clock` (the system's by
default) and reads time only through it, so that its tests drive time by hand with a
`FakeClock` instead of sleeping. Hot paths bind `clock.time` (or `clock.monotonic`) once,
at construction: reading the clock then costs what calling `time.time` costs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time as _time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def time(self) -> float:
        """Wall time, in seconds since the epoch (what cache entries expire by)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, windows, breakers)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...

    async def wait_for(self, awaitable: Awaitable[T], seconds: float) -> T:
        """`awaitable`'s result, or TimeoutError once `seconds` have passed on this clock
        (the awaitable is then cancelled, as `asyncio.wait_for` does)."""
        ...


class SystemClock:
    """The real clocks: `time.time`, `time.monotonic` and asyncio's own waits."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)
    sleep = staticmethod(asyncio.sleep)
    wait_for = staticmethod(asyncio.wait_for)


SYSTEM_CLOCK: Clock = SystemClock()


class FakeClock:
    """A clock that moves only when `advance` is called (tests).

    `time()` and `monotonic()` move together. A `sleep` resolves once the clock has been
    advanced to or past its wake-up time; its waiter then runs at the loop's next turns (a
    test awaits something, e.g. `settle()`, to let it)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def wait_for(self, awaitable: Awaitable[T], seconds: float) -> T:
        task = asyncio.ensure_future(awaitable)
        timer = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
        if task.done():
            return task.result()
        task.cancel()
        raise TimeoutError

    def advance(self, seconds: float) -> None:
        """Move time forward; every sleep whose wake-up time is reached resolves."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """Sleeps not yet resolved (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())


async def settle(turns: int = 10) -> None:
    """Let ready callbacks and tasks run for a few turns of the loop (no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)


