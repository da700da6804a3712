"""Queries return the right data: checked against the seed data, the tests' own oracle."""

from __future__ import annotations

import asyncio
from typing import Any

from services.seed import Dataset
from tests.conftest import GQL, data_of
from tests.harness import Services


def newest_first(reviews: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(reviews, key=lambda r: (r["created_at"], r["id"]), reverse=True)


def product_reviews(dataset: Dataset, product_id: str) -> list[dict[str, Any]]:
    return newest_first([r for r in dataset.reviews.values() if r["product_id"] == product_id])


async def test_missing_ids_are_null_in_place(gql: GQL, dataset: Dataset) -> None:
    data = data_of(
        await gql(
            """{ products(ids: ["p1", "p-missing", "p2", "p1"]) { id name }
                 users(ids: ["u-missing", "u3"]) { id username }
                 product(id: "nope") { id }
                 category(id: "c-none") { id } order(id: "o-none") { id } }""",
            user="u3",
        )
    )
    assert data["products"] == [
        {"id": "p1", "name": dataset.products["p1"]["name"]},
        None,
        {"id": "p2", "name": dataset.products["p2"]["name"]},
        {"id": "p1", "name": dataset.products["p1"]["name"]},
    ]
    assert data["users"] == [None, {"id": "u3", "username": dataset.users["u3"]["username"]}]
    assert data["product"] is None and data["category"] is None and data["order"] is None


async def test_product_fields_match_the_services(gql: GQL, dataset: Dataset) -> None:
    pid = "p7"
    p = dataset.products[pid]
    data = data_of(
        await gql(
            """query($id: ID!) { product(id: $id) {
                 id sku name description weightGrams price { amount currency }
                 category { id name parent { id } } inventory { sku quantity inStock warehouse }
                 inStock averageRating reviewCount reviews(first: 3) { id rating author { id } }
               } }""",
            {"id": pid},
        )
    )["product"]
    stock = dataset.stock[p["sku"]]
    category = dataset.categories[p["category_id"]]
    reviews = product_reviews(dataset, pid)
    assert data["sku"] == p["sku"] and data["weightGrams"] == p["weight_grams"]
    assert data["price"] == {"amount": p["price_cents"], "currency": p["currency"]}
    assert data["category"]["name"] == category["name"]
    assert data["category"]["parent"] == (
        {"id": category["parent_id"]} if category["parent_id"] else None
    )
    assert data["inventory"]["quantity"] == stock["quantity"]
    assert data["inStock"] is stock["in_stock"]
    assert data["reviewCount"] == len(reviews)
    assert data["averageRating"] == (p["rating_avg"] if reviews else None)
    assert [r["id"] for r in data["reviews"]] == [r["id"] for r in reviews[:3]]
    assert [r["author"]["id"] for r in data["reviews"]] == [
        r["author_id"] for r in reviews[:3]
    ]


async def test_average_rating_is_null_without_reviews(gql: GQL, dataset: Dataset) -> None:
    pid = next(p for p, v in dataset.products.items() if v["rating_count"] == 0)
    data = data_of(
        await gql('query($id: ID!) { product(id: $id) { averageRating reviewCount reviews { id } } }',
                  {"id": pid})
    )
    assert data["product"] == {"averageRating": None, "reviewCount": 0, "reviews": []}


async def test_top_products_and_categories_order(gql: GQL, dataset: Dataset) -> None:
    data = data_of(await gql("{ topProducts(first: 7) { id } categories { id name } }"))
    ranked = sorted(
        dataset.products.values(), key=lambda p: (-p["rating_avg"], int(p["id"][1:]))
    )
    assert [p["id"] for p in data["topProducts"]] == [p["id"] for p in ranked[:7]]
    expected = sorted(dataset.categories.values(), key=lambda c: (c["name"], c["id"]))
    assert data["categories"] == [{"id": c["id"], "name": c["name"]} for c in expected]


async def test_fifty_different_queries_at_once_do_not_mix(gql: GQL, dataset: Dataset) -> None:
    # Loaders are per request: a shared one would hand one request's products to another.
    query = """query($id: ID!, $u: ID!) {
      product(id: $id) { id name reviews(first: 2) { id author { id } } }
      user(id: $u) { id username reviews(first: 2) { id product { id } } }
    }"""
    # Outside the region the writing tests use (products above p4000, users up to u20).
    pairs = [(f"p{i * 37 % 4000 + 1}", f"u{i * 13 % 900 + 100}") for i in range(50)]
    results = await asyncio.gather(*(gql(query, {"id": p, "u": u}) for p, u in pairs))
    for (pid, uid), body in zip(pairs, results, strict=True):
        data = data_of(body)
        assert data["product"]["id"] == pid
        assert data["product"]["name"] == dataset.products[pid]["name"]
        assert [r["id"] for r in data["product"]["reviews"]] == [
            r["id"] for r in product_reviews(dataset, pid)[:2]
        ]
        assert data["user"]["username"] == dataset.users[uid]["username"]
        mine = newest_first([r for r in dataset.reviews.values() if r["author_id"] == uid])
        assert [(r["id"], r["product"]["id"]) for r in data["user"]["reviews"]] == [
            (r["id"], r["product_id"]) for r in mine[:2]
        ]


async def test_category_products_paginate_in_catalog_order(
    gql: GQL, dataset: Dataset
) -> None:
    cid = "c3"
    expected = sorted(
        (p["id"] for p in dataset.products.values() if p["category_id"] == cid),
        key=lambda i: int(i[1:]),
    )
    query = """query($id: ID!, $after: String) { category(id: $id) {
      products(first: 7, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } }
    } }"""
    seen: list[str] = []
    after = None
    while True:
        conn = data_of(await gql(query, {"id": cid, "after": after}))["category"]["products"]
        seen += [e["node"]["id"] for e in conn["edges"]]
        assert conn["pageInfo"]["endCursor"] == (conn["edges"][-1]["cursor"] if conn["edges"] else None)
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert seen == expected

    # Any edge's cursor continues right after that edge.
    first = data_of(await gql(query, {"id": cid, "after": None}))["category"]["products"]
    mid = first["edges"][2]["cursor"]
    nxt = data_of(await gql(query, {"id": cid, "after": mid}))["category"]["products"]
    assert [e["node"]["id"] for e in nxt["edges"]] == expected[3:10]


async def test_first_zero_still_tells_whether_items_exist(gql: GQL) -> None:
    data = data_of(
        await gql("""{ category(id: "c1") { products(first: 0) {
            edges { cursor } pageInfo { hasNextPage endCursor } } } }""")
    )
    assert data["category"]["products"] == {
        "edges": [], "pageInfo": {"hasNextPage": True, "endCursor": None}
    }


async def test_bad_cursor_and_first_are_bad_user_input(gql: GQL) -> None:
    body = await gql('{ category(id: "c1") { products(after: "garbage!") { edges { cursor } } } }')
    # `products` is non-null: its error nulls the category (nullable), not the whole answer.
    assert body["data"] == {"category": None}
    [error] = body["errors"]
    assert error["path"] == ["category", "products"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "after"
    body = await gql('{ topProducts(first: -1) { id } }')
    assert body["data"] is None  # topProducts is non-null, at the root
    [error] = body["errors"]
    assert error["path"] == ["topProducts"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "first"


async def test_user_orders_newest_first_with_pages(gql: GQL, dataset: Dataset) -> None:
    uid = max(dataset.users, key=lambda u: sum(o["user_id"] == u for o in dataset.orders.values()))
    mine = sorted(
        (o for o in dataset.orders.values() if o["user_id"] == uid),
        key=lambda o: (o["created_at"], o["id"]), reverse=True,
    )
    query = """query($u: ID!, $after: String) { user(id: $u) { orders(first: 3, after: $after) {
      edges { node { id status total { amount } items { quantity unitPrice { amount currency } product { id } } } }
      pageInfo { hasNextPage endCursor } } } }"""
    seen: list[dict[str, Any]] = []
    after = None
    for _ in range(100):
        conn = data_of(await gql(query, {"u": uid, "after": after}, user=uid))["user"]["orders"]
        seen += [e["node"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    # Orders placed by other tests may come first; the seeded ones follow in order.
    seeded = [o for o in seen if o["id"] in dataset.orders]
    assert [o["id"] for o in seeded] == [o["id"] for o in mine]
    first = mine[0]
    got = next(o for o in seen if o["id"] == first["id"])
    assert got["total"]["amount"] == first["total_cents"]
    assert [(i["product"]["id"], i["quantity"], i["unitPrice"]["amount"]) for i in got["items"]] == [
        (i["product_id"], i["quantity"], i["unit_price_cents"]) for i in first["items"]
    ]


async def test_recommendations_drop_products_that_no_longer_exist(
    gql: GQL, services: Services, dataset: Dataset
) -> None:
    from tests.harness import http

    for uid in (f"u{i}" for i in range(1, 60)):
        _, _, body = http("GET", services.url("recommendations") + f"/recommendations/{uid}?limit=10")
        if any(p not in dataset.products for p in body["product_ids"]):
            break
    else:
        raise AssertionError("no user has a recommendation of a missing product")
    expected = [p for p in dict.fromkeys(body["product_ids"]) if p in dataset.products]
    data = data_of(await gql('query($u: ID!) { user(id: $u) { recommendations(first: 10) { id } } }',
                             {"u": uid}, user=uid))
    assert [p["id"] for p in data["user"]["recommendations"]] == expected
    assert len(expected) < 10


async def test_continuing_from_a_mid_page_cursor_with_a_large_first(
    gql: GQL, dataset: Dataset
) -> None:
    # The upstream pages at most 100 items; continuing from edge 50 of a 60-item page with
    # first: 60 gives a shorter page, and endCursor continues from there without a gap.
    cid = max(dataset.categories, key=lambda c: sum(
        p["category_id"] == c for p in dataset.products.values()))
    expected = sorted((p["id"] for p in dataset.products.values() if p["category_id"] == cid),
                      key=lambda i: int(i[1:]))
    assert len(expected) > 110
    query = """query($id: ID!, $after: String, $n: Int) { category(id: $id) {
      products(first: $n, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } } }"""
    page = data_of(await gql(query, {"id": cid, "n": 60}))["category"]["products"]
    mid = page["edges"][49]["cursor"]
    seen: list[str] = []
    after = mid
    while True:
        conn = data_of(await gql(query, {"id": cid, "after": after, "n": 60}))["category"]["products"]
        assert 0 < len(conn["edges"]) <= 60
        seen += [e["node"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert seen == expected[50:]


async def test_a_cursor_of_another_list_is_refused(gql: GQL) -> None:
    query = """query($id: ID!, $after: String) { category(id: $id) {
      products(first: 2, after: $after) { pageInfo { endCursor } } } }"""
    c1 = data_of(await gql(query, {"id": "c1"}))["category"]["products"]["pageInfo"]["endCursor"]
    body = await gql(query, {"id": "c2", "after": c1})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_has_next_page_is_false_at_the_exact_end(gql: GQL, dataset: Dataset) -> None:
    counts = {c: sum(p["category_id"] == c for p in dataset.products.values())
              for c in dataset.categories}
    cid, n = next((c, k) for c, k in counts.items() if 0 < k <= 100)
    body = data_of(await gql(f'{{ category(id: "{cid}") {{ products(first: {n}) {{ edges {{ cursor }} pageInfo {{ hasNextPage }} }} }} }}'))
    conn = body["category"]["products"]
    assert len(conn["edges"]) == n and conn["pageInfo"]["hasNextPage"] is False


async def test_ids_that_cannot_exist_do_not_fail_their_batch(
    gql: GQL, clean_services: Services
) -> None:
    data = data_of(await gql('{ a: product(id: "") { id } b: product(id: "p1") { id } '
                             'c: product(id: "p1,p2") { id } d: user(id: "") { id } }'))
    assert data == {"a": None, "b": {"id": "p1"}, "c": None, "d": None}
    assert clean_services.stats("catalog")["items"] == {"GET /products": 1}
    assert clean_services.stats("users")["requests"] == {}


async def test_private_fields_are_the_viewers_own(gql: GQL, dataset: Dataset) -> None:
    query = '{ user(id: "u2") { id email } }'
    own = data_of(await gql(query, user="u2"))
    assert own["user"]["email"] == dataset.users["u2"]["email"]
    for viewer in (None, "u3"):
        body = await gql(query, user=viewer)
        assert body["data"]["user"] == {"id": "u2", "email": None}
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
        assert body["errors"][0]["path"] == ["user", "email"]
    # Someone else's order reads as if it did not exist.
    order = next(iter(dataset.orders.values()))
    q = 'query($id: ID!) { order(id: $id) { id } }'
    assert data_of(await gql(q, {"id": order["id"]}, user=order["user_id"]))["order"] == {
        "id": order["id"]}
    assert data_of(await gql(q, {"id": order["id"]}, user="u-other"))["order"] is None
    anonymous = await gql(q, {"id": order["id"]})
    assert anonymous["data"]["order"] is None
    assert [e["extensions"]["code"] for e in anonymous["errors"]] == ["UNAUTHENTICATED"]


async def test_me(gql: GQL, dataset: Dataset) -> None:
    assert data_of(await gql("{ me { id username } }", user="u4"))["me"] == {
        "id": "u4", "username": dataset.users["u4"]["username"]}
    assert data_of(await gql("{ me { id } }"))["me"] is None


async def test_recommendations_first_is_bounded(gql: GQL) -> None:
    body = await gql('{ me { recommendations(first: 51) { id } } }', user="u1")
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    data = data_of(await gql('{ me { recommendations(first: 2) { id } } }', user="u1"))
    assert len(data["me"]["recommendations"]) <= 2
