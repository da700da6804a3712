"""The entity cache's two storage levels.

L1 is in process: a bounded LRU read synchronously, because every warm lookup passes through
it (aiocache's memory backend is unbounded, arms a timer per key and wraps each call in
`wait_for`). L2 is Redis, shared by every replica, through the process's Redis guard
(`app.core.redisguard`: a timeout, a breaker, one client); the same client runs the scripts
that make invalidation race-free and carries pub/sub. (aiocache's RedisCache was used only
to build that client: its get/set cannot run the scripts, pipelines or pub/sub L2 is made
of, and its per-call timeout would be a second, disagreeing one beside the guard's.)
While Redis is down a read or a write answers its fallback at once (a miss: the caller goes
upstream; no write; no shared version: the caller keeps its own). An eviction (tombstones,
generations, the message to the other replicas) raises instead: its caller keeps it and
sends it once Redis is back (`EntityCache.invalidate`).

The client is one Redis or a Redis Cluster (`app.core.redisclient`); on a cluster, what a
script or a command uses together shares a hash tag: a cache bucket's keys and its epoch
(below), the namespace generations, and the invalidation channel with its set of members
and its acknowledgement lists (the `_PUBLISH` and `_BEAT` scripts run in that one slot,
where the channel is a shard channel: SPUBLISH).

Race-freedom: every invalidation takes a new epoch (a counter in Redis) and leaves a
tombstone with it. A fetch notes the epoch before it asks the upstream, and its result is
written only where no tombstone newer than that epoch stands, checked atomically in Redis.

Epochs are per bucket. Every key belongs to one bucket (a hash of its name), and each bucket
has its own epoch counter; a key's tombstones carry its bucket's epoch, and a fetch notes
the epochs of its keys' buckets, read in the same command as the keys. One Redis has one
bucket: one counter, `epoch`, and the keys as they always were. A cluster has
CLUSTER_BUCKETS, each a hash tag spread evenly over the slots, so the cache spreads over the
masters while a bucket's keys and its counter share a slot, as the scripts require. The
argument for race-freedom holds per bucket, because nothing compares epochs of two buckets:
- a key and its bucket's counter live in one slot, so the scripts that read and write them
  run atomically on one node, in one order;
- an invalidation of k increments k's bucket counter to e and sets k's tombstone to e in one
  script; a fetch of k notes the counter c before it asks the upstream (in the MGET that
  found k missing, or alone for a background refresh);
- if the invalidation ran after that MGET, then e > c and the fetch's write, which checks
  k's tombstone in the same slot, skips k; if it ran before, the fetch began after the
  change was committed (an invalidation follows the commit), and may store its result.
Invalidations of other keys in the bucket raise the counter without a tombstone on k, so
they cost k nothing; a shared counter only saves reading one counter per key.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from app.cache.subscription import Lease, follow
from app.core import redisclient
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.redisguard import RedisGuard

log = logging.getLogger("gateway.cache")
T = TypeVar("T")

TOMBSTONE = b"T:"


def stored_value(raw: bytes | None) -> bytes | None:
    """What a fetch stored under a key read from Redis (`_WRITE`'s format), without the
    epoch it started at; None for a tombstone or nothing."""
    if raw is None or raw.startswith(TOMBSTONE):
        return None
    return raw[raw.index(b":") + 1:]

MISSING: Any = object()  # a guarded read's answer when Redis is down

# KEYS: value keys. ARGV[1]: the epoch the fetch started at; then (value, ttl ms) pairs.
# A value is stored as '<epoch its fetch started at>:<value>', a tombstone as 'T:<epoch>'.
# Neither is overwritten by a fetch that started before it: a tombstone means the key
# changed since, and a value from a later fetch may be of that change (a slow fetch that
# the tombstone stopped must not replace what came after it).
_WRITE = """
local started = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local at = -1
  if current then
    if string.sub(current, 1, 2) == 'T:' then
      at = tonumber(string.sub(current, 3))
    else
      local sep = string.find(current, ':', 1, true)
      at = sep and tonumber(string.sub(current, 1, sep - 1)) or -1
    end
  end
  if not (at and at > started) then
    redis.call('SET', key, ARGV[1] .. ':' .. ARGV[2 * i], 'PX', ARGV[2 * i + 1])
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
# KEYS: namespace generations. ARGV: per key, the least value it must take (what the writer
# itself may have used, plus one): generations never go back, on any replica.
_BUMP = """
local values = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('INCR', key)
  local floor = tonumber(ARGV[i])
  if v < floor then
    redis.call('SET', key, floor)
    v = floor
  end
  values[i] = v
end
return values
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
# KEYS[1]: the set of members, KEYS[2]: the channel (a key for a cluster's routing: the
# same slot); ARGV: the publishing command (PUBLISH, or SPUBLISH on a cluster), message.
# The members alive when published.
_PUBLISH = """
redis.call(ARGV[1], KEYS[2], ARGV[2])
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


Epochs = dict[int, int]  # bucket -> the epoch a fetch started at; {}: unknown (Redis down)
# A batch costs one command per bucket it touches: more buckets spread the cache over more
# masters, evenly, and cost more per batch (a 100-key read, bench/RESULTS.md: 0.8 ms with
# 8, 0.9 ms with 16, 1.2 ms with 32, 2.3 ms with 128). With 16, each of 3 masters holds 5
# or 6 buckets, and a cluster of up to 16 masters gets a share.
CLUSTER_BUCKETS = 16


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
        cluster = redisclient.is_cluster_client(self.client)
        # A cluster spreads the buckets over its masters (see the module's docstring); one
        # Redis keeps one bucket and the key names it always had. Changing the count renames
        # the keys, like a new FORMAT.
        self._tags = redisclient.slot_tags(CLUSTER_BUCKETS) if cluster else [""]
        # What is used together shares a slot on a cluster: the namespace generations (read
        # in one MGET), and the invalidation channel with its members and acknowledgement
        # lists (one script).
        self._gen_tag = "g" if cluster else ""
        self._bus_tag = "i" if cluster else ""
        self._publish_command = redisclient.publish_command(self.client)
        self._write = redis.register_script(_WRITE)
        self._invalidate = redis.register_script(_INVALIDATE)
        self._bump = redis.register_script(_BUMP)
        self._record_version = redis.register_script(_RECORD_VERSION)
        self._beat = redis.register_script(_BEAT)
        self._publish = redis.register_script(_PUBLISH)
        self._task: asyncio.Task[None] | None = None

    async def _guard(self, what: str, call: Callable[[], Awaitable[T]], default: T,
                     wait_s: float = 0.0) -> T:
        return await self.redis.run(what, call, default, wait_s=wait_s)

    def key(self, name: str, tag: str = "") -> str:
        return f"{self.prefix}{redisclient.tagged(tag, name) if tag else name}"

    def bus_key(self, name: str) -> str:
        """The invalidation channel, its set of members or an acknowledgement list (one
        slot on a cluster)."""
        return self.key(name, self._bus_tag)

    def _gen_key(self, name: str) -> str:
        return self.key(f"gen:{name}", self._gen_tag)

    def bucket(self, name: str) -> int:
        return binascii.crc_hqx(name.encode(), 0) % len(self._tags) if len(self._tags) > 1 else 0

    def _epoch_key(self, bucket: int) -> str:
        return self.key("epoch", self._tags[bucket])

    def _by_bucket(self, names: Sequence[str]) -> dict[int, list[int]]:
        """Indexes of `names` per bucket, in order."""
        groups: dict[int, list[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(self.bucket(name), []).append(i)
        return groups

    async def read(self, keys: list[str]) -> tuple[list[bytes | None], Epochs]:
        """Values of `keys` and their buckets' epochs, in one round trip: per bucket, one
        MGET of its keys and its counter (one slot)."""
        async def go() -> tuple[list[bytes | None], Epochs]:
            groups = self._by_bucket(keys)
            replies = await redisclient.mget_groups(self.client, [
                [*(self.key(keys[i], self._tags[b]) for i in members), self._epoch_key(b)]
                for b, members in groups.items()])
            values: list[bytes | None] = [None] * len(keys)
            epochs: Epochs = {}
            for (b, members), reply in zip(groups.items(), replies, strict=True):
                for i, value in zip(members, reply, strict=False):
                    values[i] = value
                epochs[b] = int(reply[-1] or 0)
            return values, epochs

        return await self._guard("read", go, ([None] * len(keys), {}))

    async def epochs(self, keys: list[str]) -> Epochs:
        """The current epochs of `keys`' buckets (what a refresh notes before it fetches)."""
        async def go() -> Epochs:
            buckets = sorted(self._by_bucket(keys))
            replies = await redisclient.mget_groups(
                self.client, [[self._epoch_key(b)] for b in buckets])
            return {b: int(reply[0] or 0) for b, reply in zip(buckets, replies, strict=True)}

        return await self._guard("read", go, {}) if keys else {}

    async def write(self, items: list[tuple[str, bytes, int]], started: Epochs) -> None:
        """Store `items` (key, value, ttl ms), each unless its key was invalidated after the
        epoch its fetch `started` at; items whose bucket's epoch is unknown (Redis was down
        when the fetch started) are not stored."""
        calls = []
        for b, members in self._by_bucket([k for k, _, _ in items]).items():
            if b not in started:
                continue
            args: list[Any] = [started[b]]
            for i in members:
                args += [items[i][1], max(1, items[i][2])]
            calls.append(([self.key(items[i][0], self._tags[b]) for i in members], args))
        if calls:
            await self._guard("write",
                              partial(redisclient.eval_groups, self.client, self._write, calls),
                              None)

    async def invalidate(self, keys: list[str], tombstone_ms: int) -> None:
        """Tombstone `keys` at new epochs. Raises when Redis is down or fails: the caller
        must know whether the other replicas can see the eviction (`EntityCache.invalidate`
        keeps it for later)."""
        calls = [([self._epoch_key(b), *(self.key(keys[i], self._tags[b]) for i in members)],
                  [tombstone_ms])
                 for b, members in self._by_bucket(keys).items()]
        if calls:
            await self.redis.call("invalidate", partial(redisclient.eval_groups, self.client,
                                                        self._invalidate, calls))

    async def bump(self, floors: dict[str, int]) -> dict[str, int]:
        """Increase namespace generations, each to at least its floor; returns the new
        values. Raises as `invalidate` does."""
        names = sorted(floors)
        values = await self.redis.call("bump", partial(
            self._bump, keys=[self._gen_key(n) for n in names],
            args=[floors[n] for n in names]))
        return dict(zip(names, map(int, values), strict=True))

    async def generations(self, names: list[str]) -> dict[str, int]:
        async def go() -> dict[str, int]:
            values = await self.client.mget([self._gen_key(n) for n in names])
            return {n: int(v) for n, v in zip(names, values, strict=True) if v is not None}

        return await self._guard("generations", go, {})

    async def load_generations(self, names: list[str]) -> dict[str, int]:
        """As `generations`, but a failure raises (Redis down included): the caller must
        not go on without them."""
        async def go() -> dict[str, int]:
            values = await self.client.mget([self._gen_key(n) for n in names])
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
        has acknowledged it. Returns how many acknowledged. Raises as `invalidate` does when
        the message could not be published (a missing acknowledgement does not raise: the
        member that did not give it loses its lease)."""
        members: list[bytes] = await self.redis.call(
            "publish", partial(self._publish,
                               keys=[self.bus_key("members"), self.bus_key(self.channel)],
                               args=[self._publish_command, message]))
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
                "ack", partial(self.client.blpop, [self.bus_key(ack)], timeout=left), None,
                wait_s=left)
            if got is None:
                break
            acked += 1
        return acked

    def listen(self, handle: Callable[[bytes], str | None], lease: Lease,
               regained: Callable[[], Awaitable[None]],
               beating: Callable[[], object] = lambda: None) -> None:
        """Apply the other replicas' invalidations (`handle` returns the key to acknowledge
        one on), keeping `lease` (app/cache/subscription.py); `beating` is called before
        each membership beat (every quarter of the lease). Its Redis operations go through
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
                await self.redis.call("ack", partial(ack, self.bus_key(acked)))

        async def beat() -> None:
            beating()
            await self.redis.call("membership", partial(
                self._beat, keys=[self.bus_key("members")],
                args=[self.replica, int(lease.seconds * 2000)]))

        self._task = asyncio.create_task(follow(
            lambda: GuardedPubSub(redisclient.channel_pubsub(self.client), self.redis),
            self.bus_key(self.channel),
            on_message, lease, regained, beat, self.clock, self.RETRY_AFTER_S))

    async def close(self) -> None:
        # The client is the process's (the guard's owner closes it).
        if self._task is not None:
            self._task.cancel()


class GuardedPubSub:
    """The subscription connection, for `follow`, through the guard (on a cluster, a shard
    channel's: `redisclient.channel_pubsub`): what it sends is timed out, and raises while
    Redis is down. Its reads wait for messages, with their own timeout;
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
