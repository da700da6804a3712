"""Two replicas sharing a private Redis, where the invalidation channel fails for real: a
replica never serves what an invalidation it missed evicted (issue 16 c).

Only replica a receives the services' change events; b learns of them through pub/sub."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from services.seed import Dataset
from tests.cache.conftest import Query
from tests.harness import (
    Gateway,
    RedisServer,
    Services,
    free_port,
    http,
    start_gateway,
    start_redis,
    start_services,
)

PRODUCT = 'query($id: ID!) { product(id: $id) { id name inventory { quantity } } }'


@dataclass
class Pair:
    redis: RedisServer
    services: Services
    a: Gateway
    b: Gateway


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("lease")
    server = start_redis(tmp / "redis")
    port_a = free_port()
    services = start_services(tmp, webhooks=[f"http://127.0.0.1:{port_a}/events"])
    env = {"REDIS_URL": server.url}
    a = start_gateway(tmp, services, port=port_a, env=env)
    b = start_gateway(tmp, services, env=env)
    yield Pair(server, services, a, b)
    for process in (a, b, services):
        process.stop()
    server.stop()


async def name_on(query: Query, gateway: Gateway, pid: str) -> str:
    _, _, body = await query(gateway, PRODUCT, {"id": pid})
    name: str = body["data"]["product"]["name"]
    return name


async def test_a_replica_that_lost_the_channel_never_serves_what_it_missed(
    query: Query, pair: Pair
) -> None:
    pid = "p3500"
    # b holds the product in its memory level (its second read costs no upstream call).
    old = await name_on(query, pair.b, pid)
    pair.services.reset_stats()
    assert await name_on(query, pair.b, pid) == old
    assert pair.services.stats("catalog")["requests"].get("GET /products", 0) == 0
    # The channel drops (every pub/sub connection is closed by Redis), and the product
    # changes meanwhile: a evicts and publishes, b's connection is gone.
    redis.Redis(port=pair.redis.port).client_kill_filter(_type="pubsub")
    new = f"Renamed {time.time()}"
    http("PATCH", pair.services.url("catalog") + f"/products/{pid}", {"name": new})
    started = time.monotonic()
    while await name_on(query, pair.a, pid) != new:
        assert time.monotonic() - started < 5, "replica a never saw the change"
        await asyncio.sleep(0.01)
    # From then on b never answers the old name: it reads around its cache until the
    # channel is back, and then flushes what it held.
    until = time.monotonic() + 3  # past b's reconnection
    while time.monotonic() < until:
        assert await name_on(query, pair.b, pid) == new
        await asyncio.sleep(0.05)
    log = pair.b.process.log()
    assert log.count("invalidation channel lost") == 1, log[-2000:]
    assert log.count("invalidation channel back") == 1, log[-2000:]


async def test_a_callers_write_is_read_on_a_replica_that_was_stalled_during_it(
    query: Query, pair: Pair, dataset: Dataset
) -> None:
    pid = next(p for p, d in dataset.products.items()
               if 3501 <= int(p[1:]) < 3600 and dataset.stock[d["sku"]]["quantity"] >= 10)
    _, _, before = await query(pair.b, PRODUCT, {"id": pid})
    await query(pair.b, PRODUCT, {"id": pid})  # held in b's memory level
    quantity = before["data"]["product"]["inventory"]["quantity"]
    os.kill(pair.b.process.proc.pid, signal.SIGSTOP)
    try:
        # Redis drops b's channel while b is stopped: b cannot know, and the publication
        # does not count it. a evicts, publishes, and waits for every live member's
        # acknowledgement up to the lease: b never gives it, and has lost its lease when a
        # answers.
        redis.Redis(port=pair.redis.port).client_kill_filter(_type="pubsub")
        _, _, placed = await query(pair.a, """mutation($p: ID!, $k: String!) {
            placeOrder(input: {items: [{productId: $p, quantity: 3}], idempotencyKey: $k}) {
              order { id } errors { code } } }""", {"p": pid, "k": f"l-{time.time()}"},
            user="u35")
        assert placed["data"]["placeOrder"]["errors"] == [], placed
    finally:
        os.kill(pair.b.process.proc.pid, signal.SIGCONT)
    # The caller's next read goes to b, which may serve it before it reads the channel.
    _, _, after = await query(pair.b, PRODUCT, {"id": pid})
    assert after["data"]["product"]["inventory"]["quantity"] == quantity - 3
