"""What a change evicts: one table for the services' change events and the gateway's own
mutations alike. The table (`Evicts` per entity type) is derived from the entity registry
(`loaders/entities.py`) and handed in where the app is wired.

An entity's change evicts its cached entity and the lists known to contain it (a review's
lists by product and by author); lists whose members are not tracked (top products, a
category's products, all categories) are evicted whole by a namespace generation. Whole
responses are tagged with the types they read and evicted the same way. Events older than a
version already applied for their entity are ignored; an event's version is recorded
once its evictions are done, so a redelivery of one that failed midway is applied again.
An event whose evictions could not reach Redis (it is down) is not recorded either: `/events`
answers 503 and the service redelivers it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.cache.entity import EntityCache, Namespace
from app.upstream.failures import UpstreamError
from app.upstream.resilience import Deadline

log = logging.getLogger("gateway.cache")
Change = tuple[str, str, Mapping[str, Any] | None]  # entity type, id, the item if known
ReadItem = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]
# What became of an event: applied (on every replica), ignored (an equal or newer version was
# applied), held (applied here, not yet through Redis: to be delivered again).
Outcome = Literal["applied", "ignored", "held"]


def response_namespace(entity_type: str) -> str:
    return f"response:{entity_type}"


@dataclass(frozen=True)
class Evicts:
    """What a change of one entity type makes stale (derived in `loaders.entities`)."""

    by_id: tuple[str, ...] = ()  # loaders keyed by the entity's own id
    # Loaders keyed by a field of the changed item (a review's lists by product, by author):
    # evicted at the item's value, or whole when the item is not known.
    by_field: tuple[tuple[str, str], ...] = ()
    whole: tuple[str, ...] = ()  # loaders evicted whole: lists whose members are not tracked
    own: str | None = None  # the entity's by-id loader: a write's item is what it now reads
    needs_item: bool = False  # an event names only the id: read the item to find by_field keys

    def keys(self, entity_id: str, item: Mapping[str, Any] | None
             ) -> tuple[list[tuple[str, Hashable]], list[str]]:
        """(loader, key) pairs and whole loaders this change evicts."""
        keys: list[tuple[str, Hashable]] = [(name, entity_id) for name in self.by_id]
        whole = list(self.whole)
        for name, field in self.by_field:
            if item is not None and field in item:
                keys.append((name, item[field]))
            else:  # not known which lists hold it: evict them all
                whole.append(name)
        return keys, whole


class Invalidator:
    def __init__(self, cache: EntityCache, namespaces: Mapping[str, Namespace],
                 rules: Mapping[str, Evicts], read_item: ReadItem | None = None) -> None:
        self.cache = cache
        self.namespaces = namespaces  # only the cached ones: a disabled one evicts nothing
        self.rules = rules
        self.read_item = read_item

    async def on_event(self, event: Mapping[str, Any]) -> Outcome:
        """Apply a change event.

        The version is recorded only once the eviction is done, on every replica: an event
        whose eviction failed, or could not reach Redis, is applied again when the service
        redelivers it."""
        field = f"{event['type']}:{event['id']}"
        version = event["version"]
        if version <= await self.cache.latest_version(field):
            return "ignored"
        item = None
        rule = self.rules.get(event["type"])
        if rule is not None and rule.needs_item:
            item = await self._item(event["type"], event["id"])
        applied = {k: event[k] for k in ("type", "id", "op", "version")}
        if not await self.evict_many([(event["type"], event["id"], item)], events=[applied]):
            return "held"
        # Two deliveries of one event may both evict (harmless); only one records it.
        await self.cache.record_version(field, version)
        return "applied"

    async def evict_many(self, changes: Sequence[Change], *, own_write: bool = False,
                         deadline: Deadline | None = None,
                         events: Sequence[Mapping[str, Any]] = ()) -> bool:
        """Evict what these changes (type, id, the item if known) make stale, on every
        replica, in one round; for the gateway's own writes (`own_write`), return only once
        the other replicas have evicted too. False when Redis could not be reached (by
        `deadline`, for an own write): the eviction is held and sent when it is back.
        `events` (the change events applied) travel with the eviction (`EntityCache.on_events`)."""
        keys: list[tuple[Namespace, Hashable]] = []
        whole: list[str] = []
        for entity_type, entity_id, item in changes:
            rule = self.rules.get(entity_type, Evicts())
            rule_keys, rule_whole = rule.keys(entity_id, item)
            keys += [(self.namespaces[name], key) for name, key in rule_keys
                     if name in self.namespaces]
            whole += [name for name in rule_whole if name in self.namespaces]
            whole.append(response_namespace(entity_type))
        return await self.cache.invalidate(keys, list(dict.fromkeys(whole)),
                                           wait_for_replicas=own_write, deadline=deadline,
                                           events=events)

    async def _item(self, entity_type: str, entity_id: str) -> Mapping[str, Any] | None:
        if self.read_item is None:
            return None
        try:
            return await self.read_item(entity_type, entity_id)
        except UpstreamError as err:
            log.warning("%s %s not found for invalidation: %s", entity_type, entity_id, err)
            return None
