"""A circuit breaker, for any dependency: the upstream services (`app.upstream`) and Redis
(`app.core.redisguard`) each keep theirs. A plain object on an injectable clock, so that its
rules can be read, and tested, apart from what it guards.
"""

from __future__ import annotations

import math
from enum import IntEnum

from app.core.clock import SYSTEM_CLOCK, Clock


class Window:
    """Counts of events over the last `seconds`, in one-second buckets (a ring): O(1) per
    event and per read, whatever the traffic."""

    __slots__ = ("_buckets", "_counts", "_size", "_stamps")

    def __init__(self, seconds: float, kinds: int) -> None:
        self._size = max(1, math.ceil(seconds))
        self._stamps = [-1] * self._size  # the whole second each bucket holds
        self._buckets = [[0] * kinds for _ in range(self._size)]
        self._counts = [0] * kinds  # sums over the live buckets

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        index = second % self._size
        if self._stamps[index] != second:
            self._expire(second)
            self._stamps[index] = second
        return self._buckets[index]

    def _expire(self, second: int) -> None:
        for i, stamp in enumerate(self._stamps):
            if stamp != -1 and stamp <= second - self._size:
                bucket = self._buckets[i]
                for kind, n in enumerate(bucket):
                    self._counts[kind] -= n
                    bucket[kind] = 0
                self._stamps[i] = -1

    def add(self, kind: int, now: float) -> None:
        self._bucket(now)[kind] += 1
        self._counts[kind] += 1

    def counts(self, now: float) -> list[int]:
        self._expire(int(now))
        return self._counts

    def reset(self) -> None:
        for bucket in self._buckets:
            bucket[:] = [0] * len(bucket)
        self._stamps = [-1] * self._size
        self._counts = [0] * len(self._counts)



class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Closed, open, half-open, per service.

    Closed: attempts go through; when the window holds at least `min_calls` attempts and
    `failure_rate` of them failed, it opens. Open: calls fail at once, with no network call,
    for `open_s`. Then half-open: one probe at a time goes through; `probes` successes in a
    row close it, a failure opens it again for another `open_s`.
    """

    OK, FAILED = 0, 1

    def __init__(self, failure_rate: float, min_calls: int, window_s: float, open_s: float,
                 probes: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self._now = clock.monotonic
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.open_s = open_s
        self.probes = probes
        self.state = State.CLOSED
        self.opened_at = 0.0
        self._window = Window(window_s, 2)
        self._probe_in_flight = False
        self._probe_successes = 0

    def allow(self) -> bool | None:
        """None when no attempt may go out now; else whether the attempt is the half-open
        state's probe (whose outcome decides the state, and must be recorded as such)."""
        if self.state is State.CLOSED:
            return False
        if self.state is State.OPEN:
            if self._now() - self.opened_at < self.open_s:
                return None
            self.state = State.HALF_OPEN
            self._probe_successes = 0
            self._probe_in_flight = False
        if self._probe_in_flight:
            return None
        self._probe_in_flight = True
        return True

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through."""
        return max(0.0, self.open_s - (self._now() - self.opened_at))

    def record(self, ok: bool, probe: bool = False) -> None:
        if self.state is State.HALF_OPEN:
            if not probe:
                return  # an attempt from before the breaker opened: not the probe's answer
            self._probe_in_flight = False
            if not ok:
                self._open()
                return
            self._probe_successes += 1
            if self._probe_successes >= self.probes:
                self.state = State.CLOSED
                self._window.reset()
            return
        if self.state is State.OPEN or probe:
            return  # an attempt that started before the breaker opened, or a stale probe
        now = self._now()
        self._window.add(self.OK if ok else self.FAILED, now)
        if not ok:
            calls_ok, failed = self._window.counts(now)
            total = calls_ok + failed
            if total >= self.min_calls and failed >= self.failure_rate * total:
                self._open()

    def release(self) -> None:
        """A probe ended without a verdict on the service (the request's own deadline cut
        it, or it was cancelled): let the next call probe instead."""
        if self.state is State.HALF_OPEN:
            self._probe_in_flight = False

    def _open(self) -> None:
        self.state = State.OPEN
        self.opened_at = self._now()
