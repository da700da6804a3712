"""Lookups answered at hand: under the plan executor, a value fresh in this process's entity
cache, or already read by the request, is used without a future or a batch. The guarantees
of the batched path still hold: each key is counted once as a hit, a level that mixes hits
and misses still costs one upstream call per service, and graphql-core's executor (which
runs the fields under a value at once) keeps reading through its batches."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from app.config.settings import Settings
from app.http.app import build_caching
from app.http.view import Caching
from app.upstream.client import UpstreamClient
from loaders.declarations import PRODUCT, TOP_PRODUCTS
from loaders.registry import Loaders
from schema import build_schema
from tests.cache.conftest import CacheStack, Query
from tests.cache.test_entity_cache import post_event
from tests.conftest import QUERIES
from tests.harness import Gateway, http, start_gateway

DEEP = (QUERIES / "deep.graphql").read_text()
OUTCOMES = ("hit", "miss", "stale")


async def cache_events(session: aiohttp.ClientSession, gateway: Gateway
                       ) -> dict[tuple[str, str], float]:
    async with session.get(gateway.url + "/metrics") as resp:
        text = await resp.text()
    return {(s.labels["entity"], s.labels["outcome"]): s.value
            for f in text_string_to_metric_families(text) if f.name == "gateway_cache_events"
            for s in f.samples if s.name == "gateway_cache_events_total"}


def delta(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
          ) -> dict[tuple[str, str], float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before.keys()}


async def test_each_key_read_at_hand_counts_as_one_hit(
    query: Query, cstack: CacheStack, http_session: aiohttp.ClientSession
) -> None:
    gateway = cstack.memory
    before = await cache_events(http_session, gateway)
    _, _, first = await query(gateway, DEEP)
    middle = await cache_events(http_session, gateway)
    cstack.services.reset_stats()
    _, _, second = await query(gateway, DEEP)
    after = await cache_events(http_session, gateway)
    assert second == first and "errors" not in second
    assert all(sum(s["requests"].values()) == 0 for s in cstack.services.all_stats().values())
    one, two = delta(before, middle), delta(middle, after)
    entities = {entity for entity, _ in one}
    assert {"User", "Product", "Review", "Stock"} <= entities
    for entity in entities:
        # The first query looked each distinct key up once (a hit, a miss or a stale read);
        # the second finds every one of them, and counts each once.
        looked_up = sum(one.get((entity, o), 0) for o in OUTCOMES)
        assert two.get((entity, "hit"), 0) == looked_up, (entity, one, two)
        assert two.get((entity, "miss"), 0) == 0, entity


@pytest.fixture(scope="module")
def core(stack: CacheStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """graphql-core's executor with the entity cache."""
    gateway = start_gateway(tmp_path_factory.mktemp("core"), stack.services,
                            env={"PLAN_EXECUTOR": "false"})
    yield gateway
    gateway.stop()


MIXED = """query($u: ID!) { user(id: $u) { reviews(first: 50) {
  product { id inStock category { id } } } } }"""


@pytest.mark.parametrize("executor", ["plan", "graphql-core"])
async def test_a_level_of_hits_and_misses_costs_one_call_per_service(
    query: Query, cstack: CacheStack, core: Gateway, http_session: aiohttp.ClientSession,
    dataset: Any, executor: str,
) -> None:
    gateway = cstack.memory if executor == "plan" else core
    user = "u61" if executor == "plan" else "u62"
    reviews = sorted((r for r in dataset.reviews.values() if r["author_id"] == user),
                     key=lambda r: (r["created_at"], r["id"]), reverse=True)
    products = list(dict.fromkeys(r["product_id"] for r in reviews))
    assert len(products) >= 3
    # Nothing of these products is cached: then only the first one (a hit that comes before
    # all its siblings' misses) is, with its category but not its stock.
    version = time.time_ns()
    for pid in products:
        await post_event(http_session, gateway, {"type": "Product", "id": pid, "op": "update",
                                                 "version": version, "at": "2026-11-22T10:00:00Z"})
        sku = dataset.products[pid]["sku"]
        await post_event(http_session, gateway, {"type": "Stock", "id": sku, "op": "update",
                                                 "version": version, "at": "2026-11-22T10:00:00Z"})
    await query(gateway, 'query($id: ID!) { product(id: $id) { id category { id } } }',
                {"id": products[0]})
    cstack.services.reset_stats()
    _, _, body = await query(gateway, MIXED, {"u": user})
    assert "errors" not in body
    assert [r["product"]["id"] for r in body["data"]["user"]["reviews"]][:1] == products[:1]
    stats = cstack.services.all_stats()
    catalog = stats["catalog"]["requests"]
    assert catalog["GET /products"] == 1  # the misses, in one batch
    assert set(catalog.values()) == {1}  # and their categories (if any), in one more
    assert stats["inventory"]["requests"] == {"POST /inventory/query": 1}  # every stock


async def test_a_cached_listing_answered_at_hand_still_fills_the_by_id_loader(
    query: Query, cstack: CacheStack
) -> None:
    doc = """{ category(id: "c7") { products(first: 5) { edges { node {
               id name reviews(first: 1) { product { id name } } } } } } }"""
    _, _, first = await query(cstack.memory, doc)
    cstack.services.reset_stats()
    _, _, second = await query(cstack.memory, doc)
    assert second == first and "errors" not in second
    # The reviews' products are the listed ones: known from the cached listing itself.
    assert cstack.services.stats("catalog")["requests"] == {}


@pytest_asyncio.fixture
async def parts(cstack: CacheStack) -> AsyncIterator[tuple[UpstreamClient, Caching]]:
    """An upstream client and the caches of a gateway, in this process: no change event
    reaches them, so an upstream change is seen only by what is fetched after it."""
    settings = Settings.from_env({**cstack.services.gateway_env(), "DEV_MODE": "true"})
    client = UpstreamClient(settings)
    await client.start()
    yield client, build_caching(settings, build_schema().as_str(), client)
    await client.close()


async def test_one_key_reads_one_value_in_a_request(
    cstack: CacheStack, parts: tuple[UpstreamClient, Caching]
) -> None:
    client, caching = parts

    def loaders() -> Loaders:
        made = Loaders(client, 4, caching.entities, caching.namespaces)
        made.by_level = True  # as under the plan executor
        return made

    listing = loaders()
    [pid] = [p["id"] for p in (await listing.load(TOP_PRODUCTS, 1))["items"]]
    listing.release()
    by_id = loaders()
    await by_id.load(PRODUCT, pid)  # fresh in the memory level now
    by_id.release()
    status, _, _ = http("PATCH", cstack.services.url("catalog") + f"/products/{pid}",
                        {"name": f"Renamed {time.time()}"})
    assert status == 200

    request = loaders()
    before = request.get(PRODUCT, pid)
    assert isinstance(before, dict)  # at hand: the name from before the change
    # A listing fetched now has the new name; the request keeps reading the one it read.
    listed = await request.load(TOP_PRODUCTS, 2)
    assert listed["items"][0]["id"] == pid and listed["items"][0]["name"] != before["name"]
    assert request.get(PRODUCT, pid) is before
    assert (await request.load_many(PRODUCT, [pid]))[0] is before
    assert await request.load(PRODUCT, pid) is before
    assert request.hits_at_hand == 1  # one key, one hit
    request.release()
