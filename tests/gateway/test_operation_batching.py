"""Operation batching: a JSON array of operations in one POST (Apollo Client's BatchHttpLink),
answered with an array in request order. Each operation has its own errors, cost, rate-limit
charge and cache policy; the loaders are shared, so the batch's lookups batch together; a
mutation runs alone, in request order. (Not DataLoader batching: that is test_batching.py.)"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.seed import Dataset
from tests.gateway.test_mutations import live_quantity, stocked_product
from tests.harness import Gateway, Services, gateways, http

GRAPHQL_RESPONSE = "application/graphql-response+json"
PRODUCT = "query Product($id: ID!) { product(id: $id) { id name } }"
# 1 + 10 x (1 + 1): `ids` multiplies the cost of what it selects.
PRODUCTS = "query Products($ids: [ID!]!) { products(ids: $ids) { id name } }"
PRODUCTS_COST = 21  # for 21 ids: a product each (the IBM cost directives)


def ids(n: int, start: int = 1) -> list[str]:
    return [f"p{i}" for i in range(start, start + n)]


class Answer:
    def __init__(self, status: int, headers: Any, body: Any) -> None:
        self.status, self.headers, self.body = status, headers, body

    def codes(self, i: int) -> list[str]:
        return [e["extensions"]["code"] for e in self.body[i].get("errors") or ()]


Post = Callable[..., Any]


@pytest.fixture
def post(http_session: aiohttp.ClientSession) -> Post:
    async def call(gateway: Gateway, body: Any, headers: dict[str, str] | None = None,
                   raw: bytes | None = None) -> Answer:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with http_session.post(gateway.url + "/graphql", headers=headers or {},
                                     **kwargs) as resp:
            return Answer(resp.status, resp.headers, await resp.json(content_type=None))

    return call


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory,
          services: Services) -> Iterator[Callable[..., Gateway]]:
    tmp: Path = tmp_path_factory.mktemp("operation-batching")
    with gateways(tmp, services, CACHE_ENABLED="false") as start_:
        yield start_


async def test_results_in_request_order_and_one_upstream_call_per_level(
    post: Post, gateway: Gateway, clean_services: Services
) -> None:
    # Five product queries for different ids: one catalog call for all five; their reviews
    # (the next level) one reviews call.
    query = ("query Product($id: ID!) { product(id: $id) { id name "
             "reviews(first: 2) { id } } }")
    wanted = ["p7", "p3", "p11", "p5", "p2"]
    answer = await post(gateway, [{"query": query, "variables": {"id": pid},
                                   "operationName": "Product"} for pid in wanted])
    assert answer.status == 200
    assert [r["data"]["product"]["id"] for r in answer.body] == wanted
    assert all("errors" not in r for r in answer.body)
    catalog = clean_services.stats("catalog")
    assert catalog["requests"] == {"GET /products": 1}
    assert catalog["items"] == {"GET /products": 5}
    assert clean_services.stats("reviews")["requests"] == {"GET /reviews": 1}


async def test_operations_that_await_redis_first_still_share_their_batches(
    post: Post, start: Callable[..., Gateway], services: Services, redis_url: str
) -> None:
    """Each operation spends its rate limit in Redis before it runs, each round trip taking
    its own time: they still start together (the gate), so their lookups still leave in one
    call per service per level."""
    gateway = start(REDIS_URL=redis_url, REDIS_PREFIX=f"batch-{uuid.uuid4().hex[:8]}",
                    RATE_LIMIT_ENABLED="true", CACHE_ENABLED="true")
    query = ("query Product($id: ID!) { product(id: $id) { id name "
             "reviews(first: 1) { id } } }")
    for trial in range(5):
        services.reset_stats()
        wanted = [f"p{300 + 10 * trial + i}" for i in range(5)]
        answer = await post(gateway, [{"query": query, "variables": {"id": pid}}
                                      for pid in wanted])
        assert [r["data"]["product"]["id"] for r in answer.body] == wanted
        assert services.stats("catalog")["requests"] == {"GET /products": 1}, trial
        assert services.stats("reviews")["requests"] == {"GET /reviews": 1}, trial


async def test_what_batch_http_link_sends(post: Post, gateway: Gateway,
                                          clean_services: Services) -> None:
    """The body and headers of Apollo Client 4's BatchHttpLink: an array of
    {operationName, variables, extensions, query} (the cache adds __typename), posted with
    its Accept."""
    extensions = {"clientLibrary": {"name": "@apollo/client", "version": "4.3.8"}}
    body = [
        {"operationName": "Product", "variables": {"id": "p42"},
         "extensions": extensions,
         "query": "query Product($id: ID!) {\n  product(id: $id) {\n    id\n    name\n"
                  "    price {\n      amount\n      currency\n      __typename\n    }\n"
                  "    __typename\n  }\n}"},
        {"operationName": "Categories", "variables": {}, "extensions": extensions,
         "query": "query Categories {\n  categories {\n    ...CategoryFields\n"
                  "    __typename\n  }\n}\n\nfragment CategoryFields on Category {\n"
                  "  id\n  name\n  __typename\n}"},
        {"operationName": "Product", "variables": {"id": "p43"},
         "extensions": extensions,
         "query": "query Product($id: ID!) {\n  product(id: $id) {\n    id\n    name\n"
                  "    price {\n      amount\n      currency\n      __typename\n    }\n"
                  "    __typename\n  }\n}"},
    ]
    headers = {"accept": "application/graphql-response+json,application/json;q=0.9",
               "content-type": "application/json"}
    answer = await post(gateway, body, headers=headers)
    assert answer.status == 200
    assert answer.headers["Content-Type"] == GRAPHQL_RESPONSE
    assert isinstance(answer.body, list) and len(answer.body) == 3
    assert answer.body[0]["data"]["product"]["id"] == "p42"
    assert answer.body[0]["data"]["product"]["__typename"] == "Product"
    assert answer.body[1]["data"]["categories"][0]["__typename"] == "Category"
    assert answer.body[2]["data"]["product"]["id"] == "p43"
    # p42 and p43 in one catalog call; the categories in their own.
    assert clean_services.stats("catalog")["requests"] == {"GET /products": 1,
                                                           "GET /categories": 1}


async def test_mutations_run_alone_in_request_order(
    post: Post, gateway: Gateway, services: Services, dataset: Dataset
) -> None:
    pid = stocked_product(dataset, services)
    sku = dataset.products[pid]["sku"]
    user = {"X-User-Id": "u12"}
    # Order ids are sequential: the batch's order is the next one.
    place = ("mutation Place($input: PlaceOrderInput!) { placeOrder(input: $input) "
             "{ order { id status } errors { code } } }")
    first = await post(gateway, {"query": place, "variables": {"input": {
        "items": [{"productId": pid, "quantity": 1}], "idempotencyKey": str(uuid.uuid4())}}},
        headers=user)
    number = int(first.body["data"]["placeOrder"]["order"]["id"][1:])
    next_id = f"o{number + 1}"
    before = live_quantity(services, sku)

    stock = "query Stock($id: ID!) { product(id: $id) { inventory { quantity } } }"
    cancel = ("mutation Cancel($id: ID!) { cancelOrder(id: $id) { order { id status } "
              "errors { code } } }")
    order = "query Order($id: ID!) { order(id: $id) { id status } }"
    batch = [
        {"query": stock, "variables": {"id": pid}},
        {"query": place, "variables": {"input": {"items": [{"productId": pid, "quantity": 2}],
                                                 "idempotencyKey": str(uuid.uuid4())}}},
        {"query": stock, "variables": {"id": pid}},
        {"query": cancel, "variables": {"id": next_id}},  # the order placed just before
        {"query": order, "variables": {"id": next_id}},
        {"query": stock, "variables": {"id": pid}},
    ]
    answer = await post(gateway, batch, headers=user)
    assert answer.status == 200
    data = [r.get("data") for r in answer.body]
    assert all("errors" not in r for r in answer.body), answer.body
    assert data[0]["product"]["inventory"]["quantity"] == before
    assert data[1]["placeOrder"] == {"order": {"id": next_id, "status": "PLACED"},
                                     "errors": []}
    assert data[2]["product"]["inventory"]["quantity"] == before - 2  # after the placing
    assert data[3]["cancelOrder"] == {"order": {"id": next_id, "status": "CANCELLED"},
                                      "errors": []}
    assert data[4]["order"] == {"id": next_id, "status": "CANCELLED"}
    assert data[5]["product"]["inventory"]["quantity"] == before
    assert answer.headers["Cache-Control"] == "no-store"  # it holds mutations


async def test_a_bad_operation_gets_its_own_error(post: Post, gateway: Gateway,
                                                  clean_services: Services) -> None:
    good = {"query": PRODUCT, "variables": {"id": "p9"}}
    batch = [
        good,
        {"query": "{ product(id: "},  # does not parse
        {"query": "{ nope }"},  # does not validate
        {"query": PRODUCT, "variables": {"id": 5.5}},  # a variable that does not coerce
        {"query": PRODUCT, "variables": 5},  # not an object
        {"variables": {}},  # no query
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab" * 32}}},
        {"query": "query A { me { id } } query B { categories { id } }"},  # which one?
        {"query": "query Big($ids: [ID!]!) { products(ids: $ids) { id reviews(first: 100) "
                  "{ author { reviews(first: 100) { id } } } } }",
         "variables": {"ids": ids(20)}},  # over the cost limit
        good,
    ]
    for accept, missing_data in ((None, False), (GRAPHQL_RESPONSE, True)):
        answer = await post(gateway, batch, headers={"Accept": accept} if accept else {})
        assert answer.status == 200
        assert answer.headers["Content-Type"] == (accept or "application/json")
        assert [answer.codes(i) for i in range(len(batch))] == [
            [], ["GRAPHQL_PARSE_FAILED"], ["GRAPHQL_VALIDATION_FAILED"], ["BAD_USER_INPUT"],
            ["BAD_REQUEST"], ["BAD_REQUEST"], ["PERSISTED_QUERY_NOT_FOUND"], ["BAD_REQUEST"],
            ["QUERY_TOO_COMPLEX"], []]
        assert answer.body[0]["data"] == answer.body[-1]["data"] == {
            "product": {"id": "p9", "name": answer.body[0]["data"]["product"]["name"]}}
        for result in answer.body[1:-1]:
            # Never ran: no data in the newer media type, null data in plain JSON.
            assert ("data" not in result) if missing_data else (result["data"] is None)
        assert "Traceback" not in str(answer.body)
        assert answer.headers["Cache-Control"] == "no-store"  # some failed
    # Only the good operations went upstream (one call for both p9 lookups, per batch).
    assert clean_services.stats("catalog")["items"] == {"GET /products": 2}


async def test_malformed_batches_are_refused_and_nothing_runs(
    post: Post, gateway: Gateway, start: Callable[..., Gateway], clean_services: Services
) -> None:
    one = {"query": PRODUCT, "variables": {"id": "p1"}}
    answer = await post(gateway, [one] * 11)
    assert answer.status == 400
    assert answer.body == {"errors": [{
        "message": "The batch holds 11 operations, over the limit of 10",
        "extensions": {"code": "BATCH_TOO_LARGE", "limit": 10, "actual": 11,
                       "traceId": answer.body["errors"][0]["extensions"]["traceId"]}}]}
    for body, code in (([], "BAD_REQUEST"), ([one, 5], "BAD_REQUEST"),
                       ([one, [one]], "BAD_REQUEST")):
        answer = await post(gateway, body)
        assert answer.status == 400, body
        assert [e["extensions"]["code"] for e in answer.body["errors"]] == [code]
    # The newer media type: the same refusals, in it.
    answer = await post(gateway, [one] * 11, headers={"Accept": GRAPHQL_RESPONSE})
    assert answer.status == 400 and answer.headers["Content-Type"] == GRAPHQL_RESPONSE
    assert clean_services.all_stats()["catalog"]["requests"] == {}
    assert len((await post(gateway, [one] * 10)).body) == 10

    small = start(BATCH_MAX_OPERATIONS="2")
    answer = await post(small, [one] * 3)
    assert answer.status == 400
    assert answer.body["errors"][0]["extensions"]["code"] == "BATCH_TOO_LARGE"
    assert answer.body["errors"][0]["extensions"]["limit"] == 2
    off = start(BATCH_MAX_OPERATIONS="0")
    answer = await post(off, [one])
    assert answer.status == 400
    assert answer.body["errors"][0]["extensions"]["code"] == "BATCHING_DISABLED"
    assert (await post(off, one)).body["data"]["product"]["id"] == "p1"


async def test_get_is_never_a_batch(gateway: Gateway,
                                    http_session: aiohttp.ClientSession) -> None:
    params = {"query": '[{"query": "{ categories { id } }"}]'}
    async with http_session.get(gateway.url + "/graphql", params=params,
                                headers={"Accept": "application/json"}) as resp:
        body = await resp.json(content_type=None)
    assert isinstance(body, dict)
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


async def test_each_operation_pays_its_own_rate_limit(
    post: Post, start: Callable[..., Gateway]
) -> None:
    # 50 per (very long) window, so that nothing refills during the test.
    limited = start(RATE_LIMIT_ENABLED="true", RATE_LIMIT_ANONYMOUS="50",
                    MAX_QUERY_COST="50", RATE_LIMIT_WINDOW_S="86400")
    op = {"query": PRODUCTS, "variables": {"ids": ids(PRODUCTS_COST)}}
    answer = await post(limited, [op, {"query": "{ nope }"}, op, op])
    # 21 + 21 fit, the third 21 does not (8 left); the invalid one costs the minimum, 1.
    assert answer.status == 200
    codes = [answer.codes(i) for i in range(4)]
    assert codes[1] == ["GRAPHQL_VALIDATION_FAILED"]
    assert sorted(codes[i] == ["RATE_LIMITED"] for i in (0, 2, 3)) == [False, False, True]
    refused = next(answer.body[i] for i in (0, 2, 3) if codes[i] == ["RATE_LIMITED"])
    assert refused["errors"][0]["extensions"]["cost"] == PRODUCTS_COST
    assert refused["errors"][0]["extensions"]["retryAfter"] > 0
    assert answer.headers["RateLimit-Limit"] == "50"
    assert answer.headers["RateLimit-Remaining"] == str(50 - 2 * PRODUCTS_COST - 1)
    # The bucket is the caller's, whatever the requests: one more such query is refused.
    alone = await post(limited, op)
    assert alone.status == 429
    assert alone.body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


async def test_each_operation_has_its_own_cost_limit(
    post: Post, start: Callable[..., Gateway]
) -> None:
    capped = start(MAX_QUERY_COST="50")
    op = {"query": PRODUCTS, "variables": {"ids": ids(PRODUCTS_COST)}}
    over = {"query": PRODUCTS, "variables": {"ids": ids(61)}}  # 61
    # Five operations of 21 (105 together) each fit; the one of 61 does not.
    answer = await post(capped, [op, op, over, op, op, op])
    assert answer.status == 200
    assert [answer.codes(i) for i in range(6)] == [[], [], ["QUERY_TOO_COMPLEX"], [], [], []]
    error = answer.body[2]["errors"][0]["extensions"]
    assert (error["measure"], error["limit"], error["actual"]) == ("cost", 50, 61)
    assert all(len(answer.body[i]["data"]["products"]) == PRODUCTS_COST
               for i in (0, 1, 3, 4, 5))


async def test_cache_control_of_a_batch_is_the_most_restrictive(
    post: Post, gateway: Gateway
) -> None:
    product = {"query": PRODUCT, "variables": {"id": "p1"}}  # max-age 300, public
    categories = {"query": "{ categories { id name } }"}  # 3600, public
    top = {"query": "{ topProducts(first: 2) { id } }"}  # 60, public
    me = {"query": "{ me { id } }"}  # 60, private
    stock = {"query": "{ product(id: \"p1\") { inventory { quantity } } }"}  # 5
    cases = [
        ([categories], "max-age=3600, public"),
        ([product, categories], "max-age=300, public"),
        ([categories, top, product], "max-age=60, public"),
        ([product, me], "max-age=60, private"),
        ([me, stock], "max-age=5, private"),
        ([product, {"query": "{ nope }"}], "no-store"),
    ]
    for batch, expected in cases:
        answer = await post(gateway, batch, headers={"X-User-Id": "u3"})
        assert answer.status == 200
        assert answer.headers["Cache-Control"] == expected, batch
        assert answer.headers["Vary"] == "Accept"


async def test_persisted_queries_per_operation(post: Post, gateway: Gateway) -> None:
    query = "query Persisted($id: ID!) { product(id: $id) { id } } # " + uuid.uuid4().hex
    digest = hashlib.sha256(query.encode()).hexdigest()
    by_hash = {"variables": {"id": "p8"},
               "extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}
    plain = {"query": PRODUCT, "variables": {"id": "p6"}}
    # Unknown: that operation is told so, the other runs.
    answer = await post(gateway, [by_hash, plain])
    assert answer.codes(0) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert answer.body[1]["data"]["product"]["id"] == "p6"
    # The client sends the document with its hash: it runs and is registered...
    answer = await post(gateway, [plain, {**by_hash, "query": query}])
    assert answer.body[1]["data"] == {"product": {"id": "p8"}}
    # ... and from then on the hash alone does.
    answer = await post(gateway, [by_hash, {**by_hash, "variables": {"id": "p10"}}])
    assert [r["data"]["product"]["id"] for r in answer.body] == ["p8", "p10"]


async def test_a_request_without_batching_is_unchanged(post: Post, gateway: Gateway) -> None:
    answer = await post(gateway, {"query": PRODUCT, "variables": {"id": "p1"}})
    assert isinstance(answer.body, dict) and answer.body["data"]["product"]["id"] == "p1"
    assert answer.headers["Cache-Control"] == "max-age=300, public"
    _, _, single = http("POST", gateway.url + "/graphql", {"query": "{ nope }"},
                        headers={"Accept": GRAPHQL_RESPONSE})
    assert single["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
