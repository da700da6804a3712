"""A replica cut off from Redis (its connections go through a relay that is stopped with
SIGSTOP: a partition of that replica alone) cannot tell the others what its writes evicted.
It holds those evictions, reads around its own cache meanwhile, and sends them once Redis
answers again (issue 16, point 2):
- a mutation waits for that, up to its deadline, so that the caller's next read on the other
  replica still reflects it; past its deadline it answers, and says so;
- a change event is answered 503, so that its service delivers it again.
Replica b reaches Redis directly throughout, and keeps its lease."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.cache.conftest import Query, wait_for
from tests.gateway.test_events import post, signed
from tests.harness import (
    Gateway,
    Process,
    Services,
    free_port,
    http,
    metric_total,
    spawn,
    start_gateway,
    start_redis,
    start_services,
)

REVIEWS = 'query($id: ID!) { product(id: $id) { reviews(first: 50) { id } } }'
NAME = 'query($id: ID!) { product(id: $id) { name } }'
ADD = """mutation($input: AddReviewInput!) { addReview(input: $input) {
  review { id } errors { code } } }"""


@dataclass
class Partitioned:
    services: Services
    relay: Process  # replica a's only way to Redis
    a: Gateway
    b: Gateway

    def cut(self) -> None:
        os.kill(self.relay.proc.pid, signal.SIGSTOP)

    def heal(self) -> None:
        os.kill(self.relay.proc.pid, signal.SIGCONT)

    def held(self) -> float:
        return metric_total(self.a.url, "gateway_cache_evictions_held")


def start_relay(tmp: Path, target: int) -> tuple[Process, int]:
    port = free_port()
    relay = spawn(["-m", "tests.tcprelay", str(port), str(target)], {}, tmp / "relay.log")
    started = time.monotonic()
    while "ready" not in relay.log():
        assert relay.proc.poll() is None and time.monotonic() - started < 10, relay.log()
        time.sleep(0.01)
    return relay, port


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Partitioned]:
    tmp = tmp_path_factory.mktemp("held")
    redis_server = start_redis(tmp / "redis")
    relay, relay_port = start_relay(tmp, redis_server.port)
    services = start_services(tmp)  # no webhooks: the tests deliver the events themselves
    # a's guard probes every 0.2 s, so that it finds Redis back soon after the heal; its
    # deadline is long enough for a loaded machine to send the held eviction within it.
    a = start_gateway(tmp, services, env={"REDIS_URL": f"redis://127.0.0.1:{relay_port}/0",
                                          "REDIS_BREAKER_OPEN_S": "0.2",
                                          "REQUEST_DEADLINE_S": "10"})
    b = start_gateway(tmp, services, env={"REDIS_URL": redis_server.url})
    pair = Partitioned(services, relay, a, b)
    yield pair
    pair.heal()
    for process in (a, b, services, relay):
        process.stop()
    redis_server.stop()


async def review_ids(query: Query, gateway: Gateway, pid: str) -> list[str]:
    status, _, body = await query(gateway, REVIEWS, {"id": pid})
    assert status == 200 and "errors" not in body, body
    return [r["id"] for r in body["data"]["product"]["reviews"]]


async def add_review(session: aiohttp.ClientSession, gateway: Gateway, pid: str, user: str,
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with session.post(gateway.url + "/graphql", headers={"X-User-Id": user,
                                                                **(headers or {})},
                            json={"query": ADD, "variables": {"input": {
                                "productId": pid, "rating": 4, "body": "Held."}}}) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_a_write_waits_for_redis_then_the_other_replica_reads_it(
        query: Query, partitioned: Partitioned, http_session: aiohttp.ClientSession) -> None:
    pid = "p4101"
    await review_ids(query, partitioned.b, pid)
    await review_ids(query, partitioned.b, pid)  # b has them in memory, under its lease
    partitioned.cut()
    try:
        write = asyncio.create_task(add_review(http_session, partitioned.a, pid, "u41"))
        # a wrote the review, could not reach Redis, and holds what it evicted...
        await wait_for(lambda: asyncio.sleep(0, partitioned.held() >= 1), within=5)
        # ...without answering: the caller would read the old list on b.
        await asyncio.sleep(0.05)
        assert not write.done()
    finally:
        partitioned.heal()
    body = await write
    assert body["data"]["addReview"]["errors"] == [] and "extensions" not in body, body
    # At once, no polling: a answered only once b had evicted the list.
    assert body["data"]["addReview"]["review"]["id"] in await review_ids(
        query, partitioned.b, pid)
    await wait_for(lambda: asyncio.sleep(0, partitioned.held() == 0))


async def test_a_write_past_its_deadline_answers_and_says_its_evictions_are_held(
        query: Query, partitioned: Partitioned, http_session: aiohttp.ClientSession) -> None:
    pid = "p4102"
    await review_ids(query, partitioned.b, pid)
    partitioned.cut()
    try:
        body = await add_review(http_session, partitioned.a, pid, "u42",
                                {"X-Request-Timeout-Ms": "600"})
        # The review is written: the answer has it, and says that the other replicas may
        # not know yet (the README's read-your-writes guarantee holds on this one).
        assert body["data"]["addReview"]["errors"] == [], body
        assert body["extensions"]["cache"] == {"evictionsHeld": True}, body
        assert partitioned.held() >= 1
        # a reads around its cache while it holds an eviction: its answer has the review.
        added = body["data"]["addReview"]["review"]["id"]
        assert added in await review_ids(query, partitioned.a, pid)
    finally:
        partitioned.heal()
    # Once a reaches Redis, it sends what it held: b reads the review.
    async def b_has_it() -> bool:
        return added in await review_ids(query, partitioned.b, pid)

    await wait_for(b_has_it, within=10)
    await wait_for(lambda: asyncio.sleep(0, partitioned.held() == 0))
    assert "held evictions sent: 1 evictions" in partitioned.a.process.log()


async def test_an_event_a_replica_cannot_share_is_refused_for_redelivery(
        query: Query, partitioned: Partitioned, http_session: aiohttp.ClientSession) -> None:
    pid = "p4103"
    _, _, before = await query(partitioned.b, NAME, {"id": pid})
    name = f"Renamed {time.time()}"
    http("PATCH", partitioned.services.url("catalog") + f"/products/{pid}", {"name": name})
    event = orjson.dumps({"type": "Product", "id": pid, "op": "update",
                          "version": time.time_ns(), "at": "2026-12-03T10:00:00Z"})
    partitioned.cut()
    try:
        status, raw = await post(http_session, partitioned.a, event, signed(event))
        # Evicted on a only: not acknowledged, so that the catalog delivers it again.
        assert status == 503, raw
        assert orjson.loads(raw)["error"]["code"] == "UNAVAILABLE"
        # b never heard of it: it still serves the name it had.
        _, _, still = await query(partitioned.b, NAME, {"id": pid})
        assert still == before
    finally:
        partitioned.heal()

    async def redelivered() -> bool:
        return (await post(http_session, partitioned.a, event, signed(event)))[0] == 204

    await wait_for(redelivered, within=10)

    async def b_renamed() -> bool:
        _, _, body = await query(partitioned.b, NAME, {"id": pid})
        return bool(body["data"]["product"]["name"] == name)

    await wait_for(b_renamed)
    # A second delivery of an applied event is acknowledged, and changes nothing.
    assert (await post(http_session, partitioned.a, event, signed(event)))[0] == 204


async def test_past_the_bound_every_generation_is_raised_above_any_used_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, two caches sharing a private Redis, a through the relay. Past
    MAX_HELD_KEYS the held keys are dropped, and sending them bumps every namespace instead,
    to a generation above any a used while it held them: what a stored before, or under a
    generation of its own meanwhile, is never read again (generations never go back)."""
    from app.cache import entity
    from app.cache.entity import EntityCache
    from app.cache.hints import CacheHints
    from app.core import redisclient
    from app.core.redisguard import RedisGuard
    from tests.unit.helpers import SDL, namespace

    monkeypatch.setattr(entity, "MAX_HELD_KEYS", 3)
    server = start_redis(tmp_path / "redis")
    relay, port = start_relay(tmp_path, server.port)
    guards = [RedisGuard(redisclient.connect(f"redis://127.0.0.1:{port}/0"), timeout_s=0.1,
                         open_s=0.1),
              RedisGuard(redisclient.connect(server.url), timeout_s=1.0, open_s=1.0)]
    a, b = (EntityCache(CacheHints(SDL), max_entries=100, redis=guard, lease_s=0.4)
            for guard in guards)
    try:
        products = namespace(a, "product")
        for cache in (a, b):
            cache.track(["product", "top"])
            await cache.start()
        await wait_for(lambda: asyncio.sleep(0, a.trusted() and b.trusted()))
        assert await a.invalidate(namespaces=["top"])  # shared: generation 1 everywhere
        await wait_for(lambda: asyncio.sleep(0, b.generation("top") == 1))
        os.kill(relay.proc.pid, signal.SIGSTOP)
        try:
            assert not await a.invalidate([(products, "p1"), (products, "p2")])
            assert not await a.invalidate(namespaces=["top"])  # a alone uses 2 now
            assert not await a.invalidate([(products, f"p{i}") for i in range(3, 6)])
            assert not a.trusted() and a._held_everything
            assert b.generation("top") == 1 and b.trusted()
        finally:
            os.kill(relay.proc.pid, signal.SIGCONT)
        await wait_for(lambda: asyncio.sleep(0, not a._held), within=10)
        # Every namespace moved past what a used while cut off, on both replicas.
        assert a.generation("top") >= 3 and a.generation("product") >= 1
        await wait_for(lambda: asyncio.sleep(0, (b.generation("top"), b.generation("product"))
                                             == (a.generation("top"), a.generation("product"))),
                       within=10)
        # a trusts its cache again once its channel is back too (it retries every 2 s).
        await wait_for(lambda: asyncio.sleep(0, a.trusted()), within=10)
    finally:
        for cache in (a, b):
            await cache.close()
        for guard in guards:
            await guard.close()
        relay.stop()
        server.stop()
