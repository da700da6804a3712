"""The Redis client factory and the cluster's key layout, without a server: what REDIS_URL
builds, and that the tags and buckets spread keys over the slots."""

from __future__ import annotations

from collections import Counter

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from app.cache.levels import CLUSTER_BUCKETS, RedisLevel
from app.core import redisclient
from app.core.redisguard import RedisGuard


async def test_the_url_chooses_one_redis_or_a_cluster() -> None:
    single = redisclient.connect("redis://127.0.0.1:6390/3")
    assert isinstance(single, Redis)
    assert single.connection_pool.connection_kwargs["db"] == 3
    cluster = redisclient.connect("redis+cluster://u:secret@10.0.0.5:7000,10.0.0.6:7001")
    assert isinstance(cluster, RedisCluster)
    assert sorted(n.name for n in cluster.startup_nodes) == ["10.0.0.5:7000", "10.0.0.6:7001"]
    assert cluster.connection_kwargs["password"] == "secret"
    assert cluster.retry.get_retries() == redisclient.CLUSTER_RETRIES
    tls = redisclient.connect("rediss+cluster://10.0.0.5:7000")
    assert isinstance(tls, RedisCluster) and tls.connection_kwargs["connection_class"].__name__ \
        == "SSLConnection"
    for client in (single, cluster, tls):
        await client.aclose()


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://127.0.0.1:6379/0", None),
    ("rediss+cluster://a:1,b:2", None),
    ("memcached://a:1", "must be a redis://"),
    ("redis+cluster://a:1/1", "only database 0"),
    ("redis+cluster://a", "not host:port"),
    ("redis+cluster://", "names no cluster node"),
])
def test_a_bad_url_is_named(url: str, problem: str | None) -> None:
    found = redisclient.url_problem(url)
    assert found is None if problem is None else (found is not None and problem in found)


def test_slot_tags_split_the_slots_evenly() -> None:
    for count in (1, 3, CLUSTER_BUCKETS):
        tags = redisclient.slot_tags(count)
        width = 16384 // count
        assert [key_slot(t.encode()) // width for t in tags] == list(range(count))
    assert redisclient.slot_tags(CLUSTER_BUCKETS) == redisclient.slot_tags(CLUSTER_BUCKETS)


async def test_one_redis_keeps_its_key_names_and_a_cluster_tags_them_by_bucket() -> None:
    def level(url: str) -> RedisLevel:
        guard = RedisGuard(redisclient.connect(url), timeout_s=0.1, open_s=1.0)
        return RedisLevel(guard, "gw:1:abc:", "invalidate", "r1")

    single, cluster = level("redis://127.0.0.1:6390/0"), level("redis+cluster://127.0.0.1:7000")
    names = [f"product:0:p{i}" for i in range(2000)]
    assert {single.bucket(n) for n in names} == {0}
    assert single.key(names[0]) == "gw:1:abc:product:0:p0"
    assert single._epoch_key(0) == "gw:1:abc:epoch"
    # The invalidation channel, its members and acknowledgement lists: as they were on one
    # Redis, in one slot on a cluster (the publish and membership scripts need it).
    assert single.bus_key("members") == "gw:1:abc:members"
    bus = {key_slot(cluster.bus_key(n).encode()) for n in ("invalidate", "members", "ack:x")}
    assert len(bus) == 1
    # A cluster: a key shares its slot with its bucket's epoch counter, and the buckets'
    # slots fall evenly over three masters' ranges (as `redis-cli --cluster create` cuts).
    per_master: Counter[int] = Counter()
    for name in names:
        b = cluster.bucket(name)
        tag = cluster._tags[b]
        slot = key_slot(cluster.key(name, tag).encode())
        assert slot == key_slot(cluster._epoch_key(b).encode())
        per_master[min(2, slot * 3 // 16384)] += 1
    assert min(per_master.values()) > 0.25 * len(names), per_master
    for each in (single, cluster):
        await each.close()
        await each.redis.close()
