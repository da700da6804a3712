"""The entity registry (`loaders/entities.py`): every table derived from it covers every
entity type, so a new type or a namespace switched off by CACHE_HINTS cannot raise at run
time. In process: the cache's memory level, no Redis, no services."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
import pytest
from graphql import GraphQLObjectType

from app.cache.entity import MISSING, EntityCache
from app.cache.hints import CacheHints
from app.cache.invalidation import Invalidator, response_namespace
from loaders import declarations
from loaders.declarations import BY_NAME
from loaders.entities import ENTITIES, EVICTIONS, STALENESS
from loaders.registry import Loaders, namespaces
from loaders.spec import BatchSpec
from schema import build_schema

SDL = build_schema().as_str()
CACHED = [spec.name for spec in declarations.ALL if spec.cache is not None]
# A sample item of each type, with the fields evictions read.
ITEMS: dict[str, dict[str, Any]] = {
    "Review": {"id": "r1", "product_id": "p1", "author_id": "u1"},
    "Order": {"id": "o1", "user_id": "u1", "items": []},
    "Product": {"id": "p1"}, "User": {"id": "u1"}, "Category": {"id": "c1"},
    "Stock": {"sku": "p1"},
}


def test_every_type_a_loader_fetches_is_registered() -> None:
    fetched = {spec.entity for spec in declarations.ALL}
    assert fetched <= set(ENTITIES), fetched - set(ENTITIES)
    for entity in ENTITIES.values():
        assert set(entity.reads) <= set(ENTITIES), entity
    assert set(ITEMS) == set(ENTITIES), "a new entity type needs a sample item here"


def test_every_registered_type_is_a_type_of_the_graph() -> None:
    schema = build_schema()._schema
    for name in ENTITIES:
        assert isinstance(schema.type_map.get(name), GraphQLObjectType), name


def test_evictions_name_only_declared_loaders_and_cover_each_cached_one() -> None:
    specs = BY_NAME
    named: set[str] = set()
    for entity, rule in EVICTIONS.items():
        for name in (*rule.by_id, *(n for n, _ in rule.by_field), *rule.whole):
            assert name in specs, (entity, name)
            named.add(name)
        if rule.own is not None:
            own = specs[rule.own]
            assert isinstance(own, BatchSpec) and own.entity == entity and not own.many
    # Every cached loader is evicted by some change, else its data would live a whole TTL
    # after a write; recommendations hold ids only (their products are read by id).
    assert set(CACHED) - named == {declarations.RECOMMENDATIONS.name}


def test_a_listing_is_evicted_whole_by_its_items_type() -> None:
    assert declarations.TOP_PRODUCTS.name in EVICTIONS["Product"].whole
    assert declarations.CATEGORY_PRODUCTS.name in EVICTIONS["Product"].whole
    assert declarations.USER_ORDERS.name in EVICTIONS["Order"].whole
    assert declarations.ALL_CATEGORIES.name in EVICTIONS["Category"].whole
    assert EVICTIONS["Review"].by_field == (("reviews_by_product", "product_id"),
                                            ("reviews_by_author", "author_id"))


def _caching(overrides: dict[str, Any]) -> tuple[EntityCache, Invalidator]:
    hints = CacheHints(SDL, orjson.dumps(overrides).decode() if overrides else "")
    cache = EntityCache(hints, max_entries=1000, staleness=STALENESS)
    spaces = namespaces(cache, declarations.ALL)

    async def read_item(entity_type: str, entity_id: str) -> dict[str, Any] | None:
        return ITEMS[entity_type]

    return cache, Invalidator(cache, spaces, EVICTIONS, read_item)


# Every cached loader switched off in turn (its coordinate's maxAge 0), and all at once.
OFF = [[spec.cache] for spec in declarations.ALL if spec.cache is not None] + [
    [spec.cache for spec in declarations.ALL if spec.cache is not None]]


@pytest.mark.parametrize("off", OFF, ids=lambda o: "+".join(o) if len(o) == 1 else "all")
async def test_every_event_applies_with_any_namespace_switched_off(off: list[str]) -> None:
    cache, invalidator = _caching({coordinate: {"maxAge": 0} for coordinate in off})
    assert not set(invalidator.namespaces) & {
        s.name for s in declarations.ALL if s.cache in off}
    for version, entity_type in enumerate(sorted(ENTITIES), start=1):
        before = cache.generation(response_namespace(entity_type))
        assert await invalidator.on_event(
            {"type": entity_type, "id": "x1", "op": "update", "version": version}) == "applied"
        assert cache.generation(response_namespace(entity_type)) == before + 1


async def test_a_review_event_evicts_its_lists_by_the_reviews_fields() -> None:
    cache, invalidator = _caching({})
    spaces = invalidator.namespaces
    by_product = spaces[declarations.REVIEWS_BY_PRODUCT.name]
    by_author = spaces[declarations.REVIEWS_BY_AUTHOR.name]

    async def fetch(keys: list[Any]) -> list[Any]:
        return [[{"id": "r0"}] for _ in keys]

    held = ((by_product, "p1"), (by_author, "u1"), (by_product, "p2"))
    for ns, key in held:
        await cache.read_through(ns, [key], fetch)
    assert [cache.peek(ns, key, None, time.time()) for ns, key in held] == [[{"id": "r0"}]] * 3
    await invalidator.on_event({"type": "Review", "id": "r1", "op": "create", "version": 1})
    # The review's own lists went; the other product's list is kept.
    assert [cache.peek(ns, key, None, time.time()) is MISSING for ns, key in held] == [
        True, True, False]


async def test_a_mutation_clears_what_its_writes_make_stale_in_the_request() -> None:
    for entity_type, item in itertools.product(sorted(ENTITIES), (True, False)):
        loaders = Loaders(object(), 4)  # type: ignore[arg-type]  # no upstream call is made
        rule = EVICTIONS[entity_type]
        specs = BY_NAME
        for name in rule.by_id:
            spec = specs[name]
            assert isinstance(spec, BatchSpec)
            loaders.prime(spec, "x1", {"id": "x1", "stale": True})
        loaders.written([(entity_type, "x1", ITEMS[entity_type] if item else None)])
        for name in rule.by_id:
            spec = specs[name]
            assert isinstance(spec, BatchSpec)
            held = loaders._loaders[name].settled("x1")
            if item and name == rule.own:
                assert held == ITEMS[entity_type]  # the write, as it now is
            else:
                assert held is not ITEMS[entity_type] and not loaders._loaders[name].holds("x1")
        # The request's lists that hold the item, by its fields or whole: read again.
        lists = [(name, ITEMS[entity_type][field]) for name, field in rule.by_field]
        lists += [(name, ("k", 1)) for name in rule.whole]
        loaders = Loaders(object(), 4)  # type: ignore[arg-type]
        for name, key in lists:
            loaders._loader(specs[name]).prime(key, [{"id": "x1"}])
        loaders.written([(entity_type, "x1", ITEMS[entity_type] if item else None)])
        for name, key in lists:
            assert not loaders._loaders[name].holds(key), (entity_type, name)


def test_writes_clear_the_lists_the_old_hand_written_clears_did() -> None:
    # placeOrder: the user's orders and each line's stock; addReview: the review's lists
    # and its product (as resolvers/mutations.py cleared them before the registry).
    assert EVICTIONS["Order"].whole == (declarations.USER_ORDERS.name,)
    assert EVICTIONS["Order"].own == declarations.ORDER.name
    assert EVICTIONS["Stock"].by_id == (declarations.STOCK.name,)
    assert {n for n, _ in EVICTIONS["Review"].by_field} == {
        declarations.REVIEWS_BY_PRODUCT.name, declarations.REVIEWS_BY_AUTHOR.name}
    assert declarations.PRODUCT.name in EVICTIONS["Product"].by_id
