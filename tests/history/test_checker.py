"""The history checker on hand-made histories: each guarantee's violation is reported (and
only it), the same history without the violation passes, and the timeline names the
operations involved."""

from __future__ import annotations

import itertools
from typing import Any

from tests.history.checker import (
    EVENT_BOUND,
    IMPOSSIBLE,
    READ_YOUR_WRITES,
    STALENESS_BOUND,
    UNKNOWN,
    Bounds,
    Delivery,
    History,
    Nemesis,
    Op,
    Read,
    Write,
    check,
    explain,
    violations_text,
)

KEY = "stock:p1"
BOUNDS = Bounds(event_bound=0.25, staleness={KEY: 5.0, "name:p2": 330.0},
                stale_if_error={KEY: 5.0, "name:p2": 900.0}, slack=2.0)
_ids = itertools.count(1)


def write(version: int, start: float, end: float, *, caller: str = "w1", ok: bool | None = True,
          key: str = KEY, replica: str | None = "a") -> Write:
    return Write(next(_ids), caller, key, version, start, end, ok, replica, "placeOrder")


def read(version: int, start: float, end: float | None = None, *, caller: str = "r1",
         replica: str = "b", key: str = KEY, **extra: Any) -> Read:
    return Read(next(_ids), caller, replica, start, start + 0.01 if end is None else end,
                {key: version}, **extra)


def deliver(version: int, start: float, end: float, *, status: int = 204,
            replica: str = "a") -> Delivery:
    return Delivery(next(_ids), ("Stock", "SKU-1", version), replica, start, end, status)


def kinds(history: History) -> dict[str, int]:
    return check(history, BOUNDS).by_kind()


def test_a_caller_that_misses_its_own_write_is_reported() -> None:
    w = write(1, 1.0, 1.1, caller="w1")
    late = read(0, 1.2, caller="w1", replica="b")
    history = History([w, late])
    report = check(history, BOUNDS)
    assert report.by_kind() == {READ_YOUR_WRITES: 1}
    first = report.first()
    assert first is not None and first.read is late and first.cause == (w,)
    assert first.observed == 0 and first.required == 1
    text = explain(history, first)
    assert "w1's read" in text and f"#{w.id}" in text and f"#{late.id}" in text
    assert "on replica b" in text and "100.0 ms" in text


def test_read_your_writes_holds_only_for_the_caller_and_after_the_answer() -> None:
    w = write(1, 1.0, 1.1, caller="w1")
    history = History([
        w,
        read(0, 1.05, 1.3, caller="w1"),  # concurrent with the write: either is right
        read(0, 1.2, caller="someone else"),  # not the writer's own read
        read(1, 1.2, caller="w1"),
        read(2, 1.5, caller="w1"),  # newer is fine (after its write started)
        write(2, 1.4, 1.45, caller="w1"),
    ])
    assert kinds(history) == {}


def test_a_write_that_failed_or_whose_outcome_is_unknown_requires_nothing() -> None:
    history = History([write(1, 1.0, 1.1, ok=None), read(0, 1.2, caller="w1"),
                       write(2, 1.2, 1.3, ok=False, key="name:p2"),
                       read(0, 1.4, caller="w1", key="name:p2")])
    assert kinds(history) == {}


def test_a_read_older_than_an_acknowledged_event_after_the_bound_is_reported() -> None:
    w = write(1, 1.0, 1.02, caller="catalog", replica=None)
    slow = deliver(1, 1.03, 1.04, replica="b", status=503)  # not acknowledged: no bound
    d = deliver(1, 1.05, 1.06, replica="a")
    within = read(0, 1.06 + 0.2, replica="b")
    after = read(0, 1.06 + 0.3, replica="b")
    history = History([w, slow, d, within, after],
                      implies={("Stock", "SKU-1", 1): [(KEY, 1)]})
    report = check(history, BOUNDS)
    assert report.by_kind() == {EVENT_BOUND: 1}
    first = report.first()
    assert first is not None and first.read is after and first.cause == (d,)
    text = explain(history, first)
    assert "event Stock SKU-1 v1" in text and "300.0 ms after replica a" in text
    assert f"#{slow.id}" in text and "503" in text  # the timeline shows every delivery


def test_the_first_acknowledgement_of_an_event_counts_and_newer_events_imply_more() -> None:
    implies = {("Stock", "SKU-1", 1): [(KEY, 1)], ("Stock", "SKU-1", 2): [(KEY, 2)]}
    ops: list[Op] = [write(1, 1.0, 1.01, replica=None), write(2, 1.02, 1.03, replica=None),
           deliver(2, 1.04, 1.05, replica="b"),  # reordered: v2 reaches a replica first
           deliver(1, 1.1, 1.9, replica="a"), deliver(2, 1.9, 1.95, replica="a")]
    assert kinds(History([*ops, read(2, 1.5)], implies)) == {}
    assert kinds(History([*ops, read(1, 1.5)], implies)) == {EVENT_BOUND: 1}
    # An event that implies nothing for a key bounds nothing.
    assert kinds(History([*ops, read(1, 1.5)], {})) == {}


def test_a_value_older_than_its_staleness_bound_is_reported() -> None:
    # No event at all (one was lost): only the TTL bounds the value.
    w = write(1, 1.0, 1.1, caller="inventory", replica=None)
    fine = read(0, 1.1 + 6.9)  # 5 s TTL + swr, 2 s slack
    old = read(0, 1.1 + 7.1)
    # From a whole-response cache, 1 s old: computed by an execution that may have read
    # its values one more slack (2 s) before.
    held = read(0, 1.1 + 9.9, held=1.0)
    history = History([w, fine, old, held])
    report = check(history, BOUNDS)
    assert report.by_kind() == {STALENESS_BOUND: 1}
    assert kinds(History([w, read(0, 1.1 + 10.1, held=1.0)])) == {STALENESS_BOUND: 1}
    first = report.first()
    assert first is not None and first.read is old and first.required == 1
    assert "7100.0 ms after placeOrder" in explain(history, first)


def test_stale_if_error_answers_have_their_own_bound() -> None:
    w = write(1, 1.0, 1.1, key="name:p2", replica=None)
    stale = read(0, 1.1 + 400, key="name:p2", stale=True)
    fresh = read(0, 1.1 + 400, key="name:p2")
    assert kinds(History([w, stale])) == {}
    assert kinds(History([w, fresh])) == {STALENESS_BOUND: 1}


def test_reads_of_values_never_written_are_impossible() -> None:
    history = History([
        write(1, 1.0, 1.1),
        read(UNKNOWN, 1.2, raw={KEY: 17}),  # a value no write made
        read(2, 1.3),  # a version never written
        read(1, 0.5, 0.6),  # seen before its write began
        write(2, 1.4, 1.5, ok=False, key="name:p2"), read(2, 1.6, key="name:p2"),
    ])
    report = check(history, BOUNDS)
    assert report.by_kind() == {IMPOSSIBLE: 4}
    messages = [v.message for v in report.violations]
    assert messages[0].endswith(
        f"before placeOrder #{history.ops[0].id} that writes it had started")
    assert any(m.endswith("= 17, a value no write made") for m in messages)


def test_failed_reads_are_not_checked() -> None:
    history = History([write(1, 1.0, 1.1, caller="w1"),
                       Read(next(_ids), "w1", "b", 1.2, 1.3, {KEY: 0}, ok=False)])
    report = check(history, BOUNDS)
    assert report.ok and report.reads == 0


def test_the_first_violation_is_the_earliest_read_and_the_report_shows_each_kind() -> None:
    kill = Nemesis(next(_ids), "kill pub/sub connections", 0.9, 0.91)
    w = write(1, 1.0, 1.1, caller="w1")
    d = deliver(1, 1.0, 1.05)
    ryw = read(0, 1.15, caller="w1", replica="b")
    ev = read(0, 1.4, replica="b")
    other = Nemesis(next(_ids), "drop event", 1.0, 1.0, "Stock SKU-2 v1", ("Stock", "SKU-2", 1))
    history = History([kill, w, d, other, ryw, ev],
                      implies={("Stock", "SKU-1", 1): [(KEY, 1)]})
    report = check(history, BOUNDS)
    assert report.by_kind() == {READ_YOUR_WRITES: 1, EVENT_BOUND: 1}
    first = report.first()
    assert first is not None and first.read is ryw
    text = violations_text(history, report)
    body = text.split("\n\n", 1)[1]
    assert body.index(READ_YOUR_WRITES) < body.index(EVENT_BOUND)
    assert "kill pub/sub connections" in text  # faults injected are in the timeline
    assert "SKU-2" not in text  # but not the fate of events that say nothing of the key
    assert text.startswith("2 observations in 2 reads checked against 1 writes and 1 event "
                           "deliveries; violations: event bound: 1, read-your-writes: 1")


def test_a_long_timeline_keeps_the_violation_and_its_cause() -> None:
    w = write(1, 1.0, 1.1, caller="w1")
    noise = [read(1, 1.1 + i * 0.001, caller="r2") for i in range(1, 200)]
    late = read(0, 1.3, caller="w1")
    history = History([w, *noise, late])
    report = check(history, BOUNDS)
    first = report.first()
    assert first is not None
    text = explain(history, first, limit=10)
    assert f"#{w.id} " in text and f"#{late.id} " in text
    assert len(text.splitlines()) == 2 + 10
