"""A Redis Cluster master dies (SIGKILL) under two gateway replicas: during the failover no
request fails, the rate limit over-admits by at most one window's quota, and once a replica
has taken over, the cache, invalidation across replicas, read-your-writes and the shared
rate limit work again, on the promoted node."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.crc import key_slot

from app.cache.entity import FORMAT
from services.seed import Dataset
from tests.harness import (
    Gateway,
    RedisClusterServers,
    Services,
    free_port,
    http,
    start_gateway,
    start_redis_cluster,
    start_services,
    token,
)

PRODUCT = 'query($id: ID!) { product(id: $id) { id name price { amount } } }'
CHEAP = "{ topProducts(first: 3) { id } }"  # cost 3 (3 products; ids cost nothing)
QUOTA = 30  # per window, for the limited clients: 10 CHEAP requests
LIMITS = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_ANONYMOUS": str(QUOTA),
          "RATE_LIMIT_AUTHENTICATED": str(QUOTA), "RATE_LIMIT_GOLD": "10000000",
          "RATE_LIMIT_WINDOW_S": "600",  # refills 0.05 a second: nothing within the test
          "MAX_QUERY_COST": str(QUOTA)}


@dataclass
class Failover:
    cluster: RedisClusterServers
    services: Services
    a: Gateway  # receives the services' change events
    b: Gateway
    prefix: str


@pytest.fixture
def failover(tmp_path: Path) -> Iterator[Failover]:
    """A cluster of its own (this test kills one of its nodes), services, two replicas."""
    cluster = start_redis_cluster(tmp_path / "cluster")
    port_a = free_port()
    services = start_services(tmp_path, webhooks=[f"http://127.0.0.1:{port_a}/events"])
    prefix = f"fo-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": cluster.url, "REDIS_PREFIX": prefix, **LIMITS}
    a = start_gateway(tmp_path, services, port=port_a, env=env)
    b = start_gateway(tmp_path, services, env=env)
    yield Failover(cluster, services, a, b, prefix)
    for process in (a, b, services):
        process.stop()
    cluster.stop()


def on_node(cluster: RedisClusterServers, port: int, prefix: str, name: str) -> str:
    """A client id whose rate-limit bucket lives on the master at `port`."""
    for n in range(10_000):
        candidate = f"{name}{n}"
        if cluster.master_of(f"{prefix}:rl:authenticated:{candidate}") == port:
            return candidate
    raise LookupError(port)


async def test_a_master_killed_under_two_replicas(
    failover: Failover, http_session: aiohttp.ClientSession, dataset: Dataset
) -> None:
    cluster, a, b = failover.cluster, failover.a, failover.b
    channel_slot = key_slot(b"i")  # the invalidation channel's hash tag (app/cache/levels.py)
    victim = cluster.master_of_slot(channel_slot)
    # The master to kill holds the invalidation channel, a third of the cache's buckets and
    # the limited client's bucket.
    limited = on_node(cluster, victim, failover.prefix, "x")
    reader = {"Authorization": f"Bearer {token('reader', 'read:catalog', tier='gold')}"}
    spender = {"Authorization": f"Bearer {token(limited, 'read:catalog')}"}

    async def post(gateway: Gateway, document: str, headers: dict[str, str],
                   variables: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        async with http_session.post(gateway.url + "/graphql", headers=headers,
                                     json={"query": document, "variables": variables}) as r:
            return r.status, await r.json(content_type=None)

    failures: list[tuple[str, int, object]] = []
    admitted: list[str] = []  # the phase of each request of the limited client let through

    async def round_(i: int, phase: str) -> None:
        gateway = a if i % 2 == 0 else b
        pid = f"p{3600 + i % 40}"  # 40 products, read again and again: cache hits and misses
        status, body = await post(gateway, PRODUCT, reader, {"id": pid})
        if status != 200 or body.get("errors") or body["data"]["product"]["id"] != pid:
            failures.append((phase, status, body))
        status, body = await post(gateway, CHEAP, spender)
        if status == 200 and not body.get("errors"):
            admitted.append(phase)
        elif status != 429 or [e["extensions"]["code"] for e in body["errors"]] != [
                "RATE_LIMITED"]:
            failures.append((phase, status, body))

    for i in range(4):  # 4 x 3 of the 30 spent, through both replicas
        await round_(i, "before")
    assert admitted == ["before"] * 4 and not failures

    cluster.kill(victim)

    def promoted() -> bool:
        try:
            return cluster.master_of_slot(channel_slot) != victim and cluster.healthy()
        except LookupError:
            return False

    i = 4
    deadline = time.monotonic() + 30
    while not promoted():
        await round_(i, "failover")
        i += 1
        assert time.monotonic() < deadline, "no replica took over"
    during = i - 4
    for _ in range(16):
        await round_(i, "after")
        i += 1

    # No request failed, before, during or after the failover.
    assert failures == [], failures[:3]
    assert during >= 1  # requests ran while the slots had no master
    # The limited client: its quota (10 requests), and at most one quota more.
    assert QUOTA // 3 <= len(admitted) <= 2 * QUOTA // 3, admitted

    # After the failover: each replica's cache finds Redis again (a read of an entry not in
    # its memory goes to Redis; evictions are shared only once it has) ...
    for n, gateway in enumerate((a, b)):
        deadline = time.monotonic() + 20
        while "redis available again" not in gateway.process.log():
            assert time.monotonic() < deadline, "the cache never found Redis again"
            status, body = await post(gateway, PRODUCT, reader, {"id": f"p{3800 + n * 100 + i}"})
            assert status == 200 and not body.get("errors"), body
            i += 1
            await asyncio.sleep(0.05)
    # ... both replicas subscribe again, on the promoted master ...
    new_master = cluster.master_of_slot(channel_slot)
    channel = f"{failover.prefix}:{FORMAT}:"  # the channel's name ends in {i}invalidate
    deadline = time.monotonic() + 20
    while True:
        counts = cluster.client(new_master).execute_command("PUBSUB", "SHARDCHANNELS")
        names = [c.decode() for c in counts if c.decode().startswith(channel)]
        subscribers = (cluster.client(new_master).execute_command(
            "PUBSUB", "SHARDNUMSUB", names[0])[1] if names else 0)
        if subscribers == 2:
            break
        assert time.monotonic() < deadline, "the replicas did not subscribe again"
        await asyncio.sleep(0.05)

    # ... an event that reaches replica a evicts on replica b too ...
    pid = "p3700"
    await post(b, PRODUCT, reader, {"id": pid})
    name = f"Renamed {time.time()}"
    http("PATCH", failover.services.url("catalog") + f"/products/{pid}", {"name": name})
    deadline = time.monotonic() + 5
    while (await post(b, PRODUCT, reader, {"id": pid}))[1]["data"]["product"]["name"] != name:
        assert time.monotonic() < deadline, "replica b never saw the change"

    # ... a write through a is read on b as soon as it is answered ...
    sku_pid = next(p for p, d in dataset.products.items()
                   if int(p[1:]) > 4700 and dataset.stock[d["sku"]]["quantity"] >= 10)
    stock = 'query($id: ID!) { product(id: $id) { inventory { quantity } } }'
    buyer = {"X-User-Id": "u62"}
    _, before = await post(b, stock, buyer, {"id": sku_pid})
    _, placed = await post(a, """mutation($p: ID!, $k: String!) {
        placeOrder(input: {items: [{productId: $p, quantity: 2}], idempotencyKey: $k}) {
          order { id } errors { code } } }""", buyer, {"p": sku_pid, "k": f"k-{time.time()}"})
    assert placed["data"]["placeOrder"]["errors"] == [], placed
    _, after = await post(b, stock, buyer, {"id": sku_pid})
    assert after["data"]["product"]["inventory"]["quantity"] == (
        before["data"]["product"]["inventory"]["quantity"] - 2)

    # ... and a fresh client's bucket, on the promoted master, is shared exactly again.
    fresh = on_node(cluster, new_master, failover.prefix, "y")
    headers = {"Authorization": f"Bearer {token(fresh, 'read:catalog')}"}
    statuses = [(await post(a if n % 2 else b, CHEAP, headers))[0] for n in range(12)]
    assert statuses == [200] * 10 + [429] * 2

    # The failover reached each replica's Redis guard, once: every part took its fallback
    # (the limiter its own buckets, the cache the upstreams) until its probe found every
    # master answering, the promoted one included; a probe that found only some would
    # have closed the breaker too early, and the next operation would have opened it again.
    for gateway in (a, b):
        assert gateway.process.log().count("redis unavailable") == 1
