"""The invalidation channel's lease (app/cache/subscription.py): a replica reads its cache
only while it knows no invalidation was missed, and flushes it before trusting it again
(issue 16 c)."""

from __future__ import annotations

import asyncio

from app.cache.entity import MISSING
from app.cache.subscription import Lease
from loaders.declarations import PRODUCT
from tests.fakeclock import FakeClock, settle
from tests.unit.helpers import Upstream, make_cache, namespace


def test_a_lease_runs_from_the_ping_its_pong_answers() -> None:
    clock = FakeClock()
    lease = Lease(1.0, clock)
    assert not lease.valid() and not lease.lapsed()  # nothing heard yet
    sent = clock.monotonic()
    clock.advance(0.3)  # the pong arrives later: the lease counts from the ping
    lease.heard(sent)
    assert lease.valid()
    clock.advance(0.69)
    assert lease.valid()
    clock.advance(0.02)
    assert not lease.valid() and lease.lapsed()
    lease.heard(clock.monotonic())
    assert lease.valid()
    lease.lost()  # a reset connection: nothing heard on it counts
    assert not lease.valid()


async def test_without_the_lease_the_cache_is_read_around() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    lease = cache.lease = Lease(1.0, clock)
    lease.heard(clock.monotonic())
    ns = namespace(cache, PRODUCT.name, "Product", ttl=60)
    upstream = Upstream(p1="v1")
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["v1"]
    assert cache.peek(ns, "p1", None, cache.now()) == "v1"
    upstream.values["p1"] = "v2"  # changed, and the invalidation was missed
    clock.advance(1.5)  # no pong for longer than the lease
    assert cache.peek(ns, "p1", None, cache.now()) is MISSING
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["v2"]
    assert len(upstream.calls) == 2


async def test_a_flush_forgets_everything_and_what_was_in_flight_is_not_stored() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, PRODUCT.name, "Product", ttl=60)
    upstream = Upstream(p1="v1", p2="old")
    await cache.read_through(ns, ["p1"], upstream.fetch)
    epoch = cache.epoch
    upstream.hold = True
    reading = asyncio.ensure_future(cache.read_through(ns, ["p2"], upstream.fetch))
    await settle()
    cache._flush()  # the channel is back after a lapse
    upstream.release()
    assert await reading == ["old"]  # its reader gets it ...
    assert cache.peek(ns, "p2", None, cache.now()) is MISSING  # ... but it was not kept
    assert cache.peek(ns, "p1", None, cache.now()) is MISSING  # and the rest is gone
    # A cached response that started before the flush is stale.
    assert cache.changed_since([], epoch)
    assert not cache.changed_since([], cache.epoch)
