"""The entity cache: warm reads cost no upstream call, a change evicts what it names, and
neither a stampede nor a fetch in flight can defeat it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.cache.conftest import CacheStack, Query, Replicas, upstream_calls, wait_for
from tests.conftest import QUERIES
from tests.harness import EVENT_SECRET, Gateway, Services, http

DEEP = (QUERIES / "deep.graphql").read_text()
PRODUCT = 'query($id: ID!) { product(id: $id) { id name inStock } }'


async def test_warm_deep_query_costs_no_upstream_call(query: Query, cstack: CacheStack) -> None:
    _, _, cold = await query(cstack.memory, DEEP)
    cstack.services.reset_stats()
    _, _, warm = await query(cstack.memory, DEEP)
    assert warm == cold and "errors" not in warm
    counts = {n: sum(s["requests"].values()) for n, s in cstack.services.all_stats().items()}
    assert counts == dict.fromkeys(counts, 0)


async def test_a_change_event_evicts_the_entity(query: Query, cstack: CacheStack) -> None:
    pid = "p3001"
    _, _, before = await query(cstack.memory, PRODUCT, {"id": pid})
    new_name = f"Renamed {time.time()}"
    status, _, _ = http("PATCH", cstack.services.url("catalog") + f"/products/{pid}",
                        {"name": new_name})
    assert status == 200

    async def renamed() -> bool:
        _, _, body = await query(cstack.memory, PRODUCT, {"id": pid})
        return body["data"]["product"]["name"] == new_name

    await wait_for(renamed)
    assert before["data"]["product"]["name"] != new_name


def signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(event)
    digest = hmac.new(EVENT_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-Signature": f"sha256={digest}", "Content-Type": "application/json"}


async def post_event(session: aiohttp.ClientSession, gateway: Gateway,
                     event: dict[str, Any]) -> None:
    body, headers = signed(event)
    async with session.post(gateway.url + "/events", data=body, headers=headers) as resp:
        assert resp.status == 204


async def test_an_event_older_than_one_seen_is_ignored(
    query: Query, cstack: CacheStack, http_session: aiohttp.ClientSession
) -> None:
    pid = "p3002"
    event = {"type": "Product", "id": pid, "op": "update", "version": 1000,
             "at": "2026-11-22T10:00:00Z"}
    await post_event(http_session, cstack.memory, event)
    await query(cstack.memory, PRODUCT, {"id": pid})  # cached after the eviction
    cstack.services.reset_stats()
    await post_event(http_session, cstack.memory, {**event, "version": 999})
    await post_event(http_session, cstack.memory, {**event, "version": 1000})
    await query(cstack.memory, PRODUCT, {"id": pid})
    assert upstream_calls(cstack.services, "catalog", "GET /products") == 0
    await post_event(http_session, cstack.memory, {**event, "version": 1001})
    await query(cstack.memory, PRODUCT, {"id": pid})
    assert upstream_calls(cstack.services, "catalog", "GET /products") == 1


async def test_concurrent_misses_cost_one_upstream_call(
    query: Query, cstack: CacheStack
) -> None:
    # 200 requests for one cold product, across requests: one catalog call (coalescing).
    cstack.services.set_faults("catalog", latency_ms=100)
    results = await asyncio.gather(
        *(query(cstack.memory, 'query($id: ID!) { product(id: $id) { id name } }',
                {"id": "p3003"}) for _ in range(200)))
    assert all(body["data"]["product"]["id"] == "p3003" for _, _, body in results)
    assert upstream_calls(cstack.services, "catalog", "GET /products") == 1


async def race(query: Query, session: aiohttp.ClientSession, services: Services,
               writer: Gateway, reader: Gateway, pid: str) -> None:
    """A fetch held at the catalog while an event evicts its product: its older result is
    cached neither by `writer` (which fetched, and received the event) nor in Redis, where
    `reader` would find it."""
    doc = 'query($id: ID!) { product(id: $id) { id name } }'
    services.reset_stats()
    # The catalog holds every request: the fetch stays in flight until released.
    services.set_faults("catalog", hang_rate=1.0)
    fetch = asyncio.create_task(query(writer, doc, {"id": pid}))

    async def in_flight() -> bool:
        return upstream_calls(services, "catalog", "GET /products") >= 1

    await wait_for(in_flight)  # the fetch reached the catalog, and is held there
    # The event is applied before its 204: the eviction happens while the fetch is held.
    await post_event(session, writer, {
        "type": "Product", "id": pid, "op": "update", "version": 5000,
        "at": "2026-11-22T10:00:00Z"})
    assert not fetch.done()
    # Release: the held attempt times out (UPSTREAM_TIMEOUT_S) and the same fetch's
    # retry is answered, after the invalidation.
    services.set_faults("catalog", hang_rate=0.0)
    _, _, body = await fetch
    assert body["data"]["product"]["id"] == pid, body
    # Its result predates the invalidation: it was not cached, here or in Redis.
    services.reset_stats()
    await query(reader, doc, {"id": pid})
    assert upstream_calls(services, "catalog", "GET /products") == 1, writer.url
    # The reader's fetch began after the eviction: it is cached, and the writer reads it.
    await query(writer, doc, {"id": pid})
    assert upstream_calls(services, "catalog", "GET /products") == 1, writer.url


async def test_a_fetch_in_flight_cannot_cache_what_an_invalidation_replaced(
    query: Query, cstack: CacheStack, http_session: aiohttp.ClientSession
) -> None:
    await race(query, http_session, cstack.services, cstack.memory, cstack.memory, "p3004")


async def test_nor_can_it_in_redis_where_another_replica_reads(
    query: Query, replicas: Replicas, http_session: aiohttp.ClientSession
) -> None:
    # On one Redis and on a cluster: the eviction's tombstone and the fetch's write meet in
    # the key's slot, under its bucket's epoch.
    await race(query, http_session, replicas.services, replicas.a, replicas.b, "p3005")


async def test_private_data_is_cached_per_user(query: Query, cstack: CacheStack) -> None:
    doc = "{ me { recommendations(first: 4) { id } } }"
    _, _, mine = await query(cstack.memory, doc, user="u30")
    _, _, theirs = await query(cstack.memory, doc, user="u31")
    _, _, again = await query(cstack.memory, doc, user="u30")
    assert mine == again and mine != theirs
    assert upstream_calls(cstack.services, "recommendations",
                          "GET /recommendations/{user_id}") == 2


async def test_cache_metrics_by_type(query: Query, cstack: CacheStack,
                                     http_session: aiohttp.ClientSession) -> None:
    async def samples() -> dict[tuple[str, str], float]:
        async with http_session.get(cstack.memory.url + "/metrics") as resp:
            text = await resp.text()
        return {(s.labels["entity"], s.labels["outcome"]): s.value
                for f in text_string_to_metric_families(text)
                if f.name == "gateway_cache_events"
                for s in f.samples if s.name == "gateway_cache_events_total"}

    pid = "p3006"
    before = await samples()
    await query(cstack.memory, PRODUCT, {"id": pid})  # a miss (or a hit, if cached already)
    await post_event(http_session, cstack.memory, {  # an eviction, applied before its 204
        "type": "Product", "id": pid, "op": "update", "version": int(time.time() * 1000),
        "at": "2026-11-22T10:00:00Z"})
    await query(cstack.memory, PRODUCT, {"id": pid})  # a miss: it was evicted
    await query(cstack.memory, PRODUCT, {"id": pid})  # a hit
    after = await samples()

    def grew(entity: str, outcome: str) -> float:
        return after.get((entity, outcome), 0) - before.get((entity, outcome), 0)

    for outcome in ("hit", "miss", "eviction"):
        assert grew("Product", outcome) >= 1, (outcome, before, after)
    assert grew("Stock", "hit") >= 1, (before, after)


async def test_a_new_review_evicts_its_product_and_author_lists(
    query: Query, cstack: CacheStack
) -> None:
    # Written at the reviews service, not through the gateway: only the Review event (whose
    # product and author the gateway looks up) and the Product event tell the gateway.
    doc = """query($p: ID!, $u: ID!) { product(id: $p) { reviewCount reviews(first: 1) { id } }
                                      user(id: $u) { reviews(first: 1) { id } } }"""
    variables = {"p": "p3007", "u": "u90"}
    _, _, before = await query(cstack.memory, doc, variables)
    status, _, review = http("POST", cstack.services.url("reviews") + "/reviews", {
        "product_id": "p3007", "author_id": "u90", "rating": 4, "body": "Late but good."})
    assert status == 201

    async def both_lists_show_it() -> bool:
        _, _, body = await query(cstack.memory, doc, variables)
        data = body["data"]
        return (data["product"]["reviews"][0]["id"] == review["id"]
                and data["user"]["reviews"][0]["id"] == review["id"]
                and data["product"]["reviewCount"] == before["data"]["product"]["reviewCount"] + 1)

    await wait_for(both_lists_show_it)
