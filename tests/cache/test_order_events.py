"""An order the warehouse ships (at the orders service, never through the gateway): its Order
event is applied by a caching gateway like any other, and the gateway answers with what the
service now says."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis

from tests.cache.conftest import CacheStack, Query
from tests.harness import http

PLACE = """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
  order { id status } errors { code } } }"""
CANCEL = """mutation($id: ID!) { cancelOrder(id: $id) { order { id } errors { code field } } }"""
ORDER = "query($id: ID!) { order(id: $id) { id status } }"


async def test_a_shipped_orders_event_is_applied(query: Query, cstack: CacheStack,
                                                 redis_url: str) -> None:
    user = "u17"
    _, _, placed = await query(cstack.a, PLACE, {"input": {
        "items": [{"productId": "p4990", "quantity": 1}],
        "idempotencyKey": f"ship-{uuid.uuid4()}"}}, user=user)
    order = placed["data"]["placeOrder"]
    assert order["errors"] == [], order
    order_id = order["order"]["id"]

    status, _, shipped = http("POST", cstack.services.url("orders") + f"/orders/{order_id}/ship")
    assert status == 200 and shipped["status"] == "SHIPPED"
    # Gateway `a` receives the services' events: it records an event's version (in Redis,
    # shared with `b`) once it has applied it. Version 2 is the shipping's.
    client = redis.Redis.from_url(redis_url)
    pattern = f"{cstack.prefix}:*ver:Order:{order_id}"

    def recorded() -> list[bytes | str | None]:  # (bytes: no decode_responses)
        return [client.get(k) for k in client.scan_iter(pattern)]

    started = time.monotonic()
    while recorded() != [b"2"]:
        assert time.monotonic() - started < 10, (pattern, recorded())
        await asyncio.sleep(0.01)

    for gateway in (cstack.a, cstack.b):
        _, _, read = await query(gateway, ORDER, {"id": order_id}, user=user)
        assert read["data"]["order"] == {"id": order_id, "status": "SHIPPED"}
    _, _, refused = await query(cstack.b, CANCEL, {"id": order_id}, user=user)
    assert refused["data"]["cancelOrder"] == {
        "order": None, "errors": [{"code": "ALREADY_SHIPPED", "field": "id"}]}
