"""Where the components that keep time read it: wall time, a monotonic clock, and waits.

Every component that expires, opens, refills or waits takes a `clock` (the system's by
default) and reads time only through it, so that its tests drive time by hand with a
`FakeClock` (tests/fakeclock.py) instead of sleeping. Hot paths bind `clock.time` (or
`clock.monotonic`) once, at construction: reading the clock then costs what calling
`time.time` costs.
"""

from __future__ import annotations

import asyncio
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
