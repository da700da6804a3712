"""Change events: one per committed write, signed, versions growing per entity."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from services.seed import Dataset
from tests.harness import Services, local_server
from tests.services.conftest import Call, Received, Receiver

Fresh = Callable[[str], str]


def check(events: list[Received], type_: str, op: str) -> list[int]:
    versions = []
    for received in events:
        assert received.signature_ok()
        assert received.headers["content-type"].startswith("application/json")
        event = received.event
        assert set(event) == {"type", "id", "op", "version", "at"}
        assert event["type"] == type_ and event["at"].endswith("Z")
        versions.append(event["version"])
    assert events[-1].event["op"] == op
    return versions


async def test_product_events(svc: Services, call: Call, receiver: Receiver,
                              fresh: Fresh) -> None:
    pid = fresh("product")
    for price in (100, 200, 300):
        reply = await call("PATCH", svc.url("catalog") + f"/products/{pid}",
                           {"price_cents": price})
        assert reply.status == 200
    events = receiver.wait_for("Product", pid, 3)
    assert sorted(check(events, "Product", "update")) == [2, 3, 4]


async def test_order_and_stock_events(svc: Services, call: Call, receiver: Receiver,
                                      fresh: Fresh, seed_data: Dataset) -> None:
    user, pid = fresh("user"), fresh("product")
    sku = seed_data.products[pid]["sku"]
    created = await call("POST", svc.url("orders") + "/orders",
                         {"user_id": user, "items": [{"product_id": pid, "quantity": 1}]},
                         headers={"Idempotency-Key": fresh("key")})
    order_id = created.body["id"]
    assert check(receiver.wait_for("Order", order_id), "Order", "create") == [1]
    assert check(receiver.wait_for("Stock", sku), "Stock", "update") == [2]
    await call("POST", svc.url("orders") + f"/orders/{order_id}/cancel")
    events = receiver.wait_for("Order", order_id, 2)
    assert sorted(e.event["version"] for e in events) == [1, 2]
    assert {e.event["op"] for e in events} == {"create", "update"}
    assert sorted(check(receiver.wait_for("Stock", sku, 2), "Stock", "update")) == [2, 3]


async def test_ship_event(svc: Services, call: Call, receiver: Receiver, fresh: Fresh) -> None:
    user, pid = fresh("user"), fresh("product")
    created = await call("POST", svc.url("orders") + "/orders",
                         {"user_id": user, "items": [{"product_id": pid, "quantity": 1}]},
                         headers={"Idempotency-Key": fresh("key")})
    order_id = created.body["id"]
    assert (await call("POST", svc.url("orders") + f"/orders/{order_id}/ship")).status == 200
    events = sorted(receiver.wait_for("Order", order_id, 2), key=lambda e: e.event["version"])
    assert check(events, "Order", "update") == [1, 2]
    assert [e.event["op"] for e in events] == ["create", "update"]


async def test_restock_events(svc: Services, call: Call, receiver: Receiver,
                              fresh: Fresh, seed_data: Dataset) -> None:
    sku = seed_data.products[fresh("product")]["sku"]
    for _ in range(2):
        reply = await call("POST", svc.url("inventory") + f"/inventory/{sku}/restock",
                           {"quantity": 1})
        assert reply.status == 200
    events = receiver.wait_for("Stock", sku, 2)
    assert sorted(check(events, "Stock", "update")) == [2, 3]


async def test_review_events(svc: Services, call: Call, receiver: Receiver,
                             fresh: Fresh) -> None:
    pid, author = fresh("product"), fresh("user")
    reply = await call("POST", svc.url("reviews") + "/reviews",
                       {"product_id": pid, "author_id": author, "rating": 5, "body": "Great"})
    assert reply.status == 201
    assert check(receiver.wait_for("Review", reply.body["id"]), "Review", "create") == [1]
    assert check(receiver.wait_for("Product", pid), "Product", "update") == [2]


async def test_no_event_for_failed_writes(svc: Services, call: Call, receiver: Receiver,
                                          fresh: Fresh) -> None:
    pid = fresh("product")
    reply = await call("PATCH", svc.url("catalog") + f"/products/{pid}", {"price_cents": -1})
    assert reply.status == 400
    reply = await call("PATCH", svc.url("catalog") + f"/products/{pid}", {"price_cents": 1})
    assert reply.status == 200
    events = receiver.wait_for("Product", pid)
    assert [e.event["version"] for e in events] == [2]


async def test_failed_deliveries_are_retried() -> None:
    """In process: a receiver that fails twice still gets the event (at least once)."""
    from aiohttp import ClientSession, web

    from services.events import Emitter, sign
    from tests.harness import EVENT_SECRET

    attempts: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        raw = await request.read()
        assert request.headers["X-Signature"] == sign(EVENT_SECRET, raw)
        attempts.append(raw)
        return web.Response(status=500 if len(attempts) <= 2 else 204)

    app = web.Application()
    app.router.add_post("/events", handler)
    async with local_server(app) as url, ClientSession() as session:
        emitter = Emitter(session, [f"{url}/events"], EVENT_SECRET)
        emitter.emit("Product", "p1", "update", 9)
        await asyncio.wait(set(emitter.tasks), timeout=5)
        assert len(attempts) == 3 and len(set(attempts)) == 1
        assert orjson.loads(attempts[0])["version"] == 9
