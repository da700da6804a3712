"""The parts of subscriptions that keep state: a connection's bounded outbox, the hub's
per-entity queue of events (coalesced to the latest), and the entity
cache handing the change events it applied to its listener (the subscription hub) after
their evictions, from this replica's own evictions and from the other replicas' messages."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from app.cache.entity import Event
from app.cache.invalidation import Invalidator
from app.execution.subscriptions import EntityQueue
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


async def test_an_entitys_events_coalesce_to_the_latest_while_its_fan_out_runs() -> None:
    """A burst of events for one entity holds at most one waiting event (the latest), not
    one per event: the fan-out's memory is bounded by the entities, not the events."""
    gates: dict[int, asyncio.Event] = {}
    ran: list[tuple[str, int]] = []
    replaced: list[int] = []

    async def run(event: Event) -> None:
        ran.append((event["id"], event["version"]))
        gate = gates.setdefault(event["version"], asyncio.Event())
        await gate.wait()

    queue = EntityQueue(run, lambda event: replaced.append(event["version"]))
    queue.put("Product:p1", {"id": "p1", "version": 1})
    queue.put("Product:p2", {"id": "p2", "version": 100})  # another entity: side by side
    await settle()
    for version in range(2, 1002):  # 1,000 more while the first one's fan-out runs
        queue.put("Product:p1", {"id": "p1", "version": version})
    assert (queue.running, queue.waiting) == (2, 1)
    assert replaced == list(range(2, 1001))  # each superseded by the next
    assert ran == [("p1", 1), ("p2", 100)]
    gates[1].set()
    await settle()
    assert ran[-1] == ("p1", 1001)  # then the latest, and nothing in between
    assert (queue.running, queue.waiting) == (2, 0)
    gates[1001].set()
    gates[100].set()
    await settle()
    assert (queue.running, queue.waiting) == (0, 0)
    queue.put("Product:p1", {"id": "p1", "version": 1002})  # idle again: runs at once
    await settle()
    assert ran[-1] == ("p1", 1002)
    await queue.close()


async def test_a_failed_fan_out_does_not_stop_its_entitys_next_event() -> None:
    ran: list[int] = []
    gate = asyncio.Event()

    async def run(event: Event) -> None:
        ran.append(event["version"])
        await gate.wait()
        if event["version"] == 1:
            raise RuntimeError("boom")

    queue = EntityQueue(run)
    queue.put("Stock:p1", {"version": 1})
    await settle()
    queue.put("Stock:p1", {"version": 2})
    gate.set()
    await settle()
    assert ran == [1, 2] and queue.running == 0


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)
