"""Strings over a sane length are the caller's error, refused before any upstream call: a
100 KB id used to reach the catalog, whose 400 then read as UPSTREAM_BAD_RESPONSE."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.harness import Gateway, Services, token
from tests.security.conftest import call

LONG_ID = "p" * 100_000
WRITER = token("u3", "write:reviews write:orders read:orders")

REFUSED: list[tuple[str, dict[str, Any]]] = [
    (f'{{ product(id: "{LONG_ID}") {{ id name }} }}', {}),
    ("query($id: ID!) { product(id: $id) { id name } }", {"id": LONG_ID}),
    ("query($ids: [ID!]!) { products(ids: $ids) { id } }", {"ids": ["p1", "p" * 257]}),
    ("mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { order { id } } }",
     {"input": {"items": [{"productId": LONG_ID, "quantity": 1}], "idempotencyKey": "k"}}),
    ("mutation($input: AddReviewInput!) { addReview(input: $input) { review { id } } }",
     {"input": {"productId": "p1", "rating": 5, "body": "x" * 10_001}}),
]


@pytest.mark.parametrize(("query", "variables"), REFUSED)
async def test_an_overlong_string_is_bad_user_input_and_reaches_no_service(
        prod: Gateway, sservices: Services, query: str, variables: dict[str, Any]) -> None:
    sservices.reset_stats()
    async with aiohttp.ClientSession() as session:
        answer = await call(session, prod, query, variables, token=WRITER,
                            headers={"Accept": "application/graphql-response+json"})
    assert answer.status == 400 and answer.body.get("data") is None, answer.body
    assert answer.codes() == ["BAD_USER_INPUT"]
    error = answer.body["errors"][0]
    assert error["extensions"]["actual"] > error["extensions"]["limit"]
    assert all(not stats["requests"] for stats in sservices.all_stats().values())


async def test_strings_at_the_limit_go_through(prod: Gateway, sservices: Services) -> None:
    sservices.reset_stats()
    async with aiohttp.ClientSession() as session:
        answer = await call(session, prod, "query($id: ID!) { product(id: $id) { id } }",
                            {"id": "p" * 256})
    assert answer.body == {"data": {"product": None}}
    assert sservices.stats("catalog")["requests"] == {"GET /products": 1}
