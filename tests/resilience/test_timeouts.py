"""Timeouts and the request deadline: a slow or hung service costs at most the deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import QUERIES
from tests.harness import Gateway, Services
from tests.resilience.conftest import Post

DEEP = (QUERIES / "deep.graphql").read_text()
# No upper bounds on wall time here: what ends a request early is shown by the order of
# events (an answer that arrives while the service still holds the call) and by counts of
# the calls the services saw; the arithmetic of deadlines and attempt timeouts is unit
# tested on a FakeClock (tests/unit/test_client_deadline.py).


async def test_hung_service_costs_the_deadline_and_only_its_fields(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Reviews never answer. Each attempt times out at UPSTREAM_TIMEOUT_S (0.5 s here); the
    # retries stop at the 1.5 s deadline, not at the attempt cap (10 here). The products
    # come back, with empty reviews and one UPSTREAM_TIMEOUT error carrying the path of
    # every product's reviews.
    gateway = start(UPSTREAM_TIMEOUT_S="0.5", REQUEST_DEADLINE_S="1.5", RETRY_MAX_ATTEMPTS="10")
    faults.set_faults("reviews", hang_rate=1.0)
    reply = await post(gateway, DEEP)  # an answer at all: the gateway gave up on reviews
    assert reply.elapsed >= 0.5  # at least one full attempt was waited for
    # A hung attempt ends only at its 0.5 s timeout, and none starts past the deadline:
    # at most 3 attempts fit in 1.5 s, and every attempt made reached the service.
    attempts = faults.stats("reviews")["requests"]["GET /reviews"]
    assert 2 <= attempts <= 3, attempts
    products = reply.body["data"]["topProducts"]
    assert len(products) == 10
    assert all(p["name"] and p["category"] and p["reviews"] == [] for p in products)
    assert reply.codes() == ["UPSTREAM_TIMEOUT"]
    error = reply.body["errors"][0]
    assert error["extensions"]["service"] == "reviews"
    assert error["extensions"]["retryable"] is True
    assert error["extensions"]["retries"] == attempts - 1
    assert sorted(map(tuple, error["extensions"]["paths"])) == [
        ("topProducts", i, "reviews") for i in range(10)]
    assert error["path"] == ["topProducts", 0, "reviews"]


async def test_client_may_ask_for_a_shorter_deadline(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Users hold every call: a client that allows 200 ms gets its answer at 200 ms, the
    # users' part marked DEADLINE_EXCEEDED. Under the default 2 s deadline the 1 s attempt
    # timeout would have come first (UPSTREAM_TIMEOUT, then a retry): this code, with one
    # call and no retry, is the client's 200 ms at work.
    gateway = start()
    faults.set_faults("users", hang_rate=1.0)
    reply = await post(gateway, '{ product(id: "p1") { id } user(id: "u1") { id } }',
                       headers={"X-Request-Timeout-Ms": "200"})
    assert reply.elapsed >= 0.2
    assert reply.body["data"] == {"product": {"id": "p1"}, "user": None}
    assert reply.codes() == ["DEADLINE_EXCEEDED"]
    assert reply.body["errors"][0]["extensions"]["service"] == "users"
    assert reply.body["errors"][0]["extensions"]["retries"] == 0
    assert faults.stats("users")["requests"] == {"GET /users": 1}
    # A longer deadline than the setting is not granted: the 2 s setting fits two 1 s
    # attempts (the second cut at the deadline), where 60 s would have allowed all three.
    faults.reset_stats()
    capped = await post(gateway, '{ user(id: "u1") { id } }',
                        headers={"X-Request-Timeout-Ms": "60000"})
    assert capped.codes() == ["UPSTREAM_TIMEOUT"], capped.body
    assert capped.body["errors"][0]["extensions"]["retries"] == 1
    assert faults.stats("users")["requests"] == {"GET /users": 2}
    faults.clear_faults()
    slow = await post(gateway, '{ user(id: "u1") { id } }',
                      headers={"X-Request-Timeout-Ms": "60000"})
    assert "errors" not in slow.body, slow.body
    # Nonsense is refused.
    for bad in ("0", "-5", "soon", "1.5"):
        refused = await post(gateway, "{ categories { id } }",
                             headers={"X-Request-Timeout-Ms": bad})
        assert refused.status == 400
        assert refused.codes() == ["BAD_USER_INPUT"]
        assert "X-Request-Timeout-Ms".lower() in refused.body["errors"][0]["message"].lower()


async def test_after_the_deadline_no_upstream_call_starts(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # 50 categories' product lists, one call at a time (FANOUT_CONCURRENCY=1), 50 ms each,
    # within a 300 ms deadline: the lists that fit are fetched, the rest are not even asked
    # for, and the answer comes at the deadline with them empty and DEADLINE_EXCEEDED.
    gateway = start(FANOUT_CONCURRENCY="1")
    faults.set_faults("catalog", latency_ms=50)
    reply = await post(gateway, "{ categories { id products(first: 1) { edges { node { id } } } } }",
                       headers={"X-Request-Timeout-Ms": "300"})
    # 50 calls of at least 50 ms each, one at a time, cannot fit: the deadline was reached.
    assert reply.elapsed >= 0.3
    categories = reply.body["data"]["categories"]
    assert len(categories) == 50
    # Each call takes at least its 50 ms: only calls started before the deadline reached
    # the catalog (300 ms / 50 ms, less the categories call); none started after it.
    listed = faults.stats("catalog")["requests"]["GET /products"]
    assert 1 <= listed <= 6, listed
    assert sum(1 for c in categories if c["products"]["edges"]) <= listed
    # Each listing is a call of its own (no batch endpoint): one error per call not made
    # (and for the one the deadline cut short).
    assert set(reply.codes()) == {"DEADLINE_EXCEEDED"}
    assert 50 - listed <= len(reply.codes()) <= 50 - listed + 1


async def test_a_shared_cache_fill_keeps_each_requests_own_deadline(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # With the entity cache, concurrent requests for the same user share one fetch. A
    # request with 150 ms left does not wait for a fetch started by a patient one, and the
    # patient one is not failed by the hasty one's deadline.
    gateway = start(CACHE_ENABLED="true")
    faults.set_faults("users", latency_ms=600)
    query = '{ user(id: "%s") { id } }'

    async def fetch_reached_users() -> None:
        # The first request's fetch is at the users service (counted on arrival, before
        # its 600 ms): the second request now finds it in flight.
        for _ in range(400):
            if faults.stats("users")["requests"].get("GET /users", 0) >= 1:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the first request's fetch never reached the users service")

    for uid, hasty_first in (("u31", True), ("u32", False)):
        faults.reset_stats()
        hasty = post(gateway, query % uid, headers={"X-Request-Timeout-Ms": "150"})
        patient = post(gateway, query % uid)
        if hasty_first:
            fast = asyncio.ensure_future(hasty)
            await fetch_reached_users()
            slow = asyncio.ensure_future(patient)
        else:
            slow = asyncio.ensure_future(patient)
            await fetch_reached_users()
            fast = asyncio.ensure_future(hasty)
        # The hasty one is answered while the patient one still waits for the users service.
        done, _ = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {fast}, uid
        quick, full = await fast, await slow
        assert quick.codes() == ["DEADLINE_EXCEEDED"], quick.body
        assert "errors" not in full.body and full.body["data"]["user"]["id"] == uid, full.body
        if not hasty_first:  # the hasty one borrowed the patient one's fetch: one call
            assert faults.stats("users")["requests"] == {"GET /users": 1}, uid
