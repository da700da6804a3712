"""Every error classified, upstream failures reported once per failed call with their paths,
and a failing service costing only the fields that depend on it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness import Gateway, Services, http
from tests.resilience.conftest import Post, readyz

PAGE = '{ product(id: "p1") { id name inStock } user(id: "u1") { id name } }'


@pytest.mark.parametrize("kind", ["html", "truncated", "wrong_types"])
async def test_off_contract_bodies_are_bad_responses_not_crashes(
    start: Callable[..., Gateway], faults: Services, post: Post, kind: str
) -> None:
    gateway = start()
    faults.set_faults("catalog", bad_body_rate=1.0, bad_body=kind)
    reply = await post(gateway, PAGE)
    assert reply.status == 200
    assert reply.body["data"]["product"] is None
    assert reply.body["data"]["user"]["id"] == "u1"
    assert reply.codes() == ["UPSTREAM_BAD_RESPONSE"]
    error = reply.body["errors"][0]
    assert error["extensions"]["service"] == "catalog"
    assert error["extensions"]["retryable"] is False
    assert error["extensions"]["retries"] == 0  # an unusable answer is not asked again
    assert "Traceback" not in error["message"] and "127.0.0.1" not in error["message"]
    assert faults.stats("catalog")["requests"] == {"GET /products": 1}
    faults.clear_faults()
    assert "errors" not in (await post(gateway, PAGE)).body
    assert http("GET", gateway.url + "/healthz")[0] == 200


async def test_one_error_per_failed_batch_with_every_path(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Reviews fail: 5 products' reviews were one batched call, so one error with 5 paths;
    # the products, their stock and prices stand.
    gateway = start()
    faults.set_faults("reviews", error_rate=1.0, error_status=500)
    reply = await post(gateway, "{ topProducts(first: 5) { id inStock price { amount } "
                                "reviews { id } } }")
    products = reply.body["data"]["topProducts"]
    assert len(products) == 5 and all(p["reviews"] == [] and p["price"] for p in products)
    assert reply.codes() == ["UPSTREAM_UNAVAILABLE"]
    ext = reply.body["errors"][0]["extensions"]
    assert ext["service"] == "reviews" and ext["retryable"] is False and ext["retries"] == 0
    assert ext["paths"] == [["topProducts", i, "reviews"] for i in range(5)]
    assert faults.stats("reviews")["requests"] == {"GET /reviews": 1}  # 500: not retried


async def test_lists_by_id_keep_their_positions_when_their_service_fails(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    gateway = start()
    faults.set_faults("users", error_rate=1.0, error_status=503)
    reply = await post(gateway, '{ users(ids: ["u1", "u2", "u3"]) { id } categories { id } }')
    assert reply.body["data"]["users"] == [None, None, None]
    assert reply.body["data"]["categories"]
    assert reply.codes() == ["UPSTREAM_UNAVAILABLE"]


async def test_failing_connections_and_recommendations_degrade_to_empty(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    gateway = start()
    for service in ("orders", "recommendations"):
        faults.set_faults(service, error_rate=1.0, error_status=503)
    reply = await post(gateway, "{ me { id name orders { edges { node { id } } "
                                "pageInfo { hasNextPage endCursor } } recommendations { id } } }",
                       headers={"X-User-Id": "u2"})
    assert reply.body["data"]["me"] == {
        "id": "u2", "name": reply.body["data"]["me"]["name"],
        "orders": {"edges": [], "pageInfo": {"hasNextPage": False, "endCursor": None}},
        "recommendations": []}
    assert sorted(reply.codes()) == ["UPSTREAM_UNAVAILABLE", "UPSTREAM_UNAVAILABLE"]
    assert sorted(e["extensions"]["service"] for e in reply.body["errors"]) == [
        "orders", "recommendations"]


async def test_readyz_reports_each_service(
    start: Callable[..., Gateway], faults: Services
) -> None:
    gateway = start()
    state = readyz(gateway)
    assert state["status"] == "ok"
    assert state["services"] == {
        s: {"reachable": True, "breaker": "closed"}
        for s in ("users", "catalog", "inventory", "orders", "reviews", "recommendations")}
    assert "redis" not in state
