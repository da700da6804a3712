"""The whole-response cache: an entry lives for its max-age, and a change of a type it read
(a generation bump) makes it a miss."""

from __future__ import annotations

from graphql import build_schema, parse

from app.cache.hints import PRIVATE, PUBLIC, Policy
from app.cache.invalidation import response_namespace
from app.cache.response import ResponseCache
from tests.fakeclock import FakeClock
from tests.unit.helpers import SDL, make_cache

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
