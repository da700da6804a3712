"""The circuit breaker, the retry budget and the deadline, on a FakeClock."""

from __future__ import annotations

from app.upstream.resilience import CircuitBreaker, Deadline, RetryBudget, State
from tests.fakeclock import FakeClock


def state_of(cb: CircuitBreaker) -> State:
    # Read through a call: mypy keeps `cb.state` narrowed by an earlier assert across the
    # calls that change it, and would call the next comparison impossible.
    return cb.state


def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failure_rate=0.5, min_calls=4, window_s=10, open_s=3, probes=2,
                          clock=clock)


def test_closed_until_min_calls_then_opens_at_the_failure_rate() -> None:
    cb = breaker(FakeClock())
    for _ in range(3):
        assert cb.allow() is False  # closed: attempts go, none of them a probe
        cb.record(False)
    assert state_of(cb) is State.CLOSED  # three failures: below min_calls
    cb.record(False)
    assert state_of(cb) is State.OPEN
    assert cb.allow() is None


def test_a_failure_rate_below_the_threshold_keeps_it_closed() -> None:
    cb = breaker(FakeClock())
    for ok in (True, True, True, False, True, False):  # 2 of 6 failed: 33% < 50%
        cb.record(ok)
    assert state_of(cb) is State.CLOSED
    cb.record(False)  # 3 of 7: still below
    assert state_of(cb) is State.CLOSED
    cb.record(False)  # 4 of 8: at the rate
    assert state_of(cb) is State.OPEN


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    for _ in range(3):
        cb.record(False)
    clock.advance(11)  # the window is 10 s: those three have left it
    cb.record(False)
    assert state_of(cb) is State.CLOSED
    for _ in range(3):
        cb.record(False)
    assert state_of(cb) is State.OPEN


def test_open_for_open_s_then_probes_close_it() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    for _ in range(4):
        cb.record(False)
    assert cb.retry_in() == 3
    clock.advance(2.9)
    assert cb.allow() is None and state_of(cb) is State.OPEN
    assert round(cb.retry_in(), 6) == 0.1
    clock.advance(0.1)
    assert cb.allow() is True and state_of(cb) is State.HALF_OPEN  # the probe
    assert cb.allow() is None  # one probe at a time
    cb.record(True, probe=False)  # an attempt from before: not the probe's answer
    assert state_of(cb) is State.HALF_OPEN and cb.allow() is None
    cb.record(True, probe=True)
    assert state_of(cb) is State.HALF_OPEN  # two successes in a row are needed
    assert cb.allow() is True
    cb.record(True, probe=True)
    assert state_of(cb) is State.CLOSED
    # Closed with an empty window: old failures do not reopen it at once.
    cb.record(False)
    assert state_of(cb) is State.CLOSED


def test_a_failed_probe_opens_it_again_for_open_s() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    for _ in range(4):
        cb.record(False)
    clock.advance(3)
    assert cb.allow() is True
    cb.record(True, probe=True)
    assert cb.allow() is True
    cb.record(False, probe=True)
    assert state_of(cb) is State.OPEN
    clock.advance(2.9)  # open_s counts from the reopening
    assert cb.allow() is None
    clock.advance(0.1)
    assert cb.allow() is True


def test_a_probe_released_without_a_verdict_lets_the_next_call_probe() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    for _ in range(4):
        cb.record(False)
    clock.advance(3)
    assert cb.allow() is True
    assert cb.allow() is None
    cb.release()
    assert cb.allow() is True and state_of(cb) is State.HALF_OPEN


def test_retry_budget_is_the_reserve_plus_a_ratio_of_calls_in_the_window() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=0.5, window_s=10, clock=clock)  # reserve: 5
    spent = 0
    while budget.try_spend():
        spent += 1
    assert spent == 5  # no calls yet: the reserve only
    for _ in range(10):
        budget.record_call()
    assert budget.try_spend() and budget.try_spend()  # 20% of 10 calls
    assert not budget.try_spend()
    clock.advance(5)
    assert not budget.try_spend()  # all of it still in the window
    clock.advance(6)  # 11 s on: the calls and retries have left the window
    spent = 0
    while budget.try_spend():
        spent += 1
    assert spent == 5


def test_retries_spent_earlier_in_the_window_count_against_later_ones() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_s=0.1, window_s=10, clock=clock)  # reserve: 1
    for _ in range(4):
        budget.record_call()
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]  # 1 + 2
    clock.advance(9.5)  # the same 10 one-second buckets: nothing has left yet
    for _ in range(2):
        budget.record_call()
    assert [budget.try_spend() for _ in range(2)] == [True, False]  # 1 + 3, 3 spent


def test_deadline_counts_down_on_its_clock() -> None:
    clock = FakeClock()
    deadline = Deadline(0.5, clock)
    assert deadline.remaining() == 0.5 and not deadline.expired()
    clock.advance(0.25)
    assert deadline.remaining() == 0.25 and not deadline.expired()
    clock.advance(0.25)
    assert deadline.expired() and deadline.remaining() == 0
