"""Nothing lost: a write that a service carried out is never reported as failed, a write
without an idempotency key is never sent twice, and `placeOrder`, sent again with its key,
is placed once. Faults are the services' own (/_faults): a hung service, or a dependency
that makes a service commit after the gateway stopped waiting; /_stats shows what reached
each service, and whether the write happened (a committed review makes the reviews service
PATCH its product's rating in the catalog; an order reserves its stock in inventory)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Gateway, Services, free_port, http
from tests.resilience.conftest import Post, Reply

REVIEW = ('mutation($p: ID!, $body: String!) { addReview(input: {productId: $p, rating: 4, '
          'body: $body}) { review { id } errors { code } } }')
ORDER = ('mutation($p: ID!, $key: String!) { placeOrder(input: {items: [{productId: $p, '
         'quantity: 1}], idempotencyKey: $key}) { order { id } errors { code } } }')
ORDERS = '{ me { orders(first: 50) { edges { node { id items { product { id } } } } } } }'
# The gateway gives up on reviews and orders after 0.3 s (the request's deadline stays 2 s).
SHORT = '{"reviews": {"total": 0.3}, "orders": {"total": 0.3}}'


def rating_updates(services: Services) -> int:
    """PATCHes of a product's rating: one per review the reviews service committed."""
    return int(services.stats("catalog")["requests"].get("PATCH /products/{id}", 0))


def reviews_with(services: Services, product: str, body: str) -> int:
    _, _, listed = http("GET", services.url("reviews") + f"/reviews?product_ids={product}")
    return sum(1 for r in listed["items"] if r["body"] == body)


def reservations(services: Services) -> int:
    return int(services.stats("inventory")["requests"].get("POST /inventory/reservations", 0))


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait for something the services do after the gateway answered (bounded, generously:
    what is asserted is that it happens, not when)."""
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"never happened: {what}")


def unknown(reply: Reply, service: str, retryable: bool) -> dict[str, Any]:
    assert reply.codes() == ["UPSTREAM_OUTCOME_UNKNOWN"], reply.body
    ext: dict[str, Any] = reply.body["errors"][0]["extensions"]
    assert ext["service"] == service and ext["retryable"] is retryable
    assert "unknown" in reply.body["errors"][0]["message"]
    return ext


async def test_a_review_sent_to_a_hung_service_is_unknown_and_was_not_written(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The reviews service takes the request and never answers: the gateway cannot know
    # whether it was written, says so, and does not send it again.
    gateway = start(UPSTREAM_TIMEOUTS=SHORT)
    body = f"hung-{uuid.uuid4()}"
    faults.set_faults("reviews", hang_rate=1.0)
    reply = await post(gateway, REVIEW, {"p": "p4110", "body": body},
                       headers={"X-User-Id": "u5"})
    ext = unknown(reply, "reviews", retryable=False)
    assert ext["cause"] == "UPSTREAM_TIMEOUT" and ext["retries"] == 0
    assert faults.stats("reviews")["requests"]["POST /reviews"] == 1
    faults.clear_faults()
    # It was not: the hung request never reached the handler.
    assert rating_updates(faults) == 0 and reviews_with(faults, "p4110", body) == 0


async def test_a_review_written_after_the_gateway_gave_up_is_not_reported_as_failed(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The reviews service waits 0.8 s for the users service (it checks the author) before
    # it commits; the gateway stops waiting at 0.3 s. The review is written after the
    # gateway answered: the answer said the outcome was unknown, never that it failed,
    # and the review was sent once.
    gateway = start(UPSTREAM_TIMEOUTS=SHORT)
    body = f"late-{uuid.uuid4()}"
    faults.set_faults("users", latency_ms=800)
    reply = await post(gateway, REVIEW, {"p": "p4111", "body": body},
                       headers={"X-User-Id": "u5"})
    ext = unknown(reply, "reviews", retryable=False)
    assert ext["cause"] == "UPSTREAM_TIMEOUT" and ext["retries"] == 0
    assert rating_updates(faults) == 0  # not written yet when the gateway answered
    await eventually(lambda: rating_updates(faults) == 1, "the review's commit")
    assert reviews_with(faults, "p4111", body) == 1
    assert faults.stats("reviews")["requests"]["POST /reviews"] == 1


@pytest.mark.parametrize(("kind", "product"), [("truncated", "p4112"),
                                               ("wrong_types", "p4117")])
async def test_a_review_answered_with_an_unusable_body_is_unknown_not_failed(
    start: Callable[..., Gateway], faults: Services, post: Post, kind: str, product: str
) -> None:
    # The service wrote the review and its answer arrived cut in half, or with every value
    # of the wrong type: written, and the answer cannot be used.
    gateway = start()
    body = f"{kind}-{uuid.uuid4()}"
    faults.set_faults("reviews", bad_body_rate=1.0, bad_body=kind)
    reply = await post(gateway, REVIEW, {"p": product, "body": body},
                       headers={"X-User-Id": "u5"})
    ext = unknown(reply, "reviews", retryable=False)
    assert ext["cause"] == "UPSTREAM_BAD_RESPONSE" and ext["retries"] == 0
    faults.clear_faults()
    assert rating_updates(faults) == 1 and reviews_with(faults, product, body) == 1
    assert faults.stats("reviews")["requests"]["POST /reviews"] == 1


async def test_a_review_that_could_not_be_sent_is_retried_and_fails_plainly(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Nothing listens where the reviews service should be: no connection, so nothing was
    # sent. Retrying cannot write it twice, so the gateway does; and the failure is a plain
    # one, which the client may retry (nothing was written).
    gateway = start(REVIEWS_URL=f"http://127.0.0.1:{free_port()}")
    reply = await post(gateway, REVIEW, {"p": "p4113", "body": "unsent"},
                       headers={"X-User-Id": "u5"})
    assert reply.codes() == ["UPSTREAM_UNAVAILABLE"], reply.body
    ext = reply.body["errors"][0]["extensions"]
    assert ext["service"] == "reviews" and ext["retryable"] is True and ext["retries"] > 0


async def test_an_order_committed_while_the_gateway_retries_is_placed_once(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Orders reserve stock in inventory (0.7 s away here) before they commit; the gateway
    # stops waiting for an attempt at 0.3 s and sends the order again with its key. The
    # orders service holds the repeats until the first commits, then answers its order:
    # the client gets the order, and one reservation was made.
    gateway = start(UPSTREAM_TIMEOUTS=SHORT)
    faults.set_faults("inventory", latency_ms=700)
    reply = await post(gateway, ORDER, {"p": "p4114", "key": f"slow-{uuid.uuid4()}"},
                       headers={"X-User-Id": "u6"})
    assert "errors" not in reply.body, reply.body
    payload = reply.body["data"]["placeOrder"]
    assert payload["errors"] == [] and payload["order"]["id"]
    [call] = [c for c in reply.calls if c["route"] == "/orders"]
    sent = faults.stats("orders")["requests"]["POST /orders"]
    assert call["retries"] == sent - 1 > 0
    assert reservations(faults) == 1
    faults.clear_faults()
    listed = await post(gateway, ORDERS, headers={"X-User-Id": "u6"})
    ids = [e["node"]["id"] for e in listed.body["data"]["me"]["orders"]["edges"]]
    assert ids.count(payload["order"]["id"]) == 1


async def test_an_order_of_unknown_outcome_retried_with_its_key_is_placed_once(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Inventory answers the reservation after 2.5 s: later than the request's 2 s deadline.
    # Every attempt (the first, and the repeats the orders service holds behind it) times
    # out: the order may have been placed, and the answer says so, retryable. The client
    # sends it again with the same key, and gets the one order that was placed.
    gateway = start(UPSTREAM_TIMEOUTS=SHORT)
    key = f"unknown-{uuid.uuid4()}"
    faults.set_faults("inventory", latency_ms=2500)
    reply = await post(gateway, ORDER, {"p": "p4115", "key": key}, headers={"X-User-Id": "u7"})
    ext = unknown(reply, "orders", retryable=True)
    assert ext["retries"] == faults.stats("orders")["requests"]["POST /orders"] - 1 > 0
    faults.clear_faults()
    again = await post(gateway, ORDER, {"p": "p4115", "key": key}, headers={"X-User-Id": "u7"})
    assert "errors" not in again.body, again.body
    assert again.body["data"]["placeOrder"]["errors"] == []
    assert reservations(faults) == 1
    listed = await post(gateway, ORDERS, headers={"X-User-Id": "u7"})
    placed = [e["node"] for e in listed.body["data"]["me"]["orders"]["edges"]
              if any(i["product"]["id"] == "p4115" for i in e["node"]["items"])]
    assert [o["id"] for o in placed] == [again.body["data"]["placeOrder"]["order"]["id"]]


async def test_an_order_sent_to_a_hung_service_is_unknown_and_not_placed(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The orders service never answers: each attempt (the same key every time) times out,
    # until the deadline. Unknown to the gateway, retryable; and nothing was reserved.
    gateway = start(UPSTREAM_TIMEOUTS=SHORT)
    faults.set_faults("orders", hang_rate=1.0)
    reply = await post(gateway, ORDER, {"p": "p4116", "key": f"hung-{uuid.uuid4()}"},
                       headers={"X-User-Id": "u8"})
    ext = unknown(reply, "orders", retryable=True)
    assert ext["retries"] == faults.stats("orders")["requests"]["POST /orders"] - 1 > 0
    assert reservations(faults) == 0


async def test_an_idempotency_key_is_the_callers_own(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The gateway scopes the client's key to the caller before it reaches the orders
    # service: another caller's equal key is another order, not a conflict (which would
    # also tell one caller of another's key), while the caller's own repeat is the same order.
    gateway = start()
    key = f"shared-{uuid.uuid4()}"
    first = await post(gateway, ORDER, {"p": "p4118", "key": key}, headers={"X-User-Id": "u9"})
    other = await post(gateway, ORDER, {"p": "p4118", "key": key}, headers={"X-User-Id": "u10"})
    again = await post(gateway, ORDER, {"p": "p4118", "key": key}, headers={"X-User-Id": "u9"})
    orders = [r.body["data"]["placeOrder"] for r in (first, other, again)]
    assert [o["errors"] for o in orders] == [[], [], []], orders
    ids = [o["order"]["id"] for o in orders]
    assert ids[0] == ids[2] != ids[1]
    assert reservations(faults) == 2
