"""The upstream client's deadline rules, on a FakeClock: an attempt gets what is left of the
deadline, none starts once too little is left, and no retry waits past it. (The process
tests in tests/resilience/test_timeouts.py show the same rules end to end, by the order of
events; the arithmetic is checked here, without wall time.)"""

from __future__ import annotations

import dataclasses

import pytest

from app.config.settings import Settings
from app.upstream.client import MIN_ATTEMPT_S, UpstreamClient
from app.upstream.failures import UpstreamError, status_failure, upstream_failure
from app.upstream.resilience import Deadline
from tests.fakeclock import FakeClock


def client(clock: FakeClock | None = None, **settings: object) -> UpstreamClient:
    return UpstreamClient(dataclasses.replace(Settings(), **settings),  # type: ignore[arg-type]
                          clock=clock or FakeClock())


def test_an_attempt_gets_its_timeout_or_what_is_left_of_the_deadline() -> None:
    clock = FakeClock()
    upstream = client(upstream_timeout_s=0.5)
    guard = upstream.guards["reviews"]
    deadline = Deadline(1.5, clock)
    assert upstream._admit(guard, deadline) is guard.timeout  # 1.5 s left: the 0.5 s timeout
    assert upstream._admit(guard, None) is guard.timeout
    clock.advance(1.25)
    limits = upstream._admit(guard, deadline)
    assert limits.total == pytest.approx(0.25)  # the deadline comes first
    assert limits.sock_connect == pytest.approx(0.25)


def test_no_attempt_starts_once_the_deadline_is_too_close() -> None:
    clock = FakeClock()
    upstream = client()
    guard = upstream.guards["catalog"]
    deadline = Deadline(0.3, clock)
    clock.advance(0.3 - 2 * MIN_ATTEMPT_S)
    assert upstream._admit(guard, deadline).total == pytest.approx(2 * MIN_ATTEMPT_S)
    clock.advance(1.5 * MIN_ATTEMPT_S)
    with pytest.raises(UpstreamError) as refused:
        upstream._admit(guard, deadline)
    assert refused.value.code == "DEADLINE_EXCEEDED" and refused.value.service == "catalog"


def test_a_retry_that_could_not_finish_before_the_deadline_is_not_made() -> None:
    clock = FakeClock()
    upstream = client(clock)
    guard = upstream.guards["users"]
    limited = status_failure("users", 429, None, None, 1.0)  # Retry-After: 1
    assert limited.retry_after == 1.0
    # With 2 s left, the gateway waits the second the service asked for.
    assert upstream._retry_wait(guard, limited, 0, Deadline(2.0, clock), upstream._waits()) == 1.0
    # With 300 ms left it gives up at once: the retry would pass the deadline.
    assert upstream._retry_wait(guard, limited, 0, Deadline(0.3, clock), upstream._waits()) is None
    # Until the Retry-After has passed, every retry to the service waits for it, whatever
    # failed (another call's timeout here), and none is made that would pass the deadline.
    timeout = upstream_failure("timeout", "users")
    clock.advance(0.25)
    held = upstream._retry_wait(guard, timeout, 0, Deadline(2.0, clock), upstream._waits())
    assert held == pytest.approx(0.75)
    assert upstream._retry_wait(guard, timeout, 0, Deadline(0.5, clock), upstream._waits()) is None
    clock.advance(0.75)
    # The same with a backoff wait: 1 ms left is too little for any retry.
    short = Deadline(0.001, clock)
    assert upstream._retry_wait(guard, timeout, 0, short, upstream._waits()) is None
    roomy = Deadline(2.0, clock)
    wait = upstream._retry_wait(guard, timeout, 0, roomy, upstream._waits())
    assert wait is not None and 0 <= wait <= upstream.settings.retry_base_s * 2


def test_retries_stop_at_the_attempt_cap() -> None:
    clock = FakeClock()
    upstream = client(retry_max_attempts=3)
    guard = upstream.guards["users"]
    timeout = upstream_failure("timeout", "users")
    waits = upstream._waits()
    deadline = Deadline(60, clock)
    assert upstream._retry_wait(guard, timeout, 0, deadline, waits) is not None
    assert upstream._retry_wait(guard, timeout, 1, deadline, waits) is not None
    assert upstream._retry_wait(guard, timeout, 2, deadline, waits) is None
