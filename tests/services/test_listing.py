"""Cursor listings (catalog by category, orders by user) and top-rated products."""

from __future__ import annotations

import base64
from typing import Any

from services.seed import Dataset
from tests.harness import Services
from tests.services.conftest import Call
from tests.services.test_reads import assert_error


async def walk(call: Call, url: str, first: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        reply = await call("GET", url + f"&first={first}" + (f"&after={cursor}" if cursor else ""))
        assert reply.status == 200, reply.body
        assert len(reply.body["items"]) <= first
        items += reply.body["items"]
        cursor = reply.body["next_cursor"]
        if cursor is None:
            return items
        assert len(reply.body["items"]) == first  # only a full page can have more after it
    raise AssertionError("listing did not end")


async def test_category_listing_walk(svc: Services, call: Call, seed_data: Dataset) -> None:
    expected = sorted((p for p, d in seed_data.products.items() if d["category_id"] == "c1"),
                      key=lambda p: int(p[1:]))
    got = await walk(call, svc.url("catalog") + "/products?category_id=c1", 7)
    assert [p["id"] for p in got] == expected
    # A page size dividing the count exactly: the last full page has no next_cursor.
    got = await walk(call, svc.url("catalog") + "/products?category_id=c1", len(expected))
    assert [p["id"] for p in got] == expected
    reply = await call("GET", svc.url("catalog") + "/products?category_id=c999")
    assert reply.body == {"items": [], "next_cursor": None}
    # Without a category the listing walks the whole catalog in the same order.
    reply = await call("GET", svc.url("catalog") + "/products?first=3")
    assert [p["id"] for p in reply.body["items"]] == ["p1", "p2", "p3"]
    last = await call("GET", svc.url("catalog") + "/products?first=2&after="
                      + base64.urlsafe_b64encode(b"p4998").decode().rstrip("="))
    assert [p["id"] for p in last.body["items"]] == ["p4999", "p5000"]
    assert last.body["next_cursor"] is None


async def test_category_listing_first_zero(svc: Services, call: Call) -> None:
    url = svc.url("catalog") + "/products?category_id=c2"
    reply = await call("GET", url + "&first=0")
    assert reply.body["items"] == [] and reply.body["next_cursor"] is not None
    # The cursor from a first=0 page continues from where it was asked.
    page = await call("GET", url + f"&first=3&after={reply.body['next_cursor']}")
    start = await call("GET", url + "&first=3")
    assert page.body == start.body
    every = await walk(call, url, 100)
    last = base64.urlsafe_b64encode(every[-1]["id"].encode()).decode().rstrip("=")
    end = await call("GET", url + f"&first=0&after={last}")
    assert end.body == {"items": [], "next_cursor": None}
    mid = await call("GET", url + f"&first=0&after={start.body['next_cursor']}")
    assert mid.body["next_cursor"] == start.body["next_cursor"]


async def test_listing_bad_parameters(svc: Services, call: Call) -> None:
    for base in (svc.url("catalog") + "/products?category_id=c1",
                 svc.url("orders") + "/orders?user_id=u1"):
        for bad in ("first=101", "first=-1", "first=x", "after=!!!", "after=eHl6",
                    "after=%C3%A9"):
            assert_error(await call("GET", f"{base}&{bad}"), 400, "BAD_INPUT")
        assert (await call("GET", f"{base}&first=100")).status == 200
    assert_error(await call("GET", svc.url("catalog") + "/products?sort=worst"), 400,
                 "BAD_INPUT")


async def test_orders_by_user_newest_first(svc: Services, call: Call,
                                           seed_data: Dataset) -> None:
    user = "u3"  # tests that write orders use users from the other end
    expected = sorted((o for o in seed_data.orders.values() if o["user_id"] == user),
                      key=lambda o: (o["created_at"], int(o["id"][1:])), reverse=True)
    assert len(expected) > 3
    got = await walk(call, svc.url("orders") + f"/orders?user_id={user}", 3)
    assert [o["id"] for o in got] == [o["id"] for o in expected]
    reply = await call("GET", svc.url("orders") + f"/orders?user_id={user}&first=0")
    assert reply.body["items"] == [] and reply.body["next_cursor"]
    reply = await call("GET", svc.url("orders") + "/orders?user_id=u999999")
    assert reply.body == {"items": [], "next_cursor": None}
    default = await call("GET", svc.url("orders") + f"/orders?user_id={user}")
    assert len(default.body["items"]) == min(10, len(expected))


async def test_top_products(svc: Services, call: Call) -> None:
    reply = await call("GET", svc.url("catalog") + "/products?sort=top&first=100")
    assert reply.status == 200 and reply.body["next_cursor"] is None
    items = reply.body["items"]
    assert len(items) == 100
    keys = [(-p["rating_avg"], int(p["id"][1:])) for p in items]
    assert keys == sorted(keys)
    five = await call("GET", svc.url("catalog") + "/products?sort=top&first=5")
    assert five.body["items"] == items[:5]
    assert_error(await call("GET", svc.url("catalog") + "/products?sort=top&after=cDE="), 400,
                 "BAD_INPUT")
