"""With introspection off, the schema does not leak through validation errors either:
graphql-core's "Did you mean ...?" hints name the schema's types, fields and arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import Gateway, token
from tests.security.conftest import call

# A near miss of a name, and the name graphql-core would suggest for it.
NEAR_MISSES = [
    ("{ me { emial } }", None, "email"),
    ('{ ordr(id: "o1") { id } }', None, "order"),
    ("mutation { placeOrdr { order { id } } }", None, "placeOrder"),
    ("{ topProducts(frist: 2) { id } }", None, "first"),
    ("{ me { ... on Usr { id } } }", None, "User"),
    ('mutation { addReview(input: {productId: "p1", rating: 5, body: "x", idempotencyKy: "k"})'
     " { review { id } } }", None, "idempotencyKey"),
    # In the variables: a coercion error, BAD_USER_INPUT.
    ("mutation($i: AddReviewInput!) { addReview(input: $i) { review { id } } }",
     {"i": {"productId": "p1", "rating": 5, "body": "x", "idempotencyKy": "k"}},
     "idempotencyKey"),
]


@pytest.fixture(scope="module")
def closed(start: Callable[..., Gateway]) -> Gateway:
    return start(INTROSPECTION="false")


@pytest.fixture(scope="module")
def open_(start: Callable[..., Gateway]) -> Gateway:
    return start(INTROSPECTION="true")


async def messages(gateway: Gateway, query: str, variables: dict[str, Any] | None) -> str:
    async with aiohttp.ClientSession() as session:
        answer = await call(session, gateway, query, variables,
                            token=token("u1", "write:reviews write:orders read:orders"))
    assert answer.body.get("data") is None and answer.codes(), answer.body
    assert set(answer.codes()) <= {"GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"}
    return " ".join(e["message"] for e in answer.body["errors"])


@pytest.mark.parametrize(("query", "variables", "name"), NEAR_MISSES)
async def test_no_suggestion_when_introspection_is_off(
        closed: Gateway, query: str, variables: dict[str, Any] | None, name: str) -> None:
    text = await messages(closed, query, variables)
    assert "Did you mean" not in text and f"'{name}'" not in text, text


@pytest.mark.parametrize(("query", "variables", "name"), NEAR_MISSES)
async def test_suggestions_stay_where_the_schema_is_public(
        open_: Gateway, query: str, variables: dict[str, Any] | None, name: str) -> None:
    text = await messages(open_, query, variables)
    assert "Did you mean" in text and f"'{name}'" in text, text
