"""Writes: product PATCH, reservations, orders (idempotency, stock, cancel) and reviews."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from services.seed import Dataset
from tests.harness import Services
from tests.services.conftest import Call
from tests.services.test_reads import assert_error

Fresh = Callable[[str], str]


async def stock_of(svc: Services, call: Call, skus: list[str]) -> dict[str, int]:
    reply = await call("POST", svc.url("inventory") + "/inventory/query", {"skus": skus})
    return {s["sku"]: s["quantity"] for s in reply.body["items"]}


async def product(svc: Services, call: Call, pid: str) -> dict[str, Any]:
    reply = await call("GET", svc.url("catalog") + f"/products?ids={pid}")
    return dict(reply.body["items"][0])


async def test_patch_product(svc: Services, call: Call, fresh: Fresh) -> None:
    pid = fresh("product")
    before = await product(svc, call, pid)
    url = svc.url("catalog") + f"/products/{pid}"
    reply = await call("PATCH", url, {"name": "Renamed", "price_cents": 1234, "rating_avg": 4.567,
                                      "rating_count": 3, "description": ""})
    assert reply.status == 200
    assert reply.body["name"] == "Renamed" and reply.body["price_cents"] == 1234
    assert reply.body["rating_avg"] == 4.57 and reply.body["updated_at"] > before["updated_at"]
    assert await product(svc, call, pid) == reply.body
    for bad in ({"price_cents": "12"}, {"price_cents": 1.5}, {"rating_avg": 6},
                {"rating_count": True}, {"name": ""}, {"sku": "X"}, {}, {"colour": "red"}):
        assert_error(await call("PATCH", url, bad), 400, "BAD_INPUT")
    assert_error(await call("PATCH", url, [1]), 400, "BAD_INPUT")
    assert_error(await call("PATCH", url, raw=b"nope"), 400, "BAD_INPUT")
    assert_error(await call("PATCH", svc.url("catalog") + "/products/p99999999", {"name": "x"}),
                 404, "NOT_FOUND")


async def test_top_products_follow_rating_change(svc: Services, call: Call,
                                                 seed_data: Dataset) -> None:
    # Ties at 5.0 go by id, so take a low id with few perfect products before it.
    fives = [int(p[1:]) for p, d in seed_data.products.items() if d["rating_avg"] == 5.0]
    pid = f"p{sorted(fives)[40] + 1}"
    reply = await call("PATCH", svc.url("catalog") + f"/products/{pid}", {"rating_avg": 5})
    assert reply.status == 200
    top = await call("GET", svc.url("catalog") + "/products?sort=top&first=100")
    assert pid in [p["id"] for p in top.body["items"]]
    await call("PATCH", svc.url("catalog") + f"/products/{pid}", {"rating_avg": 0.5})
    top = await call("GET", svc.url("catalog") + "/products?sort=top&first=100")
    assert pid not in [p["id"] for p in top.body["items"]]


async def order_ids(svc: Services, call: Call, user: str) -> list[str]:
    reply = await call("GET", svc.url("orders") + f"/orders?user_id={user}&first=100")
    return [o["id"] for o in reply.body["items"]]


def seeded_order_ids(seed_data: Dataset, user: str) -> list[str]:
    mine = [o for o in seed_data.orders.values() if o["user_id"] == user]
    mine.sort(key=lambda o: (o["created_at"], int(o["id"][1:])), reverse=True)
    return [o["id"] for o in mine]


async def place(svc: Services, call: Call, key: str | None, body: Any) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return await call("POST", svc.url("orders") + "/orders", body, headers=headers)


async def test_place_order_and_replay(svc: Services, call: Call, fresh: Fresh,
                                      seed_data: Dataset) -> None:
    user, p1, p2 = fresh("user"), fresh("product"), fresh("product")
    skus = [seed_data.products[p]["sku"] for p in (p1, p2)]
    before = await stock_of(svc, call, skus)
    body = {"user_id": user, "items": [{"product_id": p1, "quantity": 2},
                                       {"product_id": p2, "quantity": 1}]}
    key = fresh("key")
    created = await place(svc, call, key, body)
    assert created.status == 201, created.body
    order = created.body
    assert order["status"] == "PLACED" and order["user_id"] == user
    assert order["currency"] == "USD" and order["created_at"].endswith("Z")
    prices = {p: (await product(svc, call, p))["price_cents"] for p in (p1, p2)}
    assert order["items"] == [
        {"product_id": p1, "sku": skus[0], "quantity": 2, "unit_price_cents": prices[p1]},
        {"product_id": p2, "sku": skus[1], "quantity": 1, "unit_price_cents": prices[p2]}]
    assert order["total_cents"] == 2 * prices[p1] + prices[p2]
    after = await stock_of(svc, call, skus)
    assert after == {skus[0]: before[skus[0]] - 2, skus[1]: before[skus[1]] - 1}

    again = await place(svc, call, key, body)
    assert again.status == 200 and again.body == order
    assert await stock_of(svc, call, skus) == after  # no second reservation
    other = {**body, "items": [{"product_id": p1, "quantity": 3}]}
    assert_error(await place(svc, call, key, other), 409, "IDEMPOTENCY_CONFLICT")

    listed = await call("GET", svc.url("orders") + f"/orders?user_id={user}&first=1")
    assert listed.body["items"][0] == order  # the newest order comes first
    fetched = await call("GET", svc.url("orders") + f"/orders?ids={order['id']}")
    assert fetched.body["items"] == [order]


async def test_concurrent_same_key_makes_one_order(svc: Services, call: Call, fresh: Fresh,
                                                   seed_data: Dataset) -> None:
    user, pid = fresh("user"), fresh("product")
    sku = seed_data.products[pid]["sku"]
    before = await stock_of(svc, call, [sku])
    body = {"user_id": user, "items": [{"product_id": pid, "quantity": 1}]}
    key = fresh("key")
    replies = await asyncio.gather(*(place(svc, call, key, body) for _ in range(8)))
    assert sorted(r.status for r in replies) == [200] * 7 + [201]
    assert len({r.body["id"] for r in replies}) == 1
    assert await stock_of(svc, call, [sku]) == {sku: before[sku] - 1}
    assert await order_ids(svc, call, user) == [replies[0].body["id"],
                                                *seeded_order_ids(seed_data, user)]


async def test_insufficient_stock(svc: Services, call: Call, fresh: Fresh,
                                  seed_data: Dataset) -> None:
    user, p1, p2 = fresh("user"), fresh("product"), fresh("product")
    skus = [seed_data.products[p]["sku"] for p in (p1, p2)]
    before = await stock_of(svc, call, skus)
    body = {"user_id": user, "items": [{"product_id": p1, "quantity": 1},
                                       {"product_id": p2, "quantity": before[skus[1]] + 1}]}
    assert_error(await place(svc, call, fresh("key"), body), 409, "INSUFFICIENT_STOCK")
    assert await stock_of(svc, call, skus) == before
    assert await order_ids(svc, call, user) == seeded_order_ids(seed_data, user)


async def test_place_order_validation(svc: Services, call: Call, fresh: Fresh,
                                      seed_data: Dataset) -> None:
    user, pid = fresh("user"), fresh("product")
    good = {"user_id": user, "items": [{"product_id": pid, "quantity": 1}]}
    assert_error(await place(svc, call, None, good), 400, "BAD_INPUT")
    bad_bodies: list[Any] = [
        {**good, "user_id": "u999999"},
        {**good, "items": [{"product_id": "p99999999", "quantity": 1}]},
        {**good, "items": []},
        {**good, "items": [{"product_id": pid, "quantity": 0}]},
        {**good, "items": [{"product_id": pid, "quantity": 1.0}]},
        {**good, "items": [{"product_id": pid}]},
        {**good, "items": [{"product_id": f"{pid},p1", "quantity": 1}]},
        {"items": good["items"]},
        [good],
    ]
    for body in bad_bodies:
        assert_error(await place(svc, call, fresh("key"), body), 400, "BAD_INPUT")
    reply = await place(svc, call, fresh("key"), {**good, "user_id": "u999999"})
    assert "u999999" in reply.body["error"]["message"]
    reply = await call("POST", svc.url("orders") + "/orders", raw=b"{",
                       headers={"Idempotency-Key": fresh("key")})
    assert_error(reply, 400, "BAD_INPUT")
    assert await order_ids(svc, call, user) == seeded_order_ids(seed_data, user)


async def test_cancel_rules(svc: Services, call: Call, fresh: Fresh, seed_data: Dataset) -> None:
    user, pid = fresh("user"), fresh("product")
    sku = seed_data.products[pid]["sku"]
    before = await stock_of(svc, call, [sku])
    created = await place(svc, call, fresh("key"),
                          {"user_id": user, "items": [{"product_id": pid, "quantity": 3}]})
    assert await stock_of(svc, call, [sku]) == {sku: before[sku] - 3}
    url = svc.url("orders") + f"/orders/{created.body['id']}/cancel"
    cancelled = await call("POST", url)
    assert cancelled.status == 200
    assert cancelled.body == {**created.body, "status": "CANCELLED"}
    assert await stock_of(svc, call, [sku]) == before  # the reservation was released
    twice = await call("POST", url)
    assert twice.status == 200 and twice.body == cancelled.body
    assert await stock_of(svc, call, [sku]) == before

    shipped = next(o for o, d in seed_data.orders.items() if d["status"] == "SHIPPED")
    assert_error(await call("POST", svc.url("orders") + f"/orders/{shipped}/cancel"), 409,
                 "ALREADY_SHIPPED")
    assert_error(await call("POST", svc.url("orders") + "/orders/o99999999/cancel"), 404,
                 "NOT_FOUND")
    # A seeded PLACED order has no reservation: cancelling it just changes the status.
    placed = [o for o, d in seed_data.orders.items() if d["status"] == "PLACED"]
    reply = await call("POST", svc.url("orders") + f"/orders/{placed[-1]}/cancel")
    assert reply.status == 200 and reply.body["status"] == "CANCELLED"


async def test_ship_rules(svc: Services, call: Call, fresh: Fresh, seed_data: Dataset) -> None:
    user, pid = fresh("user"), fresh("product")
    sku = seed_data.products[pid]["sku"]
    created = await place(svc, call, fresh("key"),
                          {"user_id": user, "items": [{"product_id": pid, "quantity": 2}]})
    taken = await stock_of(svc, call, [sku])
    url = svc.url("orders") + f"/orders/{created.body['id']}"
    shipped = await call("POST", url + "/ship")
    assert shipped.status == 200
    assert shipped.body == {**created.body, "status": "SHIPPED"}
    listed = await call("GET", svc.url("orders") + f"/orders?ids={created.body['id']}")
    assert listed.body["items"] == [shipped.body]
    assert await stock_of(svc, call, [sku]) == taken  # what shipped stays taken
    again = await call("POST", url + "/ship")  # shipping twice returns the order
    assert again.status == 200 and again.body == shipped.body
    assert_error(await call("POST", url + "/cancel"), 409, "ALREADY_SHIPPED")
    assert await stock_of(svc, call, [sku]) == taken

    cancelled = await place(svc, call, fresh("key"),
                            {"user_id": user, "items": [{"product_id": pid, "quantity": 1}]})
    cancel_url = svc.url("orders") + f"/orders/{cancelled.body['id']}"
    assert (await call("POST", cancel_url + "/cancel")).status == 200
    assert_error(await call("POST", cancel_url + "/ship"), 409, "ALREADY_CANCELLED")
    listed = await call("GET", svc.url("orders") + f"/orders?ids={cancelled.body['id']}")
    assert listed.body["items"][0]["status"] == "CANCELLED"
    assert_error(await call("POST", svc.url("orders") + "/orders/o99999999/ship"), 404,
                 "NOT_FOUND")


async def test_reservations_directly(svc: Services, call: Call, fresh: Fresh,
                                     seed_data: Dataset) -> None:
    pid = fresh("product")
    sku = seed_data.products[pid]["sku"]
    url = svc.url("inventory") + "/inventory/reservations"
    before = await stock_of(svc, call, [sku])
    body = {"order_id": "o-test", "items": [{"sku": sku, "quantity": 1},
                                            {"sku": sku, "quantity": 1}]}
    key = {"Idempotency-Key": fresh("key")}
    assert_error(await call("POST", url, body), 400, "BAD_INPUT")  # no key
    first = await call("POST", url, body, headers=key)
    assert first.status == 201 and first.body["reservation_id"]
    second = await call("POST", url, body, headers=key)
    assert second.status == 201 and second.body == first.body
    assert await stock_of(svc, call, [sku]) == {sku: before[sku] - 2}
    assert_error(await call("POST", url, {**body, "order_id": "o-other"}, headers=key), 409,
                 "IDEMPOTENCY_CONFLICT")
    short = {"order_id": "o-x", "items": [{"sku": sku, "quantity": 1000}]}
    assert_error(await call("POST", url, short, headers={"Idempotency-Key": fresh("key")}), 409,
                 "INSUFFICIENT_STOCK")
    for bad in ({"order_id": "o", "items": [{"sku": "SKU-NOPE", "quantity": 1}]},
                {"order_id": "o", "items": [{"sku": sku, "quantity": 0}]},
                {"order_id": "o", "items": []}, {"items": [{"sku": sku, "quantity": 1}]}):
        assert_error(await call("POST", url, bad, headers={"Idempotency-Key": fresh("key")}),
                     400, "BAD_INPUT")
    release = f"{url}/{first.body['reservation_id']}/release"
    assert (await call("POST", release)).status == 200
    assert (await call("POST", release)).status == 200  # releasing twice is a no-op
    assert await stock_of(svc, call, [sku]) == before
    assert_error(await call("POST", f"{url}/res999999/release"), 404, "NOT_FOUND")


async def test_restock(svc: Services, call: Call, fresh: Fresh, seed_data: Dataset) -> None:
    sku = seed_data.products[fresh("product")]["sku"]
    before = await stock_of(svc, call, [sku])
    url = svc.url("inventory") + f"/inventory/{sku}/restock"
    reply = await call("POST", url, {"quantity": 3})
    assert reply.status == 200
    assert reply.body["sku"] == sku and reply.body["quantity"] == before[sku] + 3
    assert reply.body["in_stock"] is True
    assert await stock_of(svc, call, [sku]) == {sku: before[sku] + 3}
    for bad in ({"quantity": 0}, {"quantity": -1}, {"quantity": 1.5}, {"quantity": "2"}, {},
                {"quantity": 1, "warehouse": "x"}):
        assert_error(await call("POST", url, bad), 400, "BAD_INPUT")
    assert_error(await call("POST", svc.url("inventory") + "/inventory/SKU-NOPE/restock",
                            {"quantity": 1}), 404, "NOT_FOUND")


async def test_create_review_updates_rating(svc: Services, call: Call, fresh: Fresh,
                                            seed_data: Dataset) -> None:
    pid, author = fresh("product"), fresh("user")
    url = svc.url("reviews") + "/reviews"
    existing = await call("GET", url + f"?product_ids={pid}")
    ratings = [r["rating"] for r in existing.body["items"]]
    reply = await call("POST", url, {"product_id": pid, "author_id": author, "rating": 2,
                                     "body": "Meh."})
    assert reply.status == 201, reply.body
    review = reply.body
    assert review["rating"] == 2 and review["product_id"] == pid
    assert review["author_id"] == author and review["created_at"].endswith("Z")
    assert int(review["id"][1:]) > len(seed_data.reviews)
    ratings.append(2)
    updated = await product(svc, call, pid)
    assert updated["rating_count"] == len(ratings)
    assert updated["rating_avg"] == round(sum(ratings) / len(ratings), 2)
    by_product = await call("GET", url + f"?product_ids={pid}")
    assert by_product.body["items"][0] == review  # newest first
    by_id = await call("GET", url + f"?ids={review['id']}")
    assert by_id.body["items"] == [review]
    by_author = await call("GET", url + f"?author_ids={author}")
    assert review in by_author.body["items"]


async def test_review_on_unreviewed_product(svc: Services, call: Call,
                                            seed_data: Dataset) -> None:
    pid = "p5000"  # the last product never has a seeded review
    assert seed_data.products[pid]["rating_count"] == 0
    reply = await call("POST", svc.url("reviews") + "/reviews",
                       {"product_id": pid, "author_id": "u10", "rating": 4, "body": "Nice"})
    assert reply.status == 201
    updated = await product(svc, call, pid)
    assert (updated["rating_avg"], updated["rating_count"]) == (4.0, 1)


@pytest.mark.parametrize("change", [
    {"rating": 0}, {"rating": 6}, {"rating": 4.5}, {"rating": "5"}, {"rating": True},
    {"body": ""}, {"body": "   "}, {"body": 5}, {"product_id": "p99999999"},
    {"author_id": "u999999"}, {"extra": 1}, {"product_id": "p1,p2"}, {"author_id": "u1/x"},
])
async def test_review_validation(svc: Services, call: Call, change: dict[str, Any]) -> None:
    body = {"product_id": "p11", "author_id": "u11", "rating": 3, "body": "ok", **change}
    assert_error(await call("POST", svc.url("reviews") + "/reviews", body), 400, "BAD_INPUT")
