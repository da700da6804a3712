"""The invalidator's event versions, and an eviction that a fetch in flight cannot undo."""

from __future__ import annotations

import asyncio

import pytest

from app.cache.invalidation import Invalidator
from app.cache.subscription import Lease
from app.cache.versions import EventVersions
from loaders.declarations import PRODUCT, REVIEWS_BY_PRODUCT
from loaders.entities import EVICTIONS
from tests.fakeclock import FakeClock, settle
from tests.unit.helpers import Upstream, make_cache, namespace


def product_event(version: int, pid: str = "p1") -> dict[str, object]:
    return {"type": "Product", "id": pid, "op": "update", "version": version}


async def test_a_version_is_recorded_only_when_newer() -> None:
    cache = make_cache(FakeClock())
    assert await cache.record_version("Product:p1", 5) is True
    assert await cache.record_version("Product:p1", 5) is False
    assert await cache.record_version("Product:p1", 4) is False
    assert await cache.record_version("Product:p2", 1) is True  # per entity
    assert await cache.record_version("Product:p1", 6) is True
    assert await cache.latest_version("Product:p1") == 6
    assert await cache.latest_version("Product:p3") == -1


def test_versions_are_forgotten_after_their_ttl() -> None:
    clock = FakeClock()
    versions = EventVersions(ttl_s=60, max_entries=100, clock=clock)
    assert versions.record("Product:p1", 5)
    clock.advance(59)
    assert versions.latest("Product:p1") == 5
    assert not versions.record("Product:p1", 5)
    clock.advance(2)
    assert versions.latest("Product:p1") == -1  # forgotten: a late copy evicts once more
    assert versions.record("Product:p1", 3)


def test_the_version_table_does_not_grow_with_every_entity_ever_changed() -> None:
    clock = FakeClock()
    versions = EventVersions(ttl_s=60, max_entries=1000, clock=clock)
    for second in range(600):  # ten minutes of 50 new entities a second
        clock.advance(1)
        for i in range(50):
            versions.record(f"Order:o{second}-{i}", 1)
    assert len(versions) <= 61 * 50  # what the last minute recorded, no more
    for i in range(5000):  # a burst of distinct entities within one second
        versions.record(f"Stock:s{i}", 1)
    assert len(versions) == 1000
    assert versions.latest("Stock:s4999") == 1  # the newest are kept
    assert versions.latest("Stock:s0") == -1


async def test_an_event_whose_eviction_failed_is_applied_when_redelivered() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, REVIEWS_BY_PRODUCT.name, "Review", ttl=60)
    reads = 0

    async def read_item(entity_type: str, entity_id: str) -> dict[str, str]:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise RuntimeError("the gateway failed midway")
        return {"id": entity_id, "product_id": "p1", "author_id": "u1"}

    invalidator = Invalidator(cache, {REVIEWS_BY_PRODUCT.name: ns}, EVICTIONS, read_item)
    upstream = Upstream(p1=["old review"])
    await cache.read_through(ns, ["p1"], upstream.fetch)
    event = {"type": "Review", "id": "r9", "op": "create", "version": 1}
    with pytest.raises(RuntimeError):
        await invalidator.on_event(event)
    upstream.values["p1"] = ["r9", "old review"]
    # The service saw no 2xx and delivers the event again: now it evicts.
    assert await invalidator.on_event(event) == "applied"
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == [["r9", "old review"]]
    assert await invalidator.on_event(event) == "ignored"  # and once applied, only once


async def test_only_a_newer_event_evicts() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, PRODUCT.name, "Product", ttl=60)
    invalidator = Invalidator(cache, {PRODUCT.name: ns}, EVICTIONS)
    upstream = Upstream(p1="v1")
    assert await invalidator.on_event(product_event(10)) == "applied"
    await cache.read_through(ns, ["p1"], upstream.fetch)
    upstream.values["p1"] = "v2"
    for stale in (9, 10):  # older, then equal: ignored, the entry stands
        assert await invalidator.on_event(product_event(stale)) == "ignored"
        assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["v1"]
    assert len(upstream.calls) == 1
    assert await invalidator.on_event(product_event(11)) == "applied"
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["v2"]
    assert len(upstream.calls) == 2


async def test_an_eviction_during_a_fetch_keeps_that_fetchs_value_out_of_the_cache() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, PRODUCT.name, "Product", ttl=60)
    invalidator = Invalidator(cache, {PRODUCT.name: ns}, EVICTIONS)
    upstream = Upstream(p1="before the change")
    upstream.hold = True
    reading = asyncio.ensure_future(cache.read_through(ns, ["p1"], upstream.fetch))
    await settle()
    assert upstream.calls == [["p1"]]  # the fetch is in flight
    assert await invalidator.on_event(product_event(1)) == "applied"
    upstream.release()
    # The reader that asked still gets its answer ...
    assert await reading == ["before the change"]
    # ... but it was not stored: it may predate the change.
    upstream.values["p1"] = "after the change"
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["after the change"]
    assert len(upstream.calls) == 2
    # A fetch that starts after the eviction is stored as usual.
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["after the change"]
    assert len(upstream.calls) == 2


async def test_a_read_after_an_eviction_does_not_join_the_fetch_in_flight_before_it() -> None:
    # Issue 16 (a): the fetch in flight may have read the data before the change; a read
    # that starts after the change must fetch again, not wait for that older answer.
    cache = make_cache(FakeClock())
    ns = namespace(cache, PRODUCT.name, "Product", ttl=60)
    upstream = Upstream(p1="before the change")
    upstream.hold = True
    before = asyncio.ensure_future(cache.read_through(ns, ["p1"], upstream.fetch))
    await settle()
    assert upstream.calls == [["p1"]]  # in flight, held
    upstream.values["p1"] = "after the change"
    await cache.invalidate([(ns, "p1")])
    upstream.hold = False  # the next call answers at once; the first stays held
    after = asyncio.ensure_future(cache.read_through(ns, ["p1"], upstream.fetch))
    await settle()
    assert after.done() and after.result() == ["after the change"]
    assert upstream.calls == [["p1"], ["p1"]]
    # The first fetch answers last (the fake answers from `values` when released): its
    # own reader gets that answer, but it is not stored over the newer one.
    upstream.values["p1"] = "the first fetch's late answer"
    upstream.release()
    assert await before == ["the first fetch's late answer"]
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["after the change"]
    assert len(upstream.calls) == 2


async def test_a_read_after_an_eviction_does_not_join_a_background_refresh() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, PRODUCT.name, "Product", ttl=10, swr=30)
    upstream = Upstream(p1="v1")
    await cache.read_through(ns, ["p1"], upstream.fetch)
    clock.advance(15)  # stale: served, and refreshed in the background (held)
    upstream.values["p1"] = "v2"
    upstream.hold = True
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["v1"]
    await settle()
    assert len(upstream.calls) == 2
    upstream.values["p1"] = "v3"
    await cache.invalidate([(ns, "p1")])
    upstream.hold = False
    after = asyncio.ensure_future(cache.read_through(ns, ["p1"], upstream.fetch))
    await settle()
    assert after.done() and after.result() == ["v3"]
    upstream.release()
    await settle()
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["v3"]
    assert len(upstream.calls) == 3


class HeldRedis:
    """The shared level's fake: answers reads with `values` once released."""

    def __init__(self, **values: bytes) -> None:
        self.values = values
        self.gate = asyncio.Event()
        self.reads = 0

    async def read(self, keys: list[str]) -> tuple[list[bytes | None], int]:
        self.reads += 1
        await self.gate.wait()
        return [self.values.get(k.split(":")[-1]) for k in keys], 1

    async def write(self, items: object, started_epoch: int) -> None:
        pass

    async def invalidate(self, keys: object, tombstone_ms: int) -> None:
        pass

    async def publish(self, message: bytes, ack: object = None, wait_s: float = 0) -> int:
        return 0

    async def bump(self, names: list[str]) -> dict[str, int]:
        return {}

    async def latest_version(self, field: str) -> None:
        return None  # as when Redis is down: the versions are this process's

    async def record_version(self, field: str, version: int, ttl_ms: int) -> None:
        return None


async def test_a_shared_level_answer_overlapping_an_eviction_is_not_kept() -> None:
    # Redis answered with the value from before a change that was evicted while the answer
    # travelled: it must not land in memory as current (found by the history checker's
    # scenario: a replica kept serving the old name after the event).
    import orjson

    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, PRODUCT.name, "Product", ttl=60)
    held = HeldRedis(p1=b"0:" + orjson.dumps([clock.time() + 60, "old"]))  # as _WRITE stores
    cache.l2 = held  # type: ignore[assignment]
    cache.lease = Lease(1.0, clock)
    cache.lease.heard(clock.monotonic())
    invalidator = Invalidator(cache, {PRODUCT.name: ns}, EVICTIONS)
    upstream = Upstream(p1="new")
    reading = asyncio.ensure_future(cache.read_through(ns, ["p1"], upstream.fetch))
    await settle()
    assert held.reads == 1  # Redis is answering
    assert await invalidator.on_event(product_event(1)) == "applied"
    held.gate.set()
    assert await reading == ["new"]  # fetched anew, not the old answer
    assert cache.peek(ns, "p1", None, cache.now()) == "new"
