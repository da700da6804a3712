"""Redis as a dependency like any upstream, against a private redis-server that the test
stops (SIGSTOP), continues, kills and restarts on the same port: no query fails, the rate
limit still answers, APQ registration is refused with its code while known hashes work,
/readyz says degraded, and the log and the metric say each transition once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.harness import Gateway, RedisServer, http, metric_total, start_redis

PRODUCT = "query($id: ID!) { product(id: $id) { id name } }"
APQ_KNOWN = "{ product(id: \"p1\") { id name } }"
APQ_NEW = "{ product(id: \"p2\") { id name } }"
TRANSITION = re.compile(r"redis unavailable|redis available again")


def digest(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def by_hash(query: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest(query)}}


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """Never the shared 127.0.0.1:6379: a redis-server of this test's own."""
    server = start_redis(tmp_path / "redis")
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
    server.stop()


async def post(session: aiohttp.ClientSession, gateway: Gateway, body: dict[str, Any],
               user: str | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"X-User-Id": user} if user else {}
    async with session.post(gateway.url + "/graphql", json=body, headers=headers) as resp:
        headers_ = {k.lower(): v for k, v in resp.headers.items()}
        return resp.status, headers_, await resp.json(content_type=None)


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors") or ()]


def transitions(gateway: Gateway) -> list[str]:
    return TRANSITION.findall(gateway.process.log())


async def until(condition: Callable[[], bool], what: str, within: float = 15.0) -> None:
    """Wait for an event (polling), never for a guessed duration."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"never happened: {what}"
        await asyncio.sleep(0.05)


async def test_a_stalled_then_killed_redis_costs_no_query_and_recovers(
    start: Callable[..., Gateway], http_session: aiohttp.ClientSession,
    private_redis: RedisServer,
) -> None:
    gateway = start(REDIS_URL=private_redis.url, CACHE_ENABLED="true",
                    # PRODUCT costs 1: u7's 20 requests go over its 15.
                    RATE_LIMIT_ENABLED="true", MAX_QUERY_COST="15",
                    RATE_LIMIT_AUTHENTICATED="15", RATE_LIMIT_ANONYMOUS="1000000",
                    RATE_LIMIT_GOLD="1000000")
    ids = iter(range(100, 10_000))

    async def products(n: int) -> None:
        """`n` product queries with ids not read before (each needs the shared cache
        level): every one answers whole."""
        for _ in range(n):
            pid = f"p{next(ids)}"
            status, headers, body = await post(http_session, gateway,
                                               {"query": PRODUCT, "variables": {"id": pid}})
            assert status == 200 and not body.get("errors"), body
            assert body["data"]["product"]["id"] == pid
            assert "ratelimit-remaining" in headers  # the limiter answered

    def ready() -> dict[str, Any]:
        status, _, body = http("GET", gateway.url + "/readyz")
        assert status == 200, body  # Redis down is degraded, never unready
        return body

    def redis_state() -> float:
        return metric_total(gateway.url, "gateway_redis_state")

    # Up: the gauge exists from the start, the known APQ is registered (and in Redis).
    assert redis_state() == 0 and metric_total(gateway.url, "gateway_redis_outages_total") == 0
    await products(3)
    status, _, body = await post(http_session, gateway,
                                 {"query": APQ_KNOWN, "extensions": by_hash(APQ_KNOWN)})
    assert status == 200 and body["data"]["product"]["id"] == "p1"
    assert ready()["redis"] == {"reachable": True, "breaker": "closed"}
    assert transitions(gateway) == []

    # Stalled.
    assert private_redis.process is not None
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    await products(20)
    assert transitions(gateway) == ["redis unavailable"]
    # The rate limit still answers, in process: a user with a small budget is refused.
    answers = [await post(http_session, gateway, {"query": PRODUCT,
                                                  "variables": {"id": "p5"}}, user="u7")
               for _ in range(20)]
    statuses = [a[0] for a in answers]
    assert 429 in statuses and set(statuses[: statuses.index(429)]) == {200}
    refused = answers[statuses.index(429)]
    assert codes(refused[2]) == ["RATE_LIMITED"] and int(refused[1]["retry-after"]) >= 1
    # Persisted queries: a hash this process knows still runs; a new one is refused, both
    # its registration and its lookup, with their own code and a Retry-After.
    status, _, body = await post(http_session, gateway, {"extensions": by_hash(APQ_KNOWN)})
    assert status == 200 and body["data"]["product"]["id"] == "p1"
    for request in ({"query": APQ_NEW, "extensions": by_hash(APQ_NEW)},
                    {"extensions": by_hash(APQ_NEW)}):
        status, headers, body = await post(http_session, gateway, request)
        assert status == 503 and codes(body) == ["PERSISTED_QUERY_UNAVAILABLE"], body
        assert int(headers["retry-after"]) >= 1
    body = ready()
    assert body["status"] == "degraded" and body["redis"]["reachable"] is False
    assert body["redis"]["breaker"] in ("open", "half_open")
    assert redis_state() >= 1 and metric_total(gateway.url, "gateway_redis_outages_total") == 1
    assert transitions(gateway) == ["redis unavailable"]  # once, whatever the traffic

    # Continued: a background probe finds it; said once, and the gauge is back.
    os.kill(private_redis.process.pid, signal.SIGCONT)
    await until(lambda: len(transitions(gateway)) == 2, "recovery after SIGCONT")
    assert redis_state() == 0
    await products(5)
    status, _, body = await post(http_session, gateway,
                                 {"query": APQ_NEW, "extensions": by_hash(APQ_NEW)})
    assert status == 200 and body["data"]["product"]["id"] == "p2"  # registration is back
    await until(lambda: ready()["status"] == "ok", "readiness ok again")  # (memo: 0.25 s)

    # Killed.
    channel_back = gateway.process.log().count("invalidation channel back")
    private_redis.process.kill()
    private_redis.process.wait(10)
    await products(10)
    await until(lambda: len(transitions(gateway)) == 3, "the kill noticed")
    assert redis_state() >= 1

    # Restarted on the same port, empty: the gateway finds it, resubscribes to invalidations
    # and writes the shared cache again.
    private_redis.restart()
    await until(lambda: len(transitions(gateway)) == 4, "recovery after the restart")
    client = redis.Redis(port=private_redis.port)
    try:
        await until(lambda: bool(client.pubsub_channels("gw:*")), "the listener resubscribed")
        # The cache is trusted again once the channel's lease is back (app/cache/subscription)
        await until(lambda: gateway.process.log().count("invalidation channel back")
                    > channel_back, "the invalidation channel back")
        await products(3)
        assert any(b"product" in k for k in client.scan_iter("gw:*"))
    finally:
        client.close()
    assert redis_state() == 0
    assert metric_total(gateway.url, "gateway_redis_outages_total") == 2
    assert transitions(gateway) == ["redis unavailable", "redis available again"] * 2
