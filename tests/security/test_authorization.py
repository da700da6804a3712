"""The authorization matrix: anonymous, user A, user B and an admin against each protected
field and mutation. A denied field is null (an empty list or page where the schema says
non-null) with FORBIDDEN, and the rest of the response stands."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from services.seed import Dataset
from tests.harness import Gateway, token
from tests.security.conftest import Answer, call

A, B = "u65", "u71"  # two customers with orders in the seed data
CUSTOMER = "read:catalog read:orders write:orders write:reviews"
VIEWERS: dict[str, str | None] = {
    "anonymous": None,
    "A": token(A, CUSTOMER),
    "B": token(B, CUSTOMER),
    "admin": token("staff-1", "admin"),
    "A without scopes": token(A, ""),
}
PRIVATE = """query($id: ID!) { user(id: $id) { id username email
  orders(first: 2) { edges { node { id } } pageInfo { hasNextPage } }
  recommendations(first: 2) { id } } }"""


def order_of(seed: Dataset, user: str) -> str:
    return next(o["id"] for o in seed.orders.values() if o["user_id"] == user)


def forbidden_paths(answer: Answer) -> set[str]:
    return {".".join(map(str, e["path"])) for e in answer.body.get("errors") or ()
            if e["extensions"]["code"] == "FORBIDDEN"}


@pytest.mark.parametrize(("viewer", "allowed"), [
    ("anonymous", set()),
    ("A", {"email", "orders", "recommendations"}),
    ("B", set()),
    ("admin", {"email", "orders", "recommendations"}),
    ("A without scopes", {"email", "recommendations"}),  # orders need read:orders
])
async def test_a_users_private_fields(
    prod: Gateway, http_session: aiohttp.ClientSession, viewer: str, allowed: set[str]
) -> None:
    answer = await call(http_session, prod, PRIVATE, {"id": A}, token=VIEWERS[viewer])
    assert answer.status == 200
    user = answer.body["data"]["user"]
    assert user["id"] == A and user["username"]  # the rest of the response stands
    denied = {"email", "orders", "recommendations"} - allowed
    assert forbidden_paths(answer) == {f"user.{f}" for f in denied}
    assert {e["extensions"]["code"] for e in answer.body.get("errors") or ()} <= {"FORBIDDEN"}
    assert (user["email"] is not None) == ("email" in allowed)
    if "orders" in allowed:
        assert user["orders"]["edges"]
    else:  # non-null: an empty page, not a null that would take the user with it
        assert user["orders"] == {"edges": [], "pageInfo": {"hasNextPage": False}}
    if "recommendations" in allowed:
        assert user["recommendations"]
    else:
        assert user["recommendations"] == []


@pytest.mark.parametrize(("viewer", "sees", "code"), [
    ("anonymous", False, "UNAUTHENTICATED"),
    ("A", True, None),
    ("B", False, None),  # someone else's order: as if it did not exist
    ("admin", True, None),
    ("A without scopes", False, "FORBIDDEN"),
])
async def test_an_order_by_id(
    prod: Gateway, http_session: aiohttp.ClientSession, seed: Dataset, viewer: str, sees: bool,
    code: str | None
) -> None:
    order = order_of(seed, A)
    answer = await call(http_session, prod, "query($id: ID!) { order(id: $id) { id customer { id } } }",
                        {"id": order}, token=VIEWERS[viewer])
    expected = {"id": order, "customer": {"id": A}} if sees else None
    assert answer.body["data"]["order"] == expected
    assert answer.codes() == ([code] if code else [])


async def test_me_is_the_caller(prod: Gateway, http_session: aiohttp.ClientSession) -> None:
    # (staff-1, the admin, is no customer: the token is good, the user does not exist.)
    for viewer, expected in (("anonymous", None), ("A", {"id": A}), ("B", {"id": B}),
                             ("admin", None)):
        answer = await call(http_session, prod, "{ me { id } }", token=VIEWERS[viewer])
        assert answer.status == 200 and answer.body["data"]["me"] == expected, viewer


PLACE = """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
  order { id customer { id } } errors { code } } }"""
REVIEW = """mutation($input: AddReviewInput!) { addReview(input: $input) {
  review { id author { id } } errors { code } } }"""


def place_input() -> dict[str, Any]:
    return {"input": {"items": [{"productId": "p1", "quantity": 1}],
                      "idempotencyKey": str(uuid.uuid4())}}


def review_input() -> dict[str, Any]:
    return {"input": {"productId": "p2", "rating": 4, "body": "Fine, as far as it goes."}}


@pytest.mark.parametrize(("viewer", "code"), [
    ("anonymous", "UNAUTHENTICATED"),
    ("A without scopes", "FORBIDDEN"),
])
async def test_mutations_need_their_write_scope(
    prod: Gateway, http_session: aiohttp.ClientSession, viewer: str, code: str
) -> None:
    for mutation, variables in ((PLACE, place_input()), (REVIEW, review_input())):
        answer = await call(http_session, prod, mutation, variables, token=VIEWERS[viewer])
        assert answer.body["data"] is None and answer.codes() == [code]
    # A token with only one of the write scopes does only that.
    orders_only = token(A, "write:orders")
    answer = await call(http_session, prod, REVIEW, review_input(), token=orders_only)
    assert answer.codes() == ["FORBIDDEN"]


async def test_mutations_act_as_the_caller(
    prod: Gateway, http_session: aiohttp.ClientSession, seed: Dataset
) -> None:
    for viewer, caller in (("A", A), ("B", B)):
        placed = await call(http_session, prod, PLACE, place_input(), token=VIEWERS[viewer])
        assert placed.body["data"]["placeOrder"]["order"]["customer"] == {"id": caller}
        reviewed = await call(http_session, prod, REVIEW, review_input(), token=VIEWERS[viewer])
        assert reviewed.body["data"]["addReview"]["review"]["author"] == {"id": caller}
    # B cannot cancel A's order: to B it does not exist.
    cancel = """mutation($id: ID!) { cancelOrder(id: $id) { order { id } errors { code } } }"""
    answer = await call(http_session, prod, cancel, {"id": order_of(seed, A)},
                        token=VIEWERS["B"])
    assert answer.body["data"]["cancelOrder"] == {"order": None,
                                                  "errors": [{"code": "NOT_FOUND"}]}
