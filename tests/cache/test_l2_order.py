"""The shared level's write rule, on one Redis and on a Redis Cluster: a fetch's result is
stored only where nothing newer stands, a tombstone of a later change or the value of a
later fetch (app/cache/levels.py, `_WRITE`)."""

from __future__ import annotations

import uuid

from app.cache.levels import RedisLevel, stored_value
from app.core import redisclient
from app.core.redisguard import RedisGuard


async def test_a_slow_fetch_never_replaces_the_value_fetched_after_the_change(
        shared_redis_url: str) -> None:
    guard = RedisGuard(redisclient.connect(shared_redis_url), timeout_s=1.0, open_s=1.0)
    level = RedisLevel(guard, f"test-{uuid.uuid4().hex[:8]}:", "invalidate", "r1")
    await guard.start()
    try:
        _, slow = await level.read(["k"])  # a fetch starts: the old value upstream
        await level.invalidate(["k"], 60_000)  # the change, committed and evicted
        _, fast = await level.read(["k"])  # a fetch after the change: the new value
        await level.write([("k", b'"new"', 60_000)], fast)
        await level.write([("k", b'"old"', 60_000)], slow)  # the slow one ends last
        values, _ = await level.read(["k"])
        assert stored_value(values[0]) == b'"new"'
        # A fetch from the same epoch as the stored value, or later, may replace it.
        _, later = await level.read(["k"])
        await level.write([("k", b'"newer"', 60_000)], later)
        values, _ = await level.read(["k"])
        assert stored_value(values[0]) == b'"newer"'
        # A tombstone still stops a fetch that started before it.
        await level.invalidate(["k"], 60_000)
        await level.write([("k", b'"stale"', 60_000)], later)
        values, _ = await level.read(["k"])
        assert stored_value(values[0]) is None
    finally:
        await level.close()
        await guard.close()
