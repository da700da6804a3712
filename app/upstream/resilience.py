"""The parts of resilience that keep state: a request's deadline, a service's retry budget
and its circuit breaker (`app.core.breaker`, which Redis's guard uses too; named here as well).
`app.upstream.client.UpstreamClient` is their only user; each is a plain object so that the
rules can be read (and tested) apart from HTTP.
"""

from __future__ import annotations

from app.core.breaker import CircuitBreaker, State, Window
from app.core.clock import SYSTEM_CLOCK, Clock

__all__ = ["CircuitBreaker", "Deadline", "RetryBudget", "State", "Window"]


class Deadline:
    """When a request's time is up: every upstream call and retry stops there."""

    __slots__ = ("_now", "at")

    def __init__(self, seconds: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._now = clock.monotonic
        self.at = self._now() + seconds

    def remaining(self) -> float:
        return self.at - self._now()

    def expired(self) -> bool:
        return self._now() >= self.at


class RetryBudget:
    """Retries allowed to one service: `ratio` of its calls in the window, plus a reserve of
    `min_per_s` per second of the window so that a quiet service may still retry.

    During an outage every call fails and would retry; the budget caps what retries add to
    the load at about `ratio`, however many attempts each call is allowed (Finagle's
    RetryBudget, the same rule in a sliding window)."""

    CALLS, RETRIES = 0, 1

    def __init__(self, ratio: float, min_per_s: float, window_s: float,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.ratio = ratio
        self.reserve = min_per_s * window_s
        self._window = Window(window_s, 2)
        self._now = clock.monotonic

    def record_call(self) -> None:
        self._window.add(self.CALLS, self._now())

    def try_spend(self) -> bool:
        now = self._now()
        calls, retries = self._window.counts(now)
        if retries + 1 > self.ratio * calls + self.reserve:
            return False
        self._window.add(self.RETRIES, now)
        return True
