"""Rate limits per client and tier, counted in query cost, with the RateLimit headers on
every response; shared by two gateway processes through one Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.harness import Gateway, metric_total, start_redis, token
from tests.security.conftest import Answer, call

# Costs by the IBM cost directives: a product 1, its scalars 0.
CHEAP = "{ topProducts(first: 3) { id } }"  # cost 3
DEARER = "{ topProducts(first: 11) { id name } }"  # cost 11
LIMITED = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_ANONYMOUS": "30",
           "RATE_LIMIT_AUTHENTICATED": "60", "RATE_LIMIT_GOLD": "600",
           "RATE_LIMIT_WINDOW_S": "600",  # refills 0.05/s: nothing refills during a test
           "MAX_QUERY_COST": "30"}


def remaining(answer: Answer) -> int:
    return int(answer.headers["RateLimit-Remaining"])


async def test_a_client_spends_its_tiers_budget_in_query_cost(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = start(**LIMITED)
    first = await call(http_session, gateway, CHEAP)
    assert first.status == 200 and first.headers["RateLimit-Limit"] == "30"
    assert remaining(first) == 27
    dearer = await call(http_session, gateway, DEARER)
    assert remaining(dearer) == 16  # the cost, not the request, is what counts
    answers = [await call(http_session, gateway, CHEAP) for _ in range(6)]
    assert [a.status for a in answers] == [200] * 5 + [429]
    refused = answers[-1]
    assert refused.codes() == ["RATE_LIMITED"] and refused.body["data"] is None
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.body["errors"][0]["extensions"]["retryAfter"] == int(
        refused.headers["Retry-After"])
    assert remaining(refused) == 1 and refused.headers["RateLimit-Reset"]

    # Refusals that reach GraphQL cost the minimum and carry the headers too.
    invalid = await call(http_session, gateway, "{ nope }")  # 1 left: it spends the last
    assert invalid.status == 200 and invalid.codes() == ["GRAPHQL_VALIDATION_FAILED"]
    assert remaining(invalid) == 0
    assert "RateLimit-Limit" in invalid.headers
    # The client's to fix, not the gateway's failure: an SRE's error rate stays clean.
    assert metric_total(gateway.url, "gateway_requests_total", outcome="refused") == 2
    assert metric_total(gateway.url, "gateway_requests_total", outcome="error") == 0

    # Each signed-in client has a bucket of its own, sized by its tier.
    alice = await call(http_session, gateway, CHEAP, token=token("alice", "read:catalog"))
    assert alice.status == 200 and alice.headers["RateLimit-Limit"] == "60"
    gold = await call(http_session, gateway, CHEAP, token=token("goldie", "", tier="gold"))
    assert gold.headers["RateLimit-Limit"] == "600" and remaining(gold) == 597
    assert (await call(http_session, gateway, CHEAP,
                       token=token("bob", "read:catalog"))).status == 200


async def test_the_bucket_refills_over_its_window(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = start(**{**LIMITED, "RATE_LIMIT_WINDOW_S": "2"})  # 30 per 2 s: 15 a second
    answers = [await call(http_session, gateway, CHEAP) for _ in range(11)]
    assert answers[-1].status == 429
    await asyncio.sleep(int(answers[-1].headers["Retry-After"]))
    assert (await call(http_session, gateway, CHEAP)).status == 200


async def test_two_gateways_share_the_limit_through_redis(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession, shared_redis_url: str
) -> None:
    # On one Redis and on a Redis Cluster (a bucket is one key: its script runs on its node).
    shared = {**LIMITED, "REDIS_URL": shared_redis_url,
              "REDIS_PREFIX": f"rl-{uuid.uuid4().hex[:8]}"}
    a, b = start(**shared), start(**shared)
    statuses = []
    for i in range(14):  # alternating: 30 / 3 = 10 fit, across both
        answer = await call(http_session, a if i % 2 == 0 else b, CHEAP)
        statuses.append(answer.status)
    assert statuses == [200] * 10 + [429] * 4
    # Concurrent spending from both is exact too: the script is atomic.
    fresh = {**shared, "REDIS_PREFIX": f"rl-{uuid.uuid4().hex[:8]}"}
    c, d = start(**fresh), start(**fresh)
    answers = await asyncio.gather(*(call(http_session, c if i % 2 else d, CHEAP)
                                     for i in range(24)))
    assert sorted(a.status for a in answers) == [200] * 10 + [429] * 14


async def test_answers_from_the_response_cache_are_charged_too(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = start(**LIMITED, RESPONSE_CACHE="true", CACHE_ENABLED="true")
    answers = [await call(http_session, gateway, CHEAP) for _ in range(12)]
    # The first spends 3, the cached ones 1 each: 30 - 3 - 26 x 1 ... until it runs out.
    assert [remaining(a) for a in answers[:3]] == [27, 26, 25]
    assert all("RateLimit-Limit" in a.headers for a in answers)
    more = [await call(http_session, gateway, CHEAP) for _ in range(20)]
    assert more[-1].status == 429 and more[-1].codes() == ["RATE_LIMITED"]
    # Variables nested past what JSON encoders take are the client's odd input, not a 500.
    deep: object = 1
    for _ in range(600):
        deep = [deep]
    # Its own bucket (a signed-in client), so that only the variables can refuse it.
    answer = await call(http_session, gateway, "query($x: Int) { topProducts(first: $x) { id } }",
                        {"x": deep}, token=token("deep-variables", "read:catalog"))
    assert answer.status == 200 and answer.codes() == ["BAD_USER_INPUT"], answer.body
    assert answer.body["data"] is None
    assert remaining(answer) == 59  # refused before it ran: the minimum cost


async def test_when_redis_fails_each_gateway_keeps_limiting_on_its_own(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    redis = start_redis(tmp_path / "redis")
    try:
        gateway = start(**LIMITED, REDIS_URL=redis.url, CACHE_ENABLED="false")
        assert remaining(await call(http_session, gateway, CHEAP)) == 27  # in Redis
        redis.stop()
        # Redis is gone: the limit is still applied, by this process, never a failure, and
        # from what Redis last said was left (27: nine more), not from a full bucket.
        answers = [await call(http_session, gateway, CHEAP) for _ in range(10)]
        assert [a.status for a in answers] == [200] * 9 + [429]
        assert answers[-1].codes() == ["RATE_LIMITED"]
        # Said once, by Redis's guard, not once per request.
        assert gateway.process.log().count("redis unavailable (rate limit") == 1
        # Redis is back, empty (a restart without persistence, as a failover may lose
        # writes): once the guard's probe has found it, what was let through meanwhile is
        # charged to the new bucket, so of its 30 only 3 are left: one more request, not ten.
        redis.restart()
        started = time.monotonic()
        while "redis available again" not in gateway.process.log():
            assert time.monotonic() - started < 10, "the guard never found Redis again"
            await asyncio.sleep(0.05)
        after = [await call(http_session, gateway, CHEAP) for _ in range(8)]
        assert [a.status for a in after].count(200) == 1, [a.status for a in after]
        assert after[-1].status == 429
    finally:
        redis.stop()


async def test_refusals_before_graphql_carry_the_headers_and_cost_the_minimum(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """400, 401, 405, 413 and 415 each spend 1 of the caller's bucket and say so in the
    RateLimit headers; once the bucket is empty they are 429 with Retry-After."""
    gateway = start(**{**LIMITED, "RATE_LIMIT_ANONYMOUS": "6", "MAX_BODY_BYTES": "2000",
                       "MAX_QUERY_COST": "6"})
    url = gateway.url + "/graphql"
    json_ = {"Content-Type": "application/json"}
    refusals: list[tuple[int, str, dict[str, object]]] = [
        (400, "BAD_REQUEST", {"data": b"{oops", "headers": json_}),
        (401, "UNAUTHENTICATED", {"data": b'{"query": "{ __typename }"}', "headers": {
            **json_, "Authorization": "Bearer not.a.token"}}),
        (413, "PAYLOAD_TOO_LARGE", {"data": b"x" * 5000, "headers": json_}),
        (415, "UNSUPPORTED_MEDIA_TYPE", {"data": b"{ __typename }",
                                         "headers": {"Content-Type": "text/plain"}}),
    ]
    left = 6
    for status, code, kwargs in refusals:
        async with http_session.post(url, **kwargs) as resp:  # type: ignore[arg-type]
            body = await resp.json(content_type=None)
            assert (resp.status, body["errors"][0]["extensions"]["code"]) == (status, code)
            left -= 1
            assert resp.headers["RateLimit-Limit"] == "6", status
            assert int(resp.headers["RateLimit-Remaining"]) == left, status
            assert "RateLimit-Reset" in resp.headers and "Retry-After" not in resp.headers
    async with http_session.get(url, params={"query": "mutation { __typename }"},
                                headers={"Accept": "application/json"}) as resp:
        assert resp.status == 405 and int(resp.headers["RateLimit-Remaining"]) == left - 1
    # A signed-in caller's refusal is charged to its own bucket, not its address's.
    async with http_session.post(url, data=b"{oops", headers={
            **json_, "Authorization": f"Bearer {token('carol', 'read:catalog')}"}) as resp:
        assert resp.status == 400 and resp.headers["RateLimit-Limit"] == "60"
        assert resp.headers["RateLimit-Remaining"] == "59"
    ok = await call(http_session, gateway, "{ __typename }")  # the last token
    assert ok.status == 200 and remaining(ok) == 0
    # Over the limit, a refusal is 429 with Retry-After (a flood of bad requests is limited).
    async with http_session.post(url, data=b"{oops", headers=json_) as resp:
        body = await resp.json(content_type=None)
        assert resp.status == 429 and body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert int(resp.headers["Retry-After"]) >= 1
        assert body["errors"][0]["extensions"]["retryAfter"] == int(resp.headers["Retry-After"])
        assert resp.headers["RateLimit-Remaining"] == "0"


async def test_event_streams_carry_the_headers_too(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """GraphQL over SSE: a refused stream request costs 1 like any refusal; a subscription's
    200 says what its charge (its estimated cost, when it starts) left."""
    gateway = start(**{**LIMITED, "RATE_LIMIT_ANONYMOUS": "10", "MAX_QUERY_COST": "10"})
    url, sse = gateway.url + "/graphql", {"Accept": "text/event-stream"}
    async with http_session.post(url, json={"query": 5}, headers=sse) as resp:
        assert resp.status == 400 and resp.headers["RateLimit-Remaining"] == "9"
    async with http_session.post(url, json={"query": "{ __typename }"}, headers={
            **sse, "Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401 and resp.headers["RateLimit-Remaining"] == "8"
    # productChanged: a product, 1; its reviews(first: 3): 3 more.
    subscription = 'subscription { productChanged(id: "p1") { name reviews(first: 3) { id } } }'
    async with http_session.post(url, json={"query": subscription}, headers=sse) as resp:
        assert resp.status == 200 and resp.headers["RateLimit-Limit"] == "10"
        assert resp.headers["RateLimit-Remaining"] == str(8 - 4)
