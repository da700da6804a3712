"""The latest change-event version seen per entity, in this process: bounded in time and size.

A version is remembered only for `ttl_s` after it was recorded, and at most `max_entries`
of them (least recently recorded first out). Forgetting one is safe for the cache: an old
event that arrives after its entity's version was forgotten evicts once more than needed,
never less. The window only has to outlast the services' redelivery of one event (seconds);
the default is an hour. Redis keeps the shared table the same way (`RedisLevel.record_version`).
"""

from __future__ import annotations

from collections import OrderedDict

from app.core.clock import SYSTEM_CLOCK, Clock


class EventVersions:
    def __init__(self, ttl_s: float, max_entries: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._now = clock.monotonic
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()  # field -> (v, until)

    def latest(self, field: str) -> int:
        """The latest version recorded for `field` and not yet forgotten; -1 if none."""
        found = self._seen.get(field)
        if found is None:
            return -1
        if found[1] <= self._now():
            del self._seen[field]
            return -1
        return found[0]

    def record(self, field: str, version: int) -> bool:
        """Remember `version` if it is newer than the one held; True when it was."""
        if version <= self.latest(field):
            return False
        self._seen[field] = (version, self._now() + self.ttl_s)
        self._seen.move_to_end(field)
        self._expire()
        return True

    def _expire(self) -> None:
        now = self._now()
        # Oldest first: entries are in recording order, and every one has the same ttl.
        while self._seen:
            field, (_, until) = next(iter(self._seen.items()))
            if until > now and len(self._seen) <= self.max_entries:
                break
            del self._seen[field]

    def __len__(self) -> int:
        return len(self._seen)
