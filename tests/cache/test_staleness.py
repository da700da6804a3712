"""Stale-while-revalidate and stale-if-error, per type, from settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.cache.conftest import CacheStack, Query, upstream_calls, wait_for
from tests.harness import Gateway, metric_total, start_gateway

TTL = 1.0  # seconds: short, so the tests can outlive it


@pytest.fixture(scope="module")
def stale_gateway(stack: CacheStack, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("stale"), stack.services, env={
        "CACHE_HINTS": '{"Product": {"maxAge": 1}, "User": {"maxAge": 1}}',
        # Products: only stale-if-error; users: only stale-while-revalidate.
        "CACHE_STALE": '{"Product": {"swr": 0, "sie": 60}, "User": {"swr": 30, "sie": 0}}',
    })
    yield gateway
    gateway.stop()


USER = 'query($id: ID!) { user(id: $id) { id username } }'
PRODUCT = 'query($id: ID!) { product(id: $id) { id name } }'


def user_cache_events(gateway: Gateway, outcome: str) -> float:
    return metric_total(gateway.url, "gateway_cache_events_total", entity="User",
                        outcome=outcome)


async def test_stale_while_revalidate_serves_at_once_and_refreshes_once(
    query: Query, cstack: CacheStack, stale_gateway: Gateway
) -> None:
    await query(stale_gateway, USER, {"id": "u50"})
    await asyncio.sleep(TTL + 0.2)  # now stale, within the 30 s window
    cstack.services.reset_stats()
    # The users service holds every request: whoever waits for it gets no answer.
    cstack.services.set_faults("users", hang_rate=1.0)
    stale_before = user_cache_events(stale_gateway, "stale")
    results = await asyncio.gather(*(query(stale_gateway, USER, {"id": "u50"})
                                     for _ in range(20)))
    # All 20 answered while the upstream answers nobody: nobody waited for it.
    assert all(body["data"]["user"]["id"] == "u50" and "errors" not in body
               for _, _, body in results), results
    assert user_cache_events(stale_gateway, "stale") - stale_before == 20

    async def refresh_sent() -> bool:
        return upstream_calls(cstack.services, "users", "GET /users") >= 1

    await wait_for(refresh_sent)
    # One refresh for all 20 stale reads, held by the users service.
    assert upstream_calls(cstack.services, "users", "GET /users") == 1
    # Release it: the held attempt times out (UPSTREAM_TIMEOUT_S) and its retry is answered.
    cstack.services.set_faults("users", hang_rate=0.0)
    hits_before = user_cache_events(stale_gateway, "hit")

    async def fresh_again() -> bool:
        await query(stale_gateway, USER, {"id": "u50"})
        return user_cache_events(stale_gateway, "hit") > hits_before

    await wait_for(fresh_again, within=5.0)
    # The held attempt and its retry: still the one refresh, and the fresh reads cost nothing.
    assert upstream_calls(cstack.services, "users", "GET /users") == 2


async def test_stale_if_error_serves_old_data_and_says_so(
    query: Query, cstack: CacheStack, stale_gateway: Gateway
) -> None:
    _, _, fresh = await query(stale_gateway, PRODUCT, {"id": "p3200"})
    await asyncio.sleep(TTL + 0.2)
    cstack.services.set_faults("catalog", error_rate=1.0, error_status=503)
    status, headers, body = await query(stale_gateway, PRODUCT, {"id": "p3200"})
    assert status == 200 and body["data"] == fresh["data"] and "errors" not in body
    assert body["extensions"]["cache"] == {"stale": True}
    assert headers["Cache-Control"] == "no-store"
    # Without an old value there is nothing to fall back on: a classified error.
    _, _, body = await query(stale_gateway, PRODUCT, {"id": "p3201"})
    assert body["data"]["product"] is None
    assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"


async def test_without_stale_windows_an_expired_entry_is_refetched(
    query: Query, cstack: CacheStack, stale_gateway: Gateway
) -> None:
    # Product has no stale-while-revalidate: past its TTL a read waits for the upstream.
    await query(stale_gateway, PRODUCT, {"id": "p3202"})
    await query(stale_gateway, PRODUCT, {"id": "p3202"})
    assert upstream_calls(cstack.services, "catalog", "GET /products") == 1
    await asyncio.sleep(TTL + 0.2)
    await query(stale_gateway, PRODUCT, {"id": "p3202"})
    assert upstream_calls(cstack.services, "catalog", "GET /products") == 2
