"""Retries: transient failures only, with backoff, within the deadline and the budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import QUERIES
from tests.harness import Gateway, Services, http
from tests.resilience.conftest import Post, Reply, metric, readyz

DEEP = (QUERIES / "deep.graphql").read_text()
USER = '{ user(id: "u1") { id name } }'


async def run_all(post: Post, gateway: Gateway, query: str, n: int, concurrency: int,
                  **kwargs: object) -> list[Reply]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Reply:
        async with gate:
            return await post(gateway, query, **kwargs)

    return list(await asyncio.gather(*(one() for _ in range(n))))


def catalog_attempts(replies: list[Reply]) -> tuple[int, int]:
    calls = [c for r in replies for c in r.calls if c["service"] == "catalog"]
    return len(calls), sum(c["retries"] for c in calls)


async def test_flaky_catalog_deep_queries_all_succeed(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The default configuration (entity cache on): 30% of catalog requests answer 503, and
    # all 200 deep queries come back whole. Retries absorb the failures of the calls made,
    # and the telemetry accounts for every request the catalog saw.
    # One query at a time and seeded fault dice: the same requests meet the same 503s on
    # every run (seed 3: the first catalog call fails once), so the test does not depend
    # on luck. Five attempts per call ride out a 30% rate (0.3^5: 0.2% of calls fail);
    # the few retries of a cold start fit the budget's floor.
    gateway = start(CACHE_ENABLED="true", RETRY_MAX_ATTEMPTS="5")
    faults.set_faults("catalog", error_rate=0.3, error_status=503, seed=3)
    replies = await run_all(post, gateway, DEEP, 200, concurrency=1)
    assert all(r.status == 200 and "errors" not in r.body for r in replies), [
        r.body.get("errors") for r in replies if "errors" in r.body][:3]
    assert all(len(r.body["data"]["topProducts"]) == 10 for r in replies)
    calls, retries = catalog_attempts(replies)
    assert calls > 0 and retries > 0
    assert faults.stats("catalog")["requests"] and sum(
        faults.stats("catalog")["requests"].values()) == calls + retries


async def test_retries_rescue_most_flaky_calls_within_the_budget(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The cache off: every deep query calls the catalog. Without retries a query would fail
    # whenever one of its catalog calls did; with them most succeed, each retry shows in the
    # response's telemetry, and what fails is only the catalog's part, classified. The
    # breaker is off: a run of bad luck could open it, and its codes are tested elsewhere.
    gateway = start(BREAKER_ENABLED="false")
    faults.set_faults("catalog", error_rate=0.3, error_status=503)
    replies = await run_all(post, gateway, DEEP, 200, concurrency=4)
    calls, retries = catalog_attempts(replies)
    assert sum(faults.stats("catalog")["requests"].values()) == calls + retries
    clean = [r for r in replies if "errors" not in r.body]
    assert any(c["retries"] for r in clean for c in r.calls), "no error-free reply was retried"
    per_query = calls / len(replies)
    without_retries = 0.7 ** per_query  # the share that would succeed without retries
    assert len(clean) / len(replies) > without_retries + 0.15, (len(clean), per_query)
    for reply in replies:
        assert reply.status == 200 and reply.body["data"] is not None
        for error in reply.body.get("errors", ()):
            assert error["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
            assert error["extensions"]["service"] == "catalog"
            assert error["extensions"]["retryable"] is True
            assert isinstance(error["extensions"]["retries"], int)
    assert metric(gateway, "gateway_upstream_retries_total", service="catalog") == retries


async def test_flaky_everywhere_deep_queries_come_back_whole(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Every service answers 30% of requests 503 (seeded dice, one query at a time: the same
    # requests meet the same faults on every run) and the cache is off: the deep query's 10
    # calls each meet them. Retries that the services answer are refunded to the budget, so
    # every call gets the retries it needs (0.43 on average), at 1/0.7 attempts per call, and
    # no breaker opens, since every call ends well.
    gateway = start()
    for i, service in enumerate(("users", "catalog", "inventory", "reviews")):
        faults.set_faults(service, error_rate=0.3, error_status=503, seed=100 + i)
    replies = await run_all(post, gateway, DEEP, 60, concurrency=1)
    partial = [r.body["errors"] for r in replies if "errors" in r.body]
    assert not partial, partial[:3]
    sent = sum(sum(faults.stats(s)["requests"].values())
               for s in ("users", "catalog", "inventory", "reviews"))
    assert 10 * 60 * 1.2 < sent <= 10 * 60 * 1.6, sent
    assert metric(gateway, "gateway_retry_budget_refusals_total") == 0
    assert all(s["breaker"] == "closed" for s in readyz(gateway)["services"].values())


async def test_writes_without_an_idempotency_key_are_not_retried(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    gateway = start()
    faults.set_faults("reviews", error_rate=1.0, error_status=503)
    reply = await post(gateway, 'mutation { addReview(input: {productId: "p4100", rating: 4, '
                       'body: "fine"}) { review { id } } }', headers={"X-User-Id": "u3"})
    assert reply.codes() == ["UPSTREAM_UNAVAILABLE"]
    assert reply.body["errors"][0]["extensions"]["retries"] == 0
    assert faults.stats("reviews")["requests"] == {"POST /reviews": 1}


async def test_place_order_is_retried_with_its_idempotency_key(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The orders service takes one write per second: the second order is refused with 429
    # and Retry-After: 1, before anything is reserved. The gateway retries it with the same
    # key a second later, and the order is placed once.
    gateway = start()
    query = ('mutation($key: String!) { placeOrder(input: {items: [{productId: "p4101", '
             'quantity: 1}], idempotencyKey: $key}) { order { id } errors { code } } }')
    faults.set_faults("orders", rate_limit_rps=1)
    first = await post(gateway, query, {"key": "retry-test-1"}, headers={"X-User-Id": "u4"})
    second = await post(gateway, query, {"key": "retry-test-2"}, headers={"X-User-Id": "u4"})
    faults.clear_faults()
    for reply, retries in ((first, 0), (second, 1)):
        assert "errors" not in reply.body, reply.body
        assert reply.body["data"]["placeOrder"]["errors"] == []
        assert [c["retries"] for c in reply.calls if c["route"] == "/orders"] == [retries]
    assert faults.stats("orders")["requests"]["POST /orders"] == 3
    order_id = second.body["data"]["placeOrder"]["order"]["id"]
    listed = await post(gateway, '{ me { orders(first: 50) { edges { node { id } } } } }',
                        headers={"X-User-Id": "u4"})
    ids = [e["node"]["id"] for e in listed.body["data"]["me"]["orders"]["edges"]]
    assert ids.count(order_id) == 1


async def test_retry_after_is_honoured_and_no_wait_passes_the_deadline(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The users service takes so many requests a second (a token bucket: /_faults
    # rate_limit_rps) and answers the rest 429 with Retry-After. Its bucket witnesses the
    # order of the attempts, with no clock in the test: a retry sent before the service
    # would take it is refused again, and /_stats counts it.
    gateway = start()
    faults.set_faults("users", rate_limit_rps=1)
    first = await post(gateway, USER)
    assert "errors" not in first.body
    # The bucket is empty: the next call is answered 429, Retry-After: 1. The gateway's
    # retry is the next request the service sees, and the service takes it.
    faults.reset_stats()
    second = await post(gateway, USER)
    assert "errors" not in second.body, second.body
    assert second.calls[0]["retries"] == 1
    assert faults.stats("users")["requests"] == {"GET /users": 2}
    # One request every 5 s: Retry-After: 5 passes the request's 2 s deadline, so the
    # gateway does not wait at all: it answers with the service's refusal, and the service,
    # asked right after that answer, still refuses (its 5 s have not passed).
    faults.set_faults("users", rate_limit_rps=0.2)  # a full bucket: one token
    assert http("GET", faults.url("users") + "/users?ids=u2")[0] == 200
    faults.reset_stats()
    third = await post(gateway, USER)
    assert third.codes() == ["UPSTREAM_RATE_LIMITED"]
    ext = third.body["errors"][0]["extensions"]
    assert ext["service"] == "users" and ext["retries"] == 0 and ext["retryable"] is True
    assert http("GET", faults.url("users") + "/users?ids=u3")[0] == 429
    assert faults.stats("users")["requests"] == {"GET /users": 2}  # the gateway's, and ours


async def test_retry_budget_caps_the_load_an_outage_sees(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # The users service answers 503 to everything. Without a budget each call would be
    # tried 3 times (3x the load); the budget (20% of calls plus 1/s over 10 s) keeps it
    # at most 1.25x what the same queries cost with retries off. The breakers are off here
    # so that the budget alone is measured.
    n = 400
    on = start(BREAKER_ENABLED="false")
    off = start(BREAKER_ENABLED="false", RETRY_MAX_ATTEMPTS="1")
    faults.set_faults("users", error_rate=1.0, error_status=503)
    counts = {}
    for name, gateway in (("off", off), ("on", on)):
        faults.reset_stats()
        replies = await run_all(post, gateway, USER, n, concurrency=16)
        assert all(r.codes() == ["UPSTREAM_UNAVAILABLE"] for r in replies)
        counts[name] = faults.stats("users")["requests"]["GET /users"]
    assert counts["off"] == n
    ratio = counts["on"] / counts["off"]
    assert 1.05 < ratio <= 1.25, counts
    assert metric(on, "gateway_retry_budget_refusals_total", service="users") > 0


async def test_an_idempotency_key_that_cannot_be_a_header_is_refused(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    gateway = start()
    reply = await post(gateway, 'mutation { placeOrder(input: {items: [{productId: "p4102", '
                       'quantity: 1}], idempotencyKey: "k\\r\\nX-Evil: 1"}) { order { id } '
                       'errors { code field } } }', headers={"X-User-Id": "u4"})
    assert reply.body["data"]["placeOrder"] == {
        "order": None, "errors": [{"code": "BAD_USER_INPUT", "field": "idempotencyKey"}]}
    assert faults.stats("orders")["requests"] == {}
