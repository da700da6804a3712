"""The resilience rules apart from HTTP: Retry-After parsing, the sliding window that the
retry budget and the breaker count in, and the README's list of the codes failures get."""

from __future__ import annotations

import email.utils
import time

from app.upstream import failures
from app.upstream.client import _retry_after
from app.upstream.resilience import RetryBudget, Window
from tests.harness import ROOT


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after("0") == 0.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (_retry_after(later) or 0) <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _retry_after(past) == 0.0


def test_window_forgets_what_is_older_than_its_span() -> None:
    window = Window(10, 2)
    for second in range(5):
        window.add(0, now=1000.0 + second)
    window.add(1, now=1004.5)
    assert window.counts(now=1004.9) == [5, 1]
    assert window.counts(now=1010.0) == [4, 1]  # second 1000 has left the window
    # One-second buckets: at 1013 the window holds seconds 1004 to 1013.
    assert window.counts(now=1013.0) == [1, 1]
    assert window.counts(now=1014.0) == [0, 0]
    window.add(0, now=1100.0)  # after a long quiet spell: only the new event
    assert window.counts(now=1100.0) == [1, 0]


def test_budget_allows_its_share_of_calls_plus_the_reserve() -> None:
    budget = RetryBudget(ratio=0.2, min_per_s=0.5, window_s=10)  # reserve: 5 retries
    for _ in range(100):
        budget.record_call()
    allowed = 0
    while budget.try_spend():
        allowed += 1
    assert allowed == 25  # 20% of 100 calls + 5


def test_every_code_of_the_classification_table_is_in_the_readme() -> None:
    # The README's table of error codes is what clients read: each code a failure can be
    # classified as has its row.
    codes = {f.code for f in failures.FAILURES.values()} | {
        f.code for f in failures.STATUS_FAILURES.values()} | {
        failures.OTHER_5XX.code, failures.OTHER_4XX.code, failures.ODD_STATUS.code}
    assert "UPSTREAM_OUTCOME_UNKNOWN" in codes
    readme = (ROOT / "README.md").read_text()
    missing = sorted(c for c in codes if f"\n| `{c}` |" not in readme)
    assert not missing, missing
