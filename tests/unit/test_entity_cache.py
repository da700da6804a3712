"""The entity cache's rules, in process, on a FakeClock: freshness, stale-while-revalidate,
stale-if-error, coalescing, and a deadline on a borrowed fetch."""

from __future__ import annotations

import asyncio

from app.cache.hints import RequestPolicy
from app.upstream.failures import UpstreamError, upstream_failure
from app.upstream.resilience import Deadline
from tests.fakeclock import FakeClock, settle
from tests.unit.helpers import Upstream, make_cache, namespace


async def test_a_fresh_entry_is_served_without_a_fetch_until_its_ttl() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10)
    upstream = Upstream(p1={"id": "p1", "v": 1})
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == [{"id": "p1", "v": 1}]
    upstream.values["p1"] = {"id": "p1", "v": 2}
    clock.advance(9.9)
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == [{"id": "p1", "v": 1}]
    assert upstream.calls == [["p1"]]
    clock.advance(0.1)  # at the TTL: no longer fresh, and no stale window: fetched again
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == [{"id": "p1", "v": 2}]
    assert upstream.calls == [["p1"], ["p1"]]


async def test_only_the_misses_of_a_batch_are_fetched() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10)
    upstream = Upstream(p1="one", p2="two")
    await cache.read_through(ns, ["p1"], upstream.fetch)
    assert await cache.read_through(ns, ["p1", "p2"], upstream.fetch) == ["one", "two"]
    assert upstream.calls == [["p1"], ["p2"]]


async def test_stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background(
) -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10, swr=5)
    upstream = Upstream(p1="old")
    await cache.read_through(ns, ["p1"], upstream.fetch)
    upstream.values["p1"] = "new"
    upstream.hold = True  # the refresh stays in flight until released
    clock.advance(12)  # past the TTL, within the 5 s stale-while-revalidate window
    # Both reads answer at once (the fetch is held: nobody could have waited for it) ...
    first = await cache.read_through(ns, ["p1"], upstream.fetch)
    second = await cache.read_through(ns, ["p1"], upstream.fetch)
    assert first == second == ["old"]
    await settle()
    # ... and one refresh is in flight for both.
    assert upstream.calls == [["p1"], ["p1"]]
    upstream.release()
    await settle()
    assert not cache._background  # the refresh finished
    # Refreshed: fresh again with the new value, no further fetch.
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["new"]
    assert upstream.calls == [["p1"], ["p1"]]


async def test_past_the_swr_window_a_read_waits_for_the_upstream() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10, swr=5)
    upstream = Upstream(p1="old")
    await cache.read_through(ns, ["p1"], upstream.fetch)
    upstream.values["p1"] = "new"
    clock.advance(15)
    assert await cache.read_through(ns, ["p1"], upstream.fetch) == ["new"]


async def test_stale_if_error_serves_the_old_value_when_the_fetch_fails() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10, sie=60)
    upstream = Upstream(p1="old")
    await cache.read_through(ns, ["p1"], upstream.fetch)
    clock.advance(30)  # past the TTL, within stale-if-error
    upstream.error = upstream_failure("connection", "catalog")
    policy = RequestPolicy()
    assert await cache.read_through(ns, ["p1"], upstream.fetch, policy=policy) == ["old"]
    assert policy.stale is True
    assert upstream.calls == [["p1"], ["p1"]]  # it did ask the upstream first
    # A key with no old value has nothing to fall back on: its own error, not stale.
    other = RequestPolicy()
    [result] = await cache.read_through(ns, ["p2"], upstream.fetch, policy=other)
    assert result is upstream.error and other.stale is False


async def test_stale_if_error_is_not_used_when_the_fetch_succeeds() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10, sie=60)
    upstream = Upstream(p1="old")
    await cache.read_through(ns, ["p1"], upstream.fetch)
    upstream.values["p1"] = "new"
    clock.advance(30)
    policy = RequestPolicy()
    assert await cache.read_through(ns, ["p1"], upstream.fetch, policy=policy) == ["new"]
    assert policy.stale is False


async def test_a_miss_past_the_sie_window_fails_the_key() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10, sie=60)
    upstream = Upstream(p1="old", p2="two")
    await cache.read_through(ns, ["p1", "p2"], upstream.fetch)
    clock.advance(70)  # TTL + sie: the old value may no longer stand in
    upstream.error = upstream_failure("connection", "catalog")
    policy = RequestPolicy()
    results = await cache.read_through(ns, ["p1", "p2"], upstream.fetch, policy=policy)
    assert results == [upstream.error, upstream.error]
    assert policy.stale is False


async def test_concurrent_reads_of_one_key_cost_one_fetch() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10)
    upstream = Upstream(p1="one", p2="two")
    upstream.hold = True
    first = asyncio.ensure_future(cache.read_through(ns, ["p1"], upstream.fetch))
    await settle()
    second = asyncio.ensure_future(cache.read_through(ns, ["p1", "p2"], upstream.fetch))
    await settle()
    # The second read fetches only the key nobody is fetching, and waits for the other.
    assert upstream.calls == [["p1"], ["p2"]]
    assert not first.done() and not second.done()
    upstream.release()
    assert await first == ["one"]
    assert await second == ["one", "two"]
    assert upstream.calls == [["p1"], ["p2"]]


async def test_a_borrowed_fetch_is_waited_for_only_until_the_readers_own_deadline() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10)
    upstream = Upstream(p1="one")
    upstream.hold = True
    patient = asyncio.ensure_future(cache.read_through(ns, ["p1"], upstream.fetch))
    await settle()
    hasty_fetch = Upstream(p1="never asked")
    hasty = asyncio.ensure_future(cache.read_through(
        ns, ["p1"], hasty_fetch.fetch, deadline=Deadline(0.5, clock), service="catalog"))
    await settle()
    clock.advance(0.4)
    await settle()
    assert not hasty.done()  # its deadline is not up yet
    clock.advance(0.1)
    await settle()
    assert hasty.done() and not patient.done()
    [error] = hasty.result()
    assert isinstance(error, UpstreamError) and error.code == "DEADLINE_EXCEEDED"
    assert error.service == "catalog"
    assert hasty_fetch.calls == []  # it borrowed the patient one's fetch, and sent nothing
    # The patient one is not failed by the hasty one's deadline.
    upstream.release()
    assert await patient == ["one"]
    assert upstream.calls == [["p1"]]


async def test_a_borrowed_fetch_that_lands_in_time_is_shared() -> None:
    clock = FakeClock()
    cache = make_cache(clock)
    ns = namespace(cache, ttl=10)
    upstream = Upstream(p1="one")
    upstream.hold = True
    patient = asyncio.ensure_future(cache.read_through(ns, ["p1"], upstream.fetch))
    await settle()
    hasty = asyncio.ensure_future(cache.read_through(
        ns, ["p1"], upstream.fetch, deadline=Deadline(0.5, clock), service="catalog"))
    await settle()
    clock.advance(0.4)
    upstream.release()
    assert await hasty == ["one"] and await patient == ["one"]
    assert upstream.calls == [["p1"]]
