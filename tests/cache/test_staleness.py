"""Stale-while-revalidate and stale-if-error, per type, from settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.cache.conftest import CacheStack, Query, upstream_calls
from tests.harness import Gateway, start_gateway

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


async def test_stale_while_revalidate_serves_at_once_and_refreshes_once(
    query: Query, cstack: CacheStack, stale_gateway: Gateway
) -> None:
    await query(stale_gateway, USER, {"id": "u50"})
    await asyncio.sleep(TTL + 0.2)  # now stale, within the 30 s window
    cstack.services.set_faults("users", latency_ms=300)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(query(stale_gateway, USER, {"id": "u50"})
                                     for _ in range(20)))
    elapsed = loop.time() - started
    assert all(body["data"]["user"]["id"] == "u50" for _, _, body in results)
    assert elapsed < 0.3  # nobody waited for the 300 ms upstream
    await asyncio.sleep(0.5)  # the background refresh lands
    # The first read, then one refresh for all 20 stale reads.
    assert upstream_calls(cstack.services, "users", "GET /users") == 2
    cstack.services.set_faults("users", latency_ms=0)
    await query(stale_gateway, USER, {"id": "u50"})
    assert upstream_calls(cstack.services, "users", "GET /users") == 2  # fresh again


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
