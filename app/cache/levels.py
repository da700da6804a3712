"""The entity cache's two storage levels.

L1 is in process: a bounded LRU read synchronously, because every warm lookup passes through
it (aiocache's memory backend is unbounded, arms a timer per key and wraps each call in
`wait_for`). L2 is Redis, shared by every replica, through the process's Redis guard
(`app.core.redisguard`: a timeout, a breaker, one client); the same client runs the scripts
that make invalidation race-free and carries pub/sub. (aiocache's RedisCache was used only
to build that client: its get/set cannot run the scripts, pipelines or pub/sub L2 is made
of, and its per-call timeout would be a second, disagreeing one beside the guard's.)
While Redis is down every L2 operation answers its fallback at once: a miss (the caller
goes upstream), no write, no shared generation or version (the caller keeps its own), no
message to the other replicas.

Race-freedom: every invalidation takes a new epoch (a counter in Redis) and leaves a
tombstone with it. A fetch notes the epoch before it asks the upstream, and its result is
written only where no tombstone newer than that epoch stands, checked atomically in Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from app.cache.subscription import Lease, follow
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.redisguard import RedisGuard

log = logging.getLogger("gateway.cache")
T = TypeVar("T")

TOMBSTONE = b"T:"
MISSING: Any = object()  # a guarded read's answer when Redis is down

# KEYS: value keys. ARGV[1]: the epoch the fetch started at; then (value, ttl ms) pairs.
_WRITE = """
local started = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local stale = current and string.sub(current, 1, 2) == 'T:'
    and tonumber(string.sub(current, 3)) > started
  if not stale then
    redis.call('SET', key, ARGV[2 * i], 'PX', ARGV[2 * i + 1])
  end
end
return 1
"""
# KEYS[1]: the epoch counter, then the keys to invalidate. ARGV[1]: tombstone ttl ms.
_INVALIDATE = """
local epoch = redis.call('INCR', KEYS[1])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], 'T:' .. epoch, 'PX', ARGV[1])
end
return epoch
"""
# KEYS[1]: the set of members (replica -> until when, Redis's ms); ARGV: replica, ms to stay.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return 1
"""
# KEYS[1]: the set of members; ARGV: channel, message. The members alive when published.
_PUBLISH = """
redis.call('PUBLISH', ARGV[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""
# KEYS[1]: an entity's event version; ARGV: version, ttl ms. 1 when the version is new.
# One key per entity, with a ttl: the table does not grow with every entity ever changed.
_RECORD_VERSION = """
local seen = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > seen then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class MemoryLevel:
    """A bounded LRU of (expires_at, value), read and written without awaiting."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str, now: float) -> Any | None:
        found = self._data.get(key)
        if found is None:
            return None
        if found[0] <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return found[1]

    def set(self, key: str, value: Any, expires_at: float) -> None:
        self._data[key] = (expires_at, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class RedisLevel:
    """Redis as the shared level: every operation goes through the guard, which answers its
    fallback while Redis is down (and logs the outage once, not per request)."""

    RETRY_AFTER_S = 2.0

    def __init__(self, redis: RedisGuard, prefix: str, channel: str, replica: str,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._now = clock.monotonic
        self.redis = redis
        self.prefix = prefix
        self.channel = channel
        self.replica = replica
        self.client = redis.client
        self._write = self.client.register_script(_WRITE)
        self._invalidate = self.client.register_script(_INVALIDATE)
        self._record_version = self.client.register_script(_RECORD_VERSION)
        self._beat = self.client.register_script(_BEAT)
        self._publish = self.client.register_script(_PUBLISH)
        self._task: asyncio.Task[None] | None = None

    async def _guard(self, what: str, call: Callable[[], Awaitable[T]], default: T,
                     wait_s: float = 0.0) -> T:
        return await self.redis.run(what, call, default, wait_s=wait_s)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def read(self, keys: list[str]) -> tuple[list[bytes | None], int]:
        """Values of `keys` and the current epoch, in one round trip."""
        async def go() -> tuple[list[bytes | None], int]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.mget([self.key(k) for k in keys])
                pipe.get(self.key("epoch"))
                values, epoch = await pipe.execute()
            return values, int(epoch or 0)

        return await self._guard("read", go, ([None] * len(keys), -1))

    async def write(self, items: list[tuple[str, bytes, int]], started_epoch: int) -> None:
        if started_epoch < 0 or not items:
            return  # Redis was down when the fetch started: its epoch is unknown
        args: list[Any] = [started_epoch]
        for _, value, ttl_ms in items:
            args += [value, max(1, ttl_ms)]
        keys = [self.key(k) for k, _, _ in items]
        await self._guard("write", lambda: self._write(keys=keys, args=args), None)

    async def invalidate(self, keys: list[str], tombstone_ms: int) -> None:
        full = [self.key("epoch"), *(self.key(k) for k in keys)]
        await self._guard("invalidate",
                          lambda: self._invalidate(keys=full, args=[tombstone_ms]), None)

    async def bump(self, names: list[str]) -> dict[str, int]:
        """Increase namespace generations; returns the new values."""
        async def go() -> dict[str, int]:
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.incr(self.key(f"gen:{name}"))
                values = await pipe.execute()
            return dict(zip(names, map(int, values), strict=True))

        return await self._guard("bump", go, {})

    async def generations(self, names: list[str]) -> dict[str, int]:
        async def go() -> dict[str, int]:
            values = await self.client.mget([self.key(f"gen:{n}") for n in names])
            return {n: int(v) for n, v in zip(names, values, strict=True) if v is not None}

        return await self._guard("generations", go, {})

    async def load_generations(self, names: list[str]) -> dict[str, int]:
        """As `generations`, but a failure raises (Redis down included): the caller must
        not go on without them."""
        async def go() -> dict[str, int]:
            values = await self.client.mget([self.key(f"gen:{n}") for n in names])
            return {n: int(v) for n, v in zip(names, values, strict=True) if v is not None}

        return await self.redis.call("generations", go)

    async def latest_version(self, field: str) -> int | None:
        """The latest event version recorded for `field` (-1: none); None when Redis is down."""
        key = self.key(f"ver:{field}")
        raw = await self._guard("version", lambda: self.client.get(key), MISSING)
        return None if raw is MISSING else int(raw or -1)

    async def record_version(self, field: str, version: int, ttl_ms: int) -> bool | None:
        """Record `version` if newer than the one held for `field`; None when Redis is down."""
        result = await self._guard(
            "version",
            lambda: self._record_version(keys=[self.key(f"ver:{field}")],
                                         args=[version, ttl_ms]),
            None)
        return None if result is None else bool(result)

    async def publish(self, message: bytes, ack: str | None = None,
                      wait_s: float = 0.0) -> int:
        """Publish `message`; with `ack`, wait up to `wait_s` until every other live member
        has acknowledged it. Returns how many acknowledged."""
        members: list[bytes] = await self._guard(
            "publish", lambda: self._publish(keys=[self.key("members")],
                                             args=[self.key(self.channel), message]), [])
        others = sum(1 for m in members if m.decode() != self.replica)
        if ack is None or others == 0:
            return 0
        acked = 0
        deadline = self._now() + wait_s
        while acked < others:
            left = deadline - self._now()
            if left <= 0:
                break
            # BLPOP blocks on purpose: the guard's timeout comes on top of its own wait.
            got = await self._guard(
                "ack", partial(self.client.blpop, [self.key(ack)], timeout=left), None,
                wait_s=left)
            if got is None:
                break
            acked += 1
        return acked

    def listen(self, handle: Callable[[bytes], str | None], lease: Lease,
               regained: Callable[[], Awaitable[None]]) -> None:
        """Apply the other replicas' invalidations (`handle` returns the key to acknowledge
        one on), keeping `lease` (app/cache/subscription.py). Its Redis operations go through
        the guard and raise when Redis is down or fails (`RedisGuard.call`): the channel is
        then lost, as when its connection breaks."""
        async def ack(key: str) -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.rpush(key, 1)
                pipe.expire(key, 10)
                await pipe.execute()

        async def on_message(raw: bytes) -> None:
            acked = handle(raw)
            if acked is not None:
                await self.redis.call("ack", partial(ack, self.key(acked)))

        async def beat() -> None:
            await self.redis.call("membership", partial(
                self._beat, keys=[self.key("members")],
                args=[self.replica, int(lease.seconds * 2000)]))

        self._task = asyncio.create_task(follow(
            lambda: GuardedPubSub(self.client.pubsub(), self.redis), self.key(self.channel),
            on_message, lease, regained, beat, self.clock, self.RETRY_AFTER_S))

    async def close(self) -> None:
        # The client is the process's (the guard's owner closes it).
        if self._task is not None:
            self._task.cancel()


class GuardedPubSub:
    """The subscription connection, for `follow`, through the guard: what it sends is timed
    out, and raises while Redis is down. Its reads wait for messages, with their own timeout;
    a silent channel, or its connection dropped (by CLIENT KILL, an idle timeout), is the
    lease's business, not a sign that Redis is down: the other operations say that."""

    def __init__(self, pubsub: Any, redis: RedisGuard) -> None:
        self.pubsub = pubsub
        self.redis = redis

    async def subscribe(self, channel: str) -> None:
        await self.redis.call("subscribe", partial(self.pubsub.subscribe, channel))

    async def ping(self, token: bytes) -> None:
        await self.redis.call("channel ping", partial(self.pubsub.ping, token))

    async def get_message(self, timeout: float) -> Any:  # noqa: ASYNC109 (the PubSub API)
        return await self.pubsub.get_message(timeout=timeout)

    async def aclose(self) -> None:
        await self.redis.clock.wait_for(self.pubsub.aclose(), self.redis.timeout_s)
