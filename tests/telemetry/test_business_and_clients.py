"""The on-call engineer's business counters (orders placed, their value by currency,
cancellations, reviews added), counted on the gateway's successful mutations only; and
request metrics per client (Apollo's apollographql-client-name/-version headers), bounded
against made-up names as operation names are."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.harness import Gateway, Services, http, token
from tests.telemetry.conftest import post
from tests.telemetry.test_metrics import scrape

PLACE = """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
  order { id total { amount currency } } errors { code } } }"""
CANCEL = "mutation($id: ID!) { cancelOrder(id: $id) { order { status } errors { code } } }"
ADD = """mutation($input: AddReviewInput!) { addReview(input: $input) {
  review { id } errors { code } } }"""


async def mutate(session: aiohttp.ClientSession, gateway: Gateway, query: str,
                 variables: dict[str, Any], user: str = "u3") -> dict[str, Any]:
    status, body = await post(session, gateway.url, query, {"X-User-Id": user}, variables)
    assert status == 200 and "errors" not in body, body
    [payload] = body["data"].values()
    return payload


async def test_business_counters_count_the_gateways_successful_writes_once(
    processes: Callable[..., Gateway], tservices: Services,
    http_session: aiohttp.ClientSession
) -> None:
    gateway = processes()
    m = await scrape(http_session, gateway)
    for family in ("gateway_orders_placed", "gateway_orders_cancelled",
                   "gateway_reviews_added"):
        assert m.value(family, "_total") == 0  # from the start
    _, body = await post(http_session, gateway.url,
                         "{ topProducts(first: 10) { id inventory { quantity } } }")
    pid = next(p["id"] for p in body["data"]["topProducts"]
               if p["inventory"] and p["inventory"]["quantity"] >= 5)

    key = f"k-{uuid.uuid4()}"
    order_input = {"input": {"items": [{"productId": pid, "quantity": 2}],
                             "idempotencyKey": key}}
    placed = await mutate(http_session, gateway, PLACE, order_input)
    assert placed["errors"] == []
    total = placed["order"]["total"]
    # The same key again: the service answers the same order (a replay), not counted again.
    again = await mutate(http_session, gateway, PLACE, order_input)
    assert again["order"]["id"] == placed["order"]["id"]
    # Refused by the service (not enough stock): nothing placed, nothing counted.
    refused = await mutate(http_session, gateway, PLACE, {"input": {
        "items": [{"productId": pid, "quantity": 10**6}], "idempotencyKey": f"k-{uuid.uuid4()}"}})
    assert refused["errors"][0]["code"] == "INSUFFICIENT_STOCK"
    # Cancelled once, then again (already cancelled: the service answers it as it is).
    for _ in range(2):
        cancelled = await mutate(http_session, gateway, CANCEL, {"id": placed["order"]["id"]})
        assert cancelled["order"]["status"] == "CANCELLED"
    # A review, once with its key and once more with the same key (answered, not written).
    review_input = {"input": {"productId": pid, "rating": 5, "body": "Counted.",
                              "idempotencyKey": f"r-{uuid.uuid4()}"}}
    first = await mutate(http_session, gateway, ADD, review_input)
    assert (await mutate(http_session, gateway, ADD, review_input))["review"] == first["review"]
    invalid = await mutate(http_session, gateway, ADD, {"input": {
        "productId": pid, "rating": 9, "body": "x"}})
    assert invalid["errors"][0]["code"] == "INVALID_RATING"
    # A write made directly on a service, not through the gateway, is not counted.
    status, _, _ = http("POST", tservices.url("reviews") + "/reviews", {
        "product_id": pid, "author_id": "u3", "rating": 4, "body": "Direct."})
    assert status == 201

    m = await scrape(http_session, gateway)
    assert m.value("gateway_orders_placed", "_total") == 1
    assert m.value("gateway_order_value_cents", "_total",
                   currency=total["currency"]) == total["amount"]
    assert m.value("gateway_orders_cancelled", "_total") == 1
    assert m.value("gateway_reviews_added", "_total") == 1


async def test_requests_are_counted_per_client_name_and_version(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = processes()  # development mode: every caller's name may become a label
    query = "{ topProducts(first: 1) { id } }"
    for version in ("1.2.0", "1.2.0", "1.3.0"):
        await post(http_session, gateway.url, query, {
            "apollographql-client-name": "web-shop", "apollographql-client-version": version})
    await post(http_session, gateway.url, "{ nope }", {"apollographql-client-name": "ios"})
    await post(http_session, gateway.url, query)
    m = await scrape(http_session, gateway)
    assert m.value("gateway_client_requests", "_total", client_name="web-shop",
                   client_version="1.2.0", outcome="ok") == 2
    assert m.value("gateway_client_requests", "_total", client_name="web-shop",
                   client_version="1.3.0", outcome="ok") == 1
    assert m.value("gateway_client_requests", "_total", client_name="ios",
                   client_version="unknown", outcome="refused") == 1
    assert m.value("gateway_client_requests", "_total", client_name="unknown",
                   client_version="unknown", outcome="ok") == 1
    assert m.value("gateway_client_request_duration_seconds", "_count",
                   client_name="web-shop") == 3


async def test_made_up_client_names_do_not_crowd_out_real_ones(
    processes: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """Outside development mode a name takes a label only once a signed-in caller sends it,
    and only CLIENT_NAMES_MAX of them: an anonymous flood of names is all `other`, and a
    real client keeps its label whoever sends it afterwards."""
    gateway = processes(DEV_MODE="false", CLIENT_NAMES_MAX="2")
    query = "{ topProducts(first: 1) { id } }"
    signed_in = {"Authorization": f"Bearer {token('u1')}"}
    for n in range(30):  # anonymous, each its own name
        await post(http_session, gateway.url, query, {"apollographql-client-name": f"junk{n}",
                                                      "apollographql-client-version": f"{n}"})
    await post(http_session, gateway.url, query, {**signed_in,
                                                  "apollographql-client-name": "web-shop",
                                                  "apollographql-client-version": "2.0"})
    for version in ("2.0", "9.9-made-up"):  # anonymous, once the name is known
        await post(http_session, gateway.url, query, {"apollographql-client-name": "web-shop",
                                                      "apollographql-client-version": version})
    for name in ("android", "third"):  # signed in: the second is over the limit of 2
        await post(http_session, gateway.url, query, {**signed_in,
                                                      "apollographql-client-name": name})
    m = await scrape(http_session, gateway)
    assert "junk" not in m.text and "9.9-made-up" not in m.text and "third" not in m.text
    assert m.value("gateway_client_requests", "_total", client_name="other",
                   client_version="other", outcome="ok") == 31
    assert m.value("gateway_client_requests", "_total", client_name="web-shop",
                   client_version="2.0", outcome="ok") == 2
    assert m.value("gateway_client_requests", "_total", client_name="web-shop",
                   client_version="other", outcome="ok") == 1
    assert m.value("gateway_client_requests", "_total", client_name="android",
                   client_version="unknown", outcome="ok") == 1
