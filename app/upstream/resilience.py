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
    `min_per_s` per second of the window so that a quiet service may still retry; a retry
    that succeeds gives its share back.

    A retry is charged when it is granted. If the service then answers it, the service is
    flaky rather than down, the retry paid for itself (a call that would have failed did
    not), and `refund` returns the charge: retries that work are not limited by the budget,
    only by the attempt cap and the deadline. Retries that fail stay charged. During an
    outage every retry fails, so what retries add to the load stays at about `ratio`,
    however many attempts each call is allowed (Finagle's RetryBudget, in a sliding window),
    until the breaker, which counts calls that failed after their retries, opens."""

    CALLS, RETRIES, REFUNDS = 0, 1, 2

    def __init__(self, ratio: float, min_per_s: float, window_s: float,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.ratio = ratio
        self.reserve = min_per_s * window_s
        self._window = Window(window_s, 3)
        self._now = clock.monotonic

    def record_call(self) -> None:
        self._window.add(self.CALLS, self._now())

    def try_spend(self) -> bool:
        now = self._now()
        calls, retries, refunds = self._window.counts(now)
        # A refund may outlive its charge by a bucket at the window's edge: never below 0.
        if max(0, retries - refunds) + 1 > self.ratio * calls + self.reserve:
            return False
        self._window.add(self.RETRIES, now)
        return True

    def refund(self) -> None:
        """A granted retry was answered: it costs the budget nothing."""
        self._window.add(self.REFUNDS, self._now())
