"""Timeouts and the request deadline: a slow or hung service costs at most the deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import QUERIES
from tests.harness import Gateway, Services
from tests.resilience.conftest import Post

DEEP = (QUERIES / "deep.graphql").read_text()
MARGIN_S = 0.25  # the gateway's own work after the deadline, on a noisy machine


async def test_hung_service_costs_the_deadline_and_only_its_fields(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Reviews never answer. Each attempt times out at UPSTREAM_TIMEOUT_S (0.5 s here); the
    # retries stop at the 1.5 s deadline. The products come back, with empty reviews and one
    # UPSTREAM_TIMEOUT error carrying the path of every product's reviews.
    gateway = start(UPSTREAM_TIMEOUT_S="0.5", REQUEST_DEADLINE_S="1.5")
    faults.set_faults("reviews", hang_rate=1.0)
    reply = await post(gateway, DEEP)
    assert reply.elapsed < 1.5 + MARGIN_S, reply.elapsed
    assert reply.elapsed >= 0.5  # at least one full attempt was waited for
    products = reply.body["data"]["topProducts"]
    assert len(products) == 10
    assert all(p["name"] and p["category"] and p["reviews"] == [] for p in products)
    assert reply.codes() == ["UPSTREAM_TIMEOUT"]
    error = reply.body["errors"][0]
    assert error["extensions"]["service"] == "reviews"
    assert error["extensions"]["retryable"] is True
    assert error["extensions"]["retries"] >= 1
    assert sorted(map(tuple, error["extensions"]["paths"])) == [
        ("topProducts", i, "reviews") for i in range(10)]
    assert error["path"] == ["topProducts", 0, "reviews"]


async def test_client_may_ask_for_a_shorter_deadline(
    start: Callable[..., Gateway], faults: Services, post: Post
) -> None:
    # Users take 800 ms, less than their timeout: a client that allows 200 ms gets its
    # answer at 200 ms, the users' part marked DEADLINE_EXCEEDED (the service did not
    # exceed its own timeout; the caller's budget ran out).
    gateway = start()
    faults.set_faults("users", latency_ms=800)
    reply = await post(gateway, '{ product(id: "p1") { id } user(id: "u1") { id } }',
                       headers={"X-Request-Timeout-Ms": "200"})
    assert 0.2 <= reply.elapsed < 0.2 + MARGIN_S, reply.elapsed
    assert reply.body["data"] == {"product": {"id": "p1"}, "user": None}
    assert reply.codes() == ["DEADLINE_EXCEEDED"]
    assert reply.body["errors"][0]["extensions"]["service"] == "users"
    # A longer deadline than the setting is not granted; nonsense is refused.
    slow = await post(gateway, '{ user(id: "u1") { id } }',
                      headers={"X-Request-Timeout-Ms": "60000"})
    assert "errors" not in slow.body and slow.elapsed < 2.0 + MARGIN_S
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
    assert reply.elapsed < 0.3 + MARGIN_S, reply.elapsed
    categories = reply.body["data"]["categories"]
    assert len(categories) == 50
    listed = faults.stats("catalog")["requests"]["GET /products"]
    assert 1 <= listed <= 6, listed  # 300 ms / 50 ms, less the categories call
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
    for uid, hasty_first in (("u31", True), ("u32", False)):
        hasty = post(gateway, query % uid, headers={"X-Request-Timeout-Ms": "150"})
        patient = post(gateway, query % uid)
        if hasty_first:
            fast = asyncio.ensure_future(hasty)
            await asyncio.sleep(0.02)
            slow = asyncio.ensure_future(patient)
        else:
            slow = asyncio.ensure_future(patient)
            await asyncio.sleep(0.02)
            fast = asyncio.ensure_future(hasty)
        quick, full = await fast, await slow
        assert quick.elapsed < 0.15 + MARGIN_S, (uid, quick.elapsed)
        assert quick.codes() == ["DEADLINE_EXCEEDED"], quick.body
        assert "errors" not in full.body and full.body["data"]["user"]["id"] == uid, full.body
