"""The whole-response cache: an entry lives for its max-age, and a change of a type it read
(a generation bump) makes it a miss."""

from __future__ import annotations

from graphql import build_schema, parse

from app.cache.hints import PRIVATE, PUBLIC, Policy
from app.cache.invalidation import response_namespace
from app.cache.response import ResponseCache
from tests.fakeclock import FakeClock
from tests.unit.helpers import SDL, make_cache, namespace

QUERY = '{ product(id: "p1") { id name } }'
DATA = {"product": {"id": "p1", "name": "Lamp"}}


def setup() -> tuple[FakeClock, ResponseCache]:
    clock = FakeClock()
    entities = make_cache(clock)
    entities.track([response_namespace(t) for t in ("Product", "Stock", "User")])
    return clock, ResponseCache(build_schema(SDL), entities, 100, clock=clock)


def test_a_product_response_is_evicted_by_stock_through_the_registrys_reads() -> None:
    # Product.inStock reads Stock: the registry says so (loaders/entities.py READS).
    from loaders.entities import READS

    clock = FakeClock()
    entities = make_cache(clock)
    entities.track([response_namespace(t) for t in READS])
    responses = ResponseCache(build_schema(SDL), entities, 100, reads=READS, clock=clock)
    key = responses.key(QUERY, None, None)
    assert key is not None
    responses.put(key, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC))
    entities._generations[response_namespace("User")] += 1  # a type it does not read
    assert responses.get(key) is not None
    entities._generations[response_namespace("Stock")] += 1
    assert responses.get(key) is None


def test_an_entry_is_served_until_its_max_age() -> None:
    clock, responses = setup()
    key = responses.key(QUERY, None, None)
    assert key is not None and responses.get(key) is None
    responses.put(key, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC))
    hit = responses.get(key)
    assert hit is not None and hit.data == DATA and hit.stored_at == clock.time()
    clock.advance(59)
    assert responses.get(key) is not None
    clock.advance(1)
    assert responses.get(key) is None


def test_no_response_is_served_while_the_invalidation_channel_is_not_heard() -> None:
    # A replica without its lease reads around its entity cache (tests/unit/test_lease.py):
    # an invalidation may have been missed, and its whole responses are as unproven. (The
    # history checker saw a replica whose channel was killed answer, from this cache, a
    # review count older than the caller's own addReview: tests/history.)
    from app.cache.subscription import Lease

    clock, responses = setup()
    lease = responses.entities.lease = Lease(1.0, clock)
    lease.heard(clock.monotonic())
    key = responses.key(QUERY, None, None)
    assert key is not None
    responses.put(key, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC))
    assert responses.get(key) is not None
    clock.advance(1.5)  # no pong for longer than the lease
    assert responses.get(key) is None


def test_other_variables_are_another_entry() -> None:
    _, responses = setup()
    one = responses.key(QUERY, None, {"id": "p1"})
    two = responses.key(QUERY, None, {"id": "p2"})
    assert one is not None and two is not None and one != two
    responses.put(one, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC))
    assert responses.get(two) is None and responses.get(one) is not None


async def test_a_generation_bump_of_a_type_it_read_makes_it_a_miss() -> None:
    _, responses = setup()
    key = responses.key(QUERY, None, None)
    assert key is not None
    responses.put(key, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC))
    await responses.entities.invalidate(namespaces=[response_namespace("User")])
    assert responses.get(key) is not None  # it read no user
    await responses.entities.invalidate(namespaces=[response_namespace("Product")])
    assert responses.get(key) is None
    # Stored again after the change, it is served again.
    responses.put(key, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC))
    assert responses.get(key) is not None


def test_private_and_uncacheable_policies_are_not_stored() -> None:
    _, responses = setup()
    key = responses.key(QUERY, None, None)
    assert key is not None
    for policy in (Policy(max_age=60, scope=PRIVATE), Policy(max_age=0, scope=PUBLIC),
                   Policy(max_age=None, scope=PUBLIC)):
        responses.put(key, parse(QUERY), DATA, policy)
        assert responses.get(key) is None, policy


def test_a_change_during_execution_makes_the_stored_answer_a_miss() -> None:
    # Issue 16 (b): the generations are those from before the execution, so data read
    # before a change that landed while it ran is not served as current.
    _, responses = setup()
    key = responses.key(QUERY, None, None)
    assert key is not None
    seen = responses.seen()
    responses.entities._generations[response_namespace("Product")] += 1  # lands meanwhile
    responses.put(key, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC), seen)
    assert responses.get(key) is None
    responses.put(key, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC),
                  responses.seen())  # no change while it ran: kept
    assert responses.get(key) is not None


class PerEntity:
    """A response cache wired as the app wires it: the loaders' namespaces, the registry's
    evictions through the invalidator, and the keys each response read."""

    def __init__(self) -> None:
        from app.cache.invalidation import Invalidator
        from loaders.declarations import ALL, PRODUCT, STOCK, TOP_PRODUCTS
        from loaders.entities import ENTITIES, EVICTIONS, READS

        self.clock = FakeClock()
        self.entities = make_cache(self.clock)
        self.entities.track([response_namespace(t) for t in ENTITIES])
        self.namespaces = {spec.name: namespace(self.entities, spec.name, spec.entity, ttl=60)
                           for spec in (PRODUCT, STOCK, TOP_PRODUCTS)}
        self.invalidator = Invalidator(self.entities, self.namespaces, EVICTIONS)
        self.responses = ResponseCache(
            build_schema(SDL), self.entities, 100, reads=READS, namespaces=self.namespaces,
            loader_entities={spec.name: spec.entity for spec in ALL}, clock=self.clock)
        self.version = 0

    def put(self, reads: dict[str, set[object]], seen: object = None) -> str:
        key = self.responses.key(QUERY, None, {"n": len(reads)})
        assert key is not None
        self.responses.put(key, parse(QUERY), DATA, Policy(max_age=60, scope=PUBLIC),
                           seen or self.responses.seen(), reads)  # type: ignore[arg-type]
        return key

    async def event(self, entity_type: str, entity_id: str) -> None:
        self.version += 1
        assert await self.invalidator.on_event(
            {"type": entity_type, "id": entity_id, "op": "update", "version": self.version}
        ) == "applied"


async def test_a_response_depends_on_the_entities_it_read_not_their_whole_types() -> None:
    # Issue 16 (f): an order of one product's stock no longer evicts every product response.
    c = PerEntity()
    key = c.put({"product": {"p1"}, "stock": {"s1"}})
    await c.event("Stock", "s2")
    await c.event("Product", "p2")
    assert c.responses.get(key) is not None  # other entities changed
    await c.event("Stock", "s1")
    assert c.responses.get(key) is None  # its product's stock changed
    key = c.put({"product": {"p1"}, "stock": {"s1"}})
    await c.event("Product", "p1")
    assert c.responses.get(key) is None


async def test_a_response_that_read_a_list_is_evicted_by_any_change_of_its_members() -> None:
    c = PerEntity()
    key = c.put({"top_products": {5}, "product": {"p1"}})
    await c.event("Product", "p9")  # the top list's members are not tracked: evicted whole
    assert c.responses.get(key) is None


async def test_what_was_read_without_the_cache_depends_on_its_whole_type() -> None:
    c = PerEntity()
    key = c.put({"recommendations": {("u1", 5)}})  # no cache hint: no namespace, no keys
    await c.event("User", "u1")
    assert c.responses.get(key) is not None
    await c.event("Product", "p77")
    assert c.responses.get(key) is None


async def test_an_entity_changed_during_execution_makes_the_stored_answer_a_miss() -> None:
    c = PerEntity()
    seen = c.responses.seen()
    await c.event("Product", "p1")  # lands while the response executes
    key = c.put({"product": {"p1"}}, seen)
    assert c.responses.get(key) is None


async def test_an_eviction_from_another_replica_makes_it_a_miss() -> None:
    import orjson

    c = PerEntity()
    key = c.put({"product": {"p1"}, "stock": {"s1"}})
    full = c.entities.full_key(c.namespaces["stock"], "s1", None, 0)
    c.entities._on_message(orjson.dumps({"from": "other", "keys": [full], "generations": {}}))
    assert c.responses.get(key) is None


async def test_past_the_bounded_record_of_evictions_an_entry_is_a_miss() -> None:
    c = PerEntity()
    key = c.put({"product": {"p1"}})
    for i in range(c.entities.l1.max_entries + 1):  # more evictions than the record keeps
        await c.entities.invalidate([(c.namespaces["product"], f"q{i}")])
    assert c.responses.get(key) is None
