"""The parts of subscriptions that keep state: a connection's bounded outbox, and the entity
cache handing the change events it applied to its listener (the subscription hub) after
their evictions, from this replica's own evictions and from the other replicas' messages."""

from __future__ import annotations

from typing import Any

import orjson

from app.cache.invalidation import Invalidator
from app.http.subscriptions import Outbox
from loaders.declarations import PRODUCT
from loaders.entities import EVICTIONS
from tests.fakeclock import FakeClock
from tests.unit.helpers import Upstream, make_cache, namespace


async def test_an_outbox_is_bounded_in_bytes_and_keeps_the_order() -> None:
    outbox = Outbox(limit=10)
    assert outbox.put("next", b"123456")
    assert not outbox.put("next", b"12345")  # 11 bytes: over, nothing queued
    assert outbox.put("complete", b"1234")
    assert (len(outbox), outbox.bytes) == (2, 10)
    assert await outbox.get() == ("next", b"123456")
    assert outbox.put("next", b"abcdef")
    assert [await outbox.get(), await outbox.get()] == [("complete", b"1234"),
                                                          ("next", b"abcdef")]
    # One message is always accepted into an empty outbox, whatever its size.
    assert outbox.put("next", b"x" * 100)
    outbox.clear()
    assert (len(outbox), outbox.bytes) == (0, 0)


async def test_the_cache_hands_on_applied_events_after_their_eviction() -> None:
    cache = make_cache(FakeClock())
    ns = namespace(cache, PRODUCT.name, "Product", ttl=60)
    invalidator = Invalidator(cache, {PRODUCT.name: ns}, EVICTIONS)
    upstream = Upstream(p1="v1")
    heard: list[tuple[dict[str, Any], list[Any]]] = []

    def listener(events: list[Any]) -> None:
        # What a listener reads when it hears the event: the entry is gone already.
        for event in events:
            heard.append((dict(event), [cache.l1.get(k, cache.now()) for k in list(
                cache.l1._data)]))

    cache.on_events(listener)
    await cache.read_through(ns, ["p1"], upstream.fetch)
    event = {"type": "Product", "id": "p1", "op": "update", "version": 3, "at": "x"}
    assert await invalidator.on_event(event) == "applied"
    assert await invalidator.on_event(event) == "ignored"  # heard once
    assert heard == [({"type": "Product", "id": "p1", "op": "update", "version": 3}, [])]


def test_another_replicas_message_hands_on_its_events_after_applying_it() -> None:
    cache = make_cache(FakeClock())
    ns = namespace(cache, PRODUCT.name, "Product", ttl=60)
    key = cache.full_key(ns, "p1", None, cache.generation(ns.name))
    cache.l1.set(key, [cache.now() + 60, "v1"], cache.now() + 60)
    heard: list[tuple[list[Any], bool]] = []
    cache.on_events(lambda events: heard.append((events, key in cache.l1._data)))
    event = {"type": "Product", "id": "p1", "op": "update", "version": 4}
    cache._on_message(orjson.dumps({"from": "other", "keys": [key], "generations": {},
                                    "events": [event]}))
    assert heard == [([event], False)]  # after the eviction
    cache._on_message(orjson.dumps({"from": cache.replica, "keys": [], "events": [event]}))
    cache._on_message(orjson.dumps({"from": "other", "keys": []}))
    assert len(heard) == 1  # its own message (heard when it shared it), one without events
