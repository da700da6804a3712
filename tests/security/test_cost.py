"""Demand control by the IBM GraphQL Cost Directives: the estimated cost refuses an
operation before anything runs, the rate limit charges it and refunds down to the actual
cost, both are in `extensions.cost` for a client that asks (X-Gateway-Cost) and in the
metrics; the served SDL carries the directives."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from tests.harness import Gateway, Services, metric_total
from tests.security.conftest import call

ASK = {"X-Gateway-Cost": "1"}
LIMITED = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_ANONYMOUS": "100",
           "RATE_LIMIT_WINDOW_S": "86400",  # nothing refills during a test
           "MAX_QUERY_COST": "100"}


async def test_the_estimate_refuses_before_anything_runs(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession, sservices: Services
) -> None:
    gateway = start(**LIMITED)
    sservices.reset_stats()
    # 10 products x (1 + 10 reviews x 1) = 110 by the specification (the old measure: 111).
    query = "{ topProducts(first: 10) { id reviews(first: 10) { rating } } }"
    refused = await call(http_session, gateway, query, headers=ASK)
    assert refused.codes() == ["QUERY_TOO_COMPLEX"] and refused.body["data"] is None
    ext = refused.body["errors"][0]["extensions"]
    assert (ext["measure"], ext["limit"], ext["actual"]) == ("cost", 100, 110)
    assert refused.body["extensions"]["cost"] == {"estimated": 110, "actual": None, "max": 100}
    assert not sservices.stats("catalog")["requests"]
    # 9 products: 99, under the limit.
    ok = await call(http_session, gateway, query.replace("10) { id", "9) { id"), headers=ASK)
    assert "errors" not in ok.body and len(ok.body["data"]["topProducts"]) == 9
    assert ok.body["extensions"]["cost"]["estimated"] == 99


async def test_the_rate_limit_charges_the_estimate_and_refunds_to_the_actual_cost(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = start(**LIMITED)
    # Estimated 4 (one product per id); two ids name no product: actual 2.
    query = '{ products(ids: ["p1", "p2", "p-none", "p-gone"]) { id name } }'
    answer = await call(http_session, gateway, query, headers=ASK)
    assert [p and p["id"] for p in answer.body["data"]["products"]] == ["p1", "p2", None, None]
    assert answer.body["extensions"]["cost"] == {"estimated": 4, "actual": 2, "max": 100}
    assert answer.headers["RateLimit-Remaining"] == str(100 - 2)  # charged 4, refunded 2
    assert "x-gateway-cost" in answer.headers["Vary"].lower()
    # Without the header: no extensions.cost, the same charge.
    plain = await call(http_session, gateway, query)
    assert "extensions" not in plain.body or "cost" not in plain.body["extensions"]
    assert plain.headers["RateLimit-Remaining"] == str(100 - 4)
    # A list shorter than its `first`: charged 5 x (1 + 2 reviews), refunded to what came.
    listed = await call(http_session, gateway,
                        "{ topProducts(first: 5) { reviews(first: 2) { id } } }", headers=ASK)
    cost = listed.body["extensions"]["cost"]
    products = listed.body["data"]["topProducts"]
    assert cost["estimated"] == 15
    assert cost["actual"] == len(products) + sum(len(p["reviews"]) for p in products)
    assert listed.headers["RateLimit-Remaining"] == str(100 - 4 - cost["actual"])
    # The metrics: one estimate and one actual per operation that ran.
    assert metric_total(gateway.url, "gateway_operation_cost_count", kind="estimated") == 3
    assert metric_total(gateway.url, "gateway_operation_cost_sum", kind="actual") \
        == 2 + 2 + cost["actual"]


async def test_the_served_sdl_carries_the_cost_directives(
    prod: Gateway, http_session: aiohttp.ClientSession
) -> None:
    answer = await call(http_session, prod, "{ __type(name: \"Query\") { name } }")
    assert answer.body["data"]["__type"]["name"] == "Query"
    from schema import SDL_FILE
    sdl = SDL_FILE.read_text()
    assert "directive @listSize(assumedSize: Int, slicingArguments: [String!], " \
        "sizedFields: [String!], requireOneSlicingArgument: Boolean = true)" in sdl
    assert '@listSize(slicingArguments: ["first"], sizedFields: ["edges"])' in sdl
    assert '@listSize(slicingArguments: ["ids"])' in sdl
    assert "inStock: Boolean @cacheControl(maxAge: 5) @cost(weight: 1)" in sdl
