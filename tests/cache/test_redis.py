"""Two replicas sharing Redis, one Redis or a Redis Cluster: invalidations reach both, a
write is visible on both as soon as it is answered, what one fetched the other reads from
Redis, and a Redis outage costs cache hits, never a request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from services.seed import Dataset
from tests.cache.conftest import CacheStack, Query, Replicas, upstream_calls
from tests.harness import Gateway, RedisServer, http, start_gateway, start_redis

PRODUCT = 'query($id: ID!) { product(id: $id) { id name } }'


async def test_an_eviction_on_one_replica_reaches_the_other(
    query: Query, replicas: Replicas
) -> None:
    # Only replica a receives the services' events; b learns of them through Redis pub/sub.
    pid = "p3300"
    _, _, before = await query(replicas.b, PRODUCT, {"id": pid})
    await query(replicas.b, PRODUCT, {"id": pid})
    assert upstream_calls(replicas.services, "catalog", "GET /products") == 1  # b's L1 has it
    name = f"Renamed {time.time()}"
    http("PATCH", replicas.services.url("catalog") + f"/products/{pid}", {"name": name})
    started = time.monotonic()
    while True:
        _, _, body = await query(replicas.b, PRODUCT, {"id": pid})
        if body["data"]["product"]["name"] == name:
            break
        assert time.monotonic() - started < 2, "replica b never saw the change"
        await asyncio.sleep(0.005)
    assert before["data"]["product"]["name"] != name


async def test_a_write_is_visible_on_every_replica_when_answered(
    query: Query, replicas: Replicas, dataset: Dataset
) -> None:
    pid = next(p for p, d in dataset.products.items()
               if int(p[1:]) > 4500 and dataset.stock[d["sku"]]["quantity"] >= 10)
    stock = 'query($id: ID!) { product(id: $id) { inventory { quantity } } }'
    orders = "{ me { orders(first: 1) { edges { node { id } } } } }"
    _, _, before = await query(replicas.b, stock, {"id": pid})
    await query(replicas.b, orders, user="u60")
    _, _, placed = await query(replicas.a, """mutation($p: ID!, $k: String!) {
        placeOrder(input: {items: [{productId: $p, quantity: 2}], idempotencyKey: $k}) {
          order { id } errors { code } } }""", {"p": pid, "k": f"k-{time.time()}"}, user="u60")
    order_id = placed["data"]["placeOrder"]["order"]["id"]
    # At once, no polling: a answered only after b had evicted what the order changed.
    _, _, after = await query(replicas.b, stock, {"id": pid})
    assert after["data"]["product"]["inventory"]["quantity"] == (
        before["data"]["product"]["inventory"]["quantity"] - 2)
    _, _, mine = await query(replicas.b, orders, user="u60")
    assert mine["data"]["me"]["orders"]["edges"][0]["node"]["id"] == order_id


async def test_what_one_replica_fetched_the_other_reads_from_redis(
    query: Query, replicas: Replicas
) -> None:
    pids = [f"p{3330 + i}" for i in range(12)]  # in several buckets of a cluster
    for pid in pids:
        await query(replicas.a, PRODUCT, {"id": pid})
    fetched = upstream_calls(replicas.services, "catalog", "GET /products")
    assert fetched == len(pids)
    for pid in pids:
        _, _, body = await query(replicas.b, PRODUCT, {"id": pid})
        assert body["data"]["product"]["id"] == pid
    assert upstream_calls(replicas.services, "catalog", "GET /products") == fetched


async def test_keys_are_namespaced_and_versioned(query: Query, replicas: Replicas) -> None:
    for i in range(30):
        await query(replicas.a, PRODUCT, {"id": f"p{3400 + i}"})
    keys = replicas.keys(f"{replicas.prefix}:*")
    assert keys, "replicas a and b wrote nothing to Redis"
    # prefix : format version : schema hash : [{bucket tag}] namespace : generation : key
    from app.cache.entity import FORMAT

    assert all(k.split(":")[1] == str(FORMAT) and len(k.split(":")[2]) == 10 for k in keys), \
        keys[:5]
    names = [k.split(":", 3)[3] for k in keys]
    if replicas.cluster is None:  # one Redis: the names as they always were
        assert any(n.startswith("product:") for n in names), names[:5]
        assert not any(n.startswith("{") for n in names), names[:5]
        return
    # A cluster: every product entry carries a bucket's tag and shares its slot with that
    # bucket's epoch, and the entries are spread over every master.
    products = [k for k, n in zip(keys, names, strict=True)
                if n.startswith("{") and n.split("}", 1)[1].startswith("product:")]
    assert len(products) >= 30, names[:5]
    for key in products:
        tag = key[key.index("{") + 1:key.index("}")]
        epoch = f"{key[:key.index('{')]}{{{tag}}}epoch"
        assert key_slot(key.encode()) == key_slot(epoch.encode())
    masters = {replicas.cluster.master_of(k) for k in products}
    assert masters == set(replicas.cluster.masters())


async def test_event_versions_in_redis_expire(replicas: Replicas) -> None:
    # One key per entity, with a ttl: the shared table does not grow with every entity ever
    # changed (issue 16 e).
    pid = "p3301"
    http("PATCH", replicas.services.url("catalog") + f"/products/{pid}", {"name": "Versioned"})
    pattern = f"{replicas.prefix}:*ver:Product:{pid}"
    started = time.monotonic()
    while not (keys := replicas.keys(pattern)):
        assert time.monotonic() - started < 5, "the event's version was never recorded"
        await asyncio.sleep(0.01)
    assert 0 < replicas.pttl(keys[0]) <= 3600 * 1000
    assert not replicas.keys(f"{replicas.prefix}:*versions")


@pytest.fixture
def lonely_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis-outage"))
    yield server
    server.stop()


async def test_a_redis_outage_degrades_to_the_upstreams_and_recovers(
    query: Query, cstack: CacheStack, lonely_redis: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gateway: Gateway = start_gateway(tmp_path_factory.mktemp("outage"), cstack.services,
                                     env={"REDIS_URL": lonely_redis.url})
    try:
        _, _, body = await query(gateway, PRODUCT, {"id": "p3301"})
        assert body["data"]["product"]["id"] == "p3301"
        ready = http("GET", gateway.url + "/readyz")[2]
        assert ready["redis"] == {"reachable": True, "breaker": "closed"}
        assert ready["status"] == "ok"
        lonely_redis.stop()
        for i in range(5):  # new ids: each needs the cache's shared level, which is gone
            status, _, body = await query(gateway, PRODUCT, {"id": f"p33{10 + i}"})
            assert status == 200 and "errors" not in body, body
        await asyncio.sleep(0.3)  # readiness probes are reused for 0.25 s
        ready = http("GET", gateway.url + "/readyz")[2]
        assert ready["redis"]["reachable"] is False and ready["status"] == "degraded"
        for i in range(5):
            await query(gateway, PRODUCT, {"id": f"p33{15 + i}"})
        # Said once each, whatever the traffic: the invalidation channel is lost (meanwhile
        # nothing is read from the cache, which may miss invalidations), and Redis is down
        # (its guard: an operation found it so, at the latest /readyz's).
        log = gateway.process.log()
        assert log.count("redis unavailable") == 1
        assert log.count("invalidation channel lost") == 1
        lonely_redis.restart()
        # A background probe finds it again (REDIS_BREAKER_OPEN_S), with no request's help,
        # and the channel follows.
        started = time.monotonic()
        while not all(line in gateway.process.log()
                      for line in ("redis available again", "invalidation channel back")):
            assert time.monotonic() - started < 10, "redis or the channel never came back"
            await asyncio.sleep(0.05)
        for i in range(3):
            await query(gateway, PRODUCT, {"id": f"p33{20 + i}"})
        client = redis.Redis(port=lonely_redis.port)
        assert any(b"product" in k for k in client.scan_iter("gw:*"))
    finally:
        gateway.stop()


async def test_a_write_waits_for_every_replica_to_evict(
    query: Query, replicas: Replicas, dataset: Dataset
) -> None:
    """The protocol behind read-your-writes across replicas: the replica that wrote answers
    only once every subscriber acknowledged the eviction, and waits a bounded time for one
    that never does. A fake replica on the channel acknowledges late, or not at all."""
    import hashlib

    import orjson

    from app.cache.entity import FORMAT
    from app.cache.levels import RedisLevel
    from app.config.settings import Settings
    from app.core import redisclient
    from app.core.redisguard import RedisGuard
    from schema import build_schema

    tag = hashlib.sha256(build_schema().as_str().encode()).hexdigest()[:10]
    # The gateway's own key layout (a cluster's hash tags included), on a client of ours.
    guard = RedisGuard(redisclient.connect(replicas.url), timeout_s=2.0, open_s=1.0)
    level = RedisLevel(guard, f"{replicas.prefix}:{FORMAT}:{tag}:", "invalidate", "fake")
    client = level.client
    delay: dict[str, float | None] = {"s": 0.15}
    pubsub = redisclient.channel_pubsub(client)
    await pubsub.subscribe(level.bus_key("invalidate"))

    async def fake_replica() -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            ack = orjson.loads(message["data"]).get("ack")
            wait = delay["s"]
            if ack and wait is not None:
                await asyncio.sleep(wait)
                await client.rpush(level.bus_key(ack), 1)

    # A member, as replicas keep themselves before each ping: writers wait for members.
    seconds, micros = await client.time()
    await client.zadd(level.bus_key("members"),
                      {"fake": seconds * 1000 + micros // 1000 + 60_000})
    listener = asyncio.create_task(fake_replica())
    pid = next(p for p, d in dataset.products.items()
               if int(p[1:]) > 4600 and dataset.stock[d["sku"]]["quantity"] >= 10)
    place = """mutation($p: ID!, $k: String!) { placeOrder(input: {
        items: [{productId: $p, quantity: 1}], idempotencyKey: $k}) { errors { code } } }"""
    try:
        for late in (0.15, None):
            delay["s"] = late
            started = time.monotonic()
            _, _, body = await query(replicas.a, place, {"p": pid, "k": f"k-{time.time()}"},
                                     user="u61")
            took = time.monotonic() - started
            assert body["data"]["placeOrder"]["errors"] == []
            # The order and its stock line are evicted in one round: one wait of at least
            # `late`, or of the lease when the fake replica never answers (it has lost its
            # lease by then: it would read around its cache).
            lease = Settings().invalidation_lease_ms / 1000
            assert took >= (late if late is not None else lease), took
            assert took < 5
    finally:
        await client.zrem(level.bus_key("members"), "fake")
        listener.cancel()
        await pubsub.aclose()
        await level.close()
        await guard.close()


async def test_a_probe_that_finds_redis_again_drops_the_idle_connections(
    shared_redis_url: str,
) -> None:
    """Pooled connections from before an outage may lead to a Redis that was restarted:
    once the probe has found Redis, the idle ones are closed (on a cluster, every node's),
    and the next operations open new ones."""
    from redis.asyncio.cluster import RedisCluster

    from app.core import redisclient
    from app.core.redisguard import RedisGuard

    guard = RedisGuard(redisclient.connect(shared_redis_url), timeout_s=1.0, open_s=1.0)
    client = guard.client

    def idle_connected() -> int:
        if isinstance(client, RedisCluster):
            return sum(c.is_connected for n in client.get_nodes() for c in n._free)
        return sum(c.is_connected for c in client.connection_pool._available_connections)

    try:
        await guard.start()
        assert await guard.ping()  # a connection to Redis (every master of a cluster)
        assert idle_connected() >= (3 if isinstance(client, RedisCluster) else 1)
        await guard._drop_idle_connections()
        assert idle_connected() == 0
        assert await guard.ping() and guard.up
    finally:
        await guard.close()
