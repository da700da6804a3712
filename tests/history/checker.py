"""The history checker: the README's consistency guarantees, verified over a recorded history.

A history (`History`) is what a run did and saw, each operation with its start and end on one
clock (seconds): writes (a gateway mutation or a direct write at a service), reads (through a
gateway replica), deliveries of change events to a replica, and faults injected (nemesis).
Values are versions: every key (such as the stock of one product) is written by one writer
at a time, each write making the next version (1, 2, ...; 0 is the value before the
history), and a read reports the version of each key it saw (the workload maps each value
it reads to its version; a value no write made is `UNKNOWN`).

Guarantees checked, over every read of every key (`check`):
- read-your-writes: a read by a caller that starts after one of its own writes answered
  (successfully) sees that write's version or a later one, on any replica;
- event bound: once any replica has acknowledged a change event (answered its delivery with
  a 2xx), every read that starts `event_bound` seconds later, on any replica, sees at least
  the versions the event implies (`History.implies`: what each event's entity version means
  for each key);
- staleness bound: a read sees a version that was current at most the key's bound before
  the read started (`Bounds.bound`: the TTL plus stale-while-revalidate, or plus
  stale-if-error for an answer flagged stale, plus `Bounds.slack`, plus for an answer from
  a whole-response cache its age and the execution that computed it);
- and the history must be possible: no read sees a value no write made, a write that had
  not started, or a write known to have failed.

The checker is pure: no I/O, no clock. `Report.first()` is the violation with the earliest
read; `explain` prints it with its timeline (the operations on its key around it).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

UNKNOWN = -1  # a value that maps to no version a write made

EventId = tuple[str, str, int]  # (type, id, version) of a service's change event


@dataclass(frozen=True)
class Write:
    id: int
    caller: str
    key: str
    version: int  # the version this write makes
    start: float
    end: float
    # True: answered as done; False: known not to have happened; None: unknown (a timeout).
    ok: bool | None
    replica: str | None = None  # the gateway replica of a mutation; None for a direct write
    what: str = "write"  # placeOrder, cancelOrder, addReview, patchName, restock...


@dataclass(frozen=True)
class Read:
    id: int
    caller: str
    replica: str
    start: float
    end: float
    observed: Mapping[str, int]  # key -> version seen
    ok: bool = True  # False: the read failed (nothing it saw is checked)
    stale: bool = False  # answered with data flagged stale (stale-if-error)
    held: float = 0.0  # seconds a whole-response cache may have kept this answer
    raw: Mapping[str, object] = field(default_factory=dict)  # key -> value, for timelines


@dataclass(frozen=True)
class Delivery:
    id: int
    event: EventId
    replica: str
    start: float
    end: float
    status: int  # the replica's HTTP status; 0 when it did not answer

    @property
    def acknowledged(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Nemesis:
    """A fault injected (or an incident seen) during the run."""

    id: int
    what: str  # such as "kill pub/sub connections", "latency ms", "drop event"
    start: float
    end: float
    detail: str = ""
    event: EventId | None = None  # the change event it concerns (a dropped one)


Op = Write | Read | Delivery | Nemesis


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    # What each event means for the keys: the versions it shows committed (an event of a
    # version the workload cannot tie to a write is absent, and implies nothing).
    implies: dict[EventId, list[tuple[str, int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Bounds:
    """The guarantees' parameters, in seconds."""

    event_bound: float  # T: from an event's first acknowledgement to every replica's reads
    staleness: Mapping[str, float]  # per key: TTL + stale-while-revalidate
    stale_if_error: Mapping[str, float]  # per key: TTL + stale-if-error (flagged answers)
    # Between the service reading a value and the gateway storing it with its TTL: at most
    # the upstream call, which ends by the request's deadline.
    slack: float = 0.0

    def bound(self, key: str, read: Read) -> float:
        table = self.stale_if_error if read.stale else self.staleness
        # An answer from a whole-response cache: computed `held` seconds before, by an
        # execution that read its values at most one more `slack` before it was stored.
        held = read.held + self.slack if read.held else 0.0
        return table[key] + self.slack + held


READ_YOUR_WRITES = "read-your-writes"
EVENT_BOUND = "event bound"
STALENESS_BOUND = "staleness bound"
IMPOSSIBLE = "impossible read"


@dataclass(frozen=True)
class Violation:
    kind: str
    read: Read
    key: str
    observed: int
    required: int  # the version the guarantee required (for staleness: a newer one existed)
    cause: tuple[Op, ...]  # the operations that made the requirement
    message: str

    @property
    def at(self) -> float:
        return self.read.start


@dataclass
class Report:
    reads: int = 0
    observations: int = 0  # (read, key) pairs checked
    writes: int = 0
    deliveries: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for violation in self.violations:
            counts[violation.kind] += 1
        return dict(counts)

    def first(self, kind: str | None = None) -> Violation | None:
        found = [v for v in self.violations if kind is None or v.kind == kind]
        return min(found, key=lambda v: (v.at, v.read.id, v.key)) if found else None

    def summary(self) -> str:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.by_kind().items())) or "none"
        return (f"{self.observations} observations in {self.reads} reads checked against "
                f"{self.writes} writes and {self.deliveries} event deliveries; "
                f"violations: {kinds}")


class _Floor:
    """A step function of time: the highest version required by requirements that took
    effect strictly before a given time, and the requirement that set it."""

    def __init__(self, steps: Iterable[tuple[float, int, Op]]) -> None:
        ordered = sorted(steps, key=lambda s: s[0])
        self.times = [t for t, _, _ in ordered]
        self.best: list[tuple[int, Op | None]] = []
        top: tuple[int, Op | None] = (-1, None)
        for _, version, op in ordered:
            if version > top[0]:
                top = (version, op)
            self.best.append(top)

    def at(self, time: float) -> tuple[int, Op | None]:
        i = bisect.bisect_left(self.times, time)  # requirements from strictly before `time`
        return self.best[i - 1] if i else (-1, None)


def check(history: History, bounds: Bounds) -> Report:
    writes = [op for op in history.ops if isinstance(op, Write)]
    reads = [op for op in history.ops if isinstance(op, Read) and op.ok]
    deliveries = [op for op in history.ops if isinstance(op, Delivery)]
    report = Report(reads=len(reads), writes=len(writes), deliveries=len(deliveries))

    # Read-your-writes: per (caller, key), the versions of the caller's answered writes.
    own: dict[tuple[str, str], list[tuple[float, int, Op]]] = defaultdict(list)
    for w in writes:
        if w.ok:
            own[(w.caller, w.key)].append((w.end, w.version, w))
    own_floor = {k: _Floor(v) for k, v in own.items()}

    # Event bound: per key, from the first acknowledgement of each event, plus T.
    first_ack: dict[EventId, Delivery] = {}
    for d in deliveries:
        if d.acknowledged and (d.event not in first_ack or d.end < first_ack[d.event].end):
            first_ack[d.event] = d
    by_event: dict[str, list[tuple[float, int, Op]]] = defaultdict(list)
    for event, delivery in first_ack.items():
        for key, version in history.implies.get(event, ()):
            by_event[key].append((delivery.end + bounds.event_bound, version, delivery))
    event_floor = {k: _Floor(v) for k, v in by_event.items()}

    # Staleness: per key, the writes by version; a version is superseded once a later
    # write is known done.
    by_key: dict[str, dict[int, Write]] = defaultdict(dict)
    for w in writes:
        by_key[w.key][w.version] = w
    superseded: dict[str, list[tuple[int, float, Write]]] = {}
    for key, versions in by_key.items():
        # For each version v: the earliest end of a done write of a version above v.
        done = sorted((w.version, w.end, w) for w in versions.values() if w.ok)
        suffix: list[tuple[int, float, Write]] = []
        best: tuple[float, Write] | None = None
        for version, end, w in reversed(done):
            if best is None or end < best[0]:
                best = (end, w)
            suffix.append((version, best[0], best[1]))
        superseded[key] = list(reversed(suffix))

    for r in reads:
        for key, seen in r.observed.items():
            report.observations += 1
            found = _possible(r, key, seen, by_key.get(key, {}))
            if found is not None:
                report.violations.append(found)
                continue
            floor = own_floor.get((r.caller, key))
            if floor is not None:
                required, cause = floor.at(r.start)
                if seen < required and cause is not None:
                    assert isinstance(cause, Write)
                    report.violations.append(Violation(
                        READ_YOUR_WRITES, r, key, seen, required, (cause,),
                        f"{r.caller}'s read #{r.id} on replica {r.replica} saw {key} at "
                        f"version {seen}, but its own {cause.what} #{cause.id}"
                        f"{_on(cause.replica)} had made version {required} and answered "
                        f"{_ms(r.start - cause.end)} before the read started"))
                    continue
            floor = event_floor.get(key)
            if floor is not None:
                required, cause = floor.at(r.start)
                if seen < required and cause is not None:
                    assert isinstance(cause, Delivery)
                    report.violations.append(Violation(
                        EVENT_BOUND, r, key, seen, required, (cause,),
                        f"read #{r.id} on replica {r.replica} saw {key} at version {seen}, "
                        f"{_ms(r.start - cause.end)} after replica {cause.replica} "
                        f"acknowledged event {_event(cause.event)} (delivery #{cause.id}), "
                        f"which shows version {required} committed; the bound is "
                        f"{_ms(bounds.event_bound)}"))
                    continue
            later = superseded.get(key, [])
            i = bisect.bisect_right(later, (seen, float("inf")))
            if i < len(later):
                _, ended, newer = later[i]
                limit = bounds.bound(key, r)
                if r.start > ended + limit:
                    report.violations.append(Violation(
                        STALENESS_BOUND, r, key, seen, newer.version, (newer,),
                        f"read #{r.id} on replica {r.replica} saw {key} at version {seen}, "
                        f"{_ms(r.start - ended)} after {newer.what} #{newer.id} had made "
                        f"version {newer.version}; the bound is {_ms(limit)}"))
    report.violations.sort(key=lambda v: (v.at, v.read.id, v.key))
    return report


def _possible(r: Read, key: str, seen: int, writes: Mapping[int, Write]) -> Violation | None:
    """A violation when `seen` could not have been read at all."""
    if seen == 0:
        return None
    w = writes.get(seen)
    if seen == UNKNOWN or w is None:
        return Violation(IMPOSSIBLE, r, key, seen, 0, (),
                         f"read #{r.id} on replica {r.replica} saw {key} = "
                         f"{r.raw.get(key)!r}, a value no write made")
    if w.ok is False:
        return Violation(IMPOSSIBLE, r, key, seen, seen, (w,),
                         f"read #{r.id} saw {key} at version {seen}, which {w.what} #{w.id} "
                         "failed to write")
    if w.start > r.end:
        return Violation(IMPOSSIBLE, r, key, seen, seen, (w,),
                         f"read #{r.id} saw {key} at version {seen} before {w.what} #{w.id} "
                         "that writes it had started")
    return None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _on(replica: str | None) -> str:
    return f" on replica {replica}" if replica else ""


def _event(event: EventId) -> str:
    return f"{event[0]} {event[1]} v{event[2]}"


def explain(history: History, violation: Violation, *, before: float = 1.0,
            after: float = 0.3, limit: int = 40) -> str:
    """The violation and its timeline: the operations on its key, the events that imply
    something for it, and the faults injected, from `before` seconds before its cause to
    `after` seconds after the read; times in ms from the history's first operation."""
    origin = min((op.start for op in history.ops), default=0.0)
    since = min([violation.read.start, *(op.start for op in violation.cause)]) - before
    until = violation.read.end + after
    events = {e for e, implied in history.implies.items()
              if any(k == violation.key for k, _ in implied)}
    marked = {violation.read.id, *(op.id for op in violation.cause)}
    rows = []
    for op in history.ops:
        if op.end < since or op.start > until:
            continue
        if isinstance(op, Write) and op.key != violation.key:
            continue
        if isinstance(op, Read) and violation.key not in op.observed:
            continue
        if isinstance(op, Delivery) and op.event not in events:
            continue
        if isinstance(op, Nemesis) and op.event is not None and op.event not in events:
            continue
        rows.append(op)
    rows.sort(key=lambda op: (op.start, op.id))
    if len(rows) > limit:  # keep the marked operations and the faults, then the nearest
        keep = sorted(rows, key=lambda op: (op.id not in marked, not isinstance(op, Nemesis),
                                            abs(op.start - violation.read.start)))[:limit]
        rows = sorted(keep, key=lambda op: (op.start, op.id))
    lines = [f"{violation.kind} violated: {violation.message}",
             f"timeline of {violation.key} (ms since the history began; * marks the "
             "violation and its cause):"]
    for op in rows:
        mark = "*" if op.id in marked else " "
        lines.append(f"{mark} {(op.start - origin) * 1000:9.1f} .. "
                     f"{(op.end - origin) * 1000:9.1f}  #{op.id:<6} {_describe(op, violation.key)}")
    return "\n".join(lines)


def _describe(op: Op, key: str) -> str:
    if isinstance(op, Write):
        outcome = {True: "ok", False: "failed", None: "unknown"}[op.ok]
        return (f"{op.caller:<10} {op.replica or '-':<3} {op.what} -> v{op.version} "
                f"({outcome})")
    if isinstance(op, Read):
        flags = (" stale" if op.stale else "") + (f" held<={op.held:g}s" if op.held else "")
        raw = f" ({op.raw[key]!r})" if key in op.raw else ""
        return f"{op.caller:<10} {op.replica:<3} read v{op.observed[key]}{raw}{flags}"
    if isinstance(op, Delivery):
        return (f"{'relay':<10} {op.replica:<3} event {_event(op.event)} -> "
                f"{op.status or 'no answer'}")
    return f"{'nemesis':<10} {'-':<3} {op.what} {op.detail}".rstrip()


def violations_text(history: History, report: Report) -> str:
    """The report's summary, then the first violation of each kind with its timeline."""
    parts = [report.summary()]
    firsts = [v for kind in report.by_kind() if (v := report.first(kind)) is not None]
    parts += [explain(history, v) for v in sorted(firsts, key=lambda v: v.at)]
    return "\n\n".join(parts)
