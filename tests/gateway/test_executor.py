"""The breadth-first executor answers exactly as graphql-core's executor does.

Two gateways on the same services, one with each executor, get the same operations, some
under injected failures; their responses must be identical (errors compared by message,
path and code, in any order)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import QUERIES
from tests.harness import Gateway, Services, http, start_gateway

CORPUS: list[tuple[str, dict[str, Any] | None, str | None]] = [
    ((QUERIES / "deep.graphql").read_text(), None, None),
    ((QUERIES / "product_page.graphql").read_text(), {"id": "p17"}, None),
    ((QUERIES / "category_listing.graphql").read_text(), {"id": "c4"}, None),
    ("""query($ids: [ID!]!, $withReviews: Boolean!, $skipPrice: Boolean!) {
          products(ids: $ids) {
            __typename id name ...Bits
            price @skip(if: $skipPrice) { amount }
            reviews(first: 2) @include(if: $withReviews) { id author { id __typename } }
          }
          a: product(id: "p1") { id } b: product(id: "p-none") { id }
          users(ids: ["u1", "", "u2"]) { id username }
        }
        fragment Bits on Product { sku weightGrams category { id parent { id name } } }""",
     {"ids": ["p5", "p-none", "p5", "p6"], "withReviews": True, "skipPrice": True}, None),
    ("""{ topProducts(first: 3) { id reviews(first: 1) { product { id reviews(first: 1) { id } } } }
          categories { id name parent { id } } }""", None, None),
    # Failures: the reviews service answers 503, so non-null review lists null their parents.
    ("""{ product(id: "p9") { id name reviews { id } }
          user(id: "u9") { id reviews { id } } topProducts(first: 2) { id averageRating } }""",
     None, "reviews"),
    # Stock fails: inStock is nullable, so only it is null.
    ('{ products(ids: ["p10", "p11"]) { id inStock inventory { quantity } } }', None,
     "inventory"),
    # A bad argument in one field.
    ('{ category(id: "c1") { id products(first: 500) { edges { cursor } } } }', None, None),
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, services: Services
         ) -> Iterator[tuple[Gateway, Gateway]]:
    tmp = tmp_path_factory.mktemp("executors")
    plan = start_gateway(tmp, services, env={"CACHE_ENABLED": "false"})
    core = start_gateway(tmp, services, env={"CACHE_ENABLED": "false", "PLAN_EXECUTOR": "false"})
    yield plan, core
    plan.stop()
    core.stop()


def normalized(body: dict[str, Any]) -> dict[str, Any]:
    errors = sorted(
        (e["message"], tuple(e.get("path") or ()), (e.get("extensions") or {}).get("code"))
        for e in body.get("errors", [])
    )
    return {"data": body.get("data"), "errors": errors}


async def test_both_executors_answer_alike(
    pair: tuple[Gateway, Gateway], clean_services: Services,
    http_session: aiohttp.ClientSession,
) -> None:
    plan, core = pair
    for document, variables, failing in CORPUS:
        clean_services.clear_faults()
        if failing:
            clean_services.set_faults(failing, error_rate=1.0, error_status=503)
        answers = []
        for gateway in (plan, core):
            async with http_session.post(gateway.url + "/graphql",
                                         json={"query": document, "variables": variables}) as r:
                answers.append(normalized(await r.json()))
        assert answers[0] == answers[1], document
    # And each gateway really ran its own executor.
    assert planned(plan) >= len(CORPUS)
    assert planned(core) == 0


def planned(gateway: Gateway) -> float:
    _, _, metrics = http("GET", gateway.url + "/metrics")
    line = next(line for line in metrics.splitlines()
                if line.startswith("gateway_planned_operations_total"))
    return float(line.split()[-1])


async def test_both_executors_refuse_an_off_contract_value_alike(
    pair: tuple[Gateway, Gateway], clean_services: Services,
    http_session: aiohttp.ClientSession,
) -> None:
    """A value its scalar cannot represent (a price past Int's 32 bits) is an error at its
    path in both, not written through by the plan executor's verbatim leaves."""
    catalog = clean_services.url("catalog")
    _, _, listed = http("GET", f"{catalog}/products?ids=p77")
    [before] = listed["items"]
    assert isinstance(before["price_cents"], int)
    http("PATCH", f"{catalog}/products/p77", {"price_cents": 3_000_000_000})
    try:
        document = '{ product(id: "p77") { id name price { amount currency } } }'
        answers = []
        for gateway in pair:
            async with http_session.post(gateway.url + "/graphql",
                                         json={"query": document}) as r:
                answers.append(normalized(await r.json()))
        assert answers[0] == answers[1]
        assert answers[0]["data"] == {"product": None}  # (price is non-null, so is amount)
        [(message, path, _)] = answers[0]["errors"]
        assert path == ("product", "price", "amount") and "32-bit" in message
    finally:
        http("PATCH", f"{catalog}/products/p77", {"price_cents": before["price_cents"]})
