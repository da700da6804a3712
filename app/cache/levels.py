"""The entity cache's two storage levels.

L1 is in process: a bounded LRU read synchronously, because every warm lookup passes through
it (aiocache's memory backend is unbounded, arms a timer per key and wraps each call in
`wait_for`). L2 is Redis (one, or a cluster: `app.core.redisclient`), shared by every
replica; its client also runs the two scripts that make invalidation race-free and carries
pub/sub.

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
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from app.core import redisclient
from app.core.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("gateway.cache")

TOMBSTONE = b"T:"

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
# KEYS[1]: a hash of versions; ARGV: field, version. 1 when the version is new.
_ACCEPT_VERSION = """
local seen = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > seen then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
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

    def __len__(self) -> int:
        return len(self._data)


Epochs = dict[int, int]  # bucket -> the epoch a fetch started at; {}: unknown (Redis down)
# A batch costs one command per bucket it touches: more buckets spread the cache over more
# masters, evenly, and cost more per batch (a 100-key read, bench/RESULTS.md: 0.8 ms with
# 8, 0.9 ms with 16, 1.2 ms with 32, 2.3 ms with 128). With 16, each of 3 masters holds 5
# or 6 buckets, and a cluster of up to 16 masters gets a share.
CLUSTER_BUCKETS = 16


class RedisLevel:
    """Redis as the shared level. Any Redis failure marks it down: calls then return at once
    as misses (the caller goes upstream) until a retry some seconds later succeeds, and the
    outage is logged once, not per request."""

    RETRY_AFTER_S = 2.0

    def __init__(self, url: str, prefix: str, channel: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._now = clock.monotonic
        self.prefix = prefix
        self.channel = channel
        self.client = redisclient.connect(url, connect_timeout=1)
        cluster = redisclient.is_cluster(url)
        # A cluster spreads the buckets over its masters (see the module's docstring); one
        # Redis keeps one bucket and the key names it always had. Changing the count renames
        # the keys, like a new FORMAT.
        self._tags = redisclient.slot_tags(CLUSTER_BUCKETS) if cluster else [""]
        # What is used together shares a slot on a cluster: the namespace generations (read
        # in one MGET), and the invalidation channel with its acknowledgement lists.
        self._gen_tag = "g" if cluster else ""
        self._bus_tag = "i" if cluster else ""
        self._write = self.client.register_script(_WRITE)
        self._invalidate = self.client.register_script(_INVALIDATE)
        self._accept = self.client.register_script(_ACCEPT_VERSION)
        self.down_until = 0.0
        self.is_down = False
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._now() >= self.down_until

    async def _guard(self, what: str, call: Coroutine[Any, Any, Any], default: Any) -> Any:
        if not self.up:
            call.close()
            return default
        try:
            result = await call
        except Exception as err:  # any Redis failure degrades, never fails a request
            if not self.is_down:
                log.warning("redis unavailable (%s: %s): serving from upstreams", what, err)
                self.is_down = True
            self.down_until = self._now() + self.RETRY_AFTER_S
            return default
        if self.is_down:
            log.warning("redis available again")
            self.is_down = False
        return result

    def key(self, name: str, tag: str = "") -> str:
        return f"{self.prefix}{redisclient.tagged(tag, name) if tag else name}"

    def bus_key(self, name: str) -> str:
        """The invalidation channel, or an acknowledgement list (one slot on a cluster)."""
        return self.key(name, self._bus_tag)

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

        return await self._guard("read", go(), ([None] * len(keys), {}))

    async def epochs(self, keys: list[str]) -> Epochs:
        """The current epochs of `keys`' buckets (what a refresh notes before it fetches)."""
        async def go() -> Epochs:
            buckets = sorted(self._by_bucket(keys))
            replies = await redisclient.mget_groups(
                self.client, [[self._epoch_key(b)] for b in buckets])
            return {b: int(reply[0] or 0) for b, reply in zip(buckets, replies, strict=True)}

        return await self._guard("read", go(), {}) if keys else {}

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
            await self._guard("write", redisclient.eval_groups(self.client, self._write, calls),
                              None)

    async def invalidate(self, keys: list[str], tombstone_ms: int) -> None:
        calls = [([self._epoch_key(b), *(self.key(keys[i], self._tags[b]) for i in members)],
                  [tombstone_ms])
                 for b, members in self._by_bucket(keys).items()]
        if calls:
            await self._guard("invalidate",
                              redisclient.eval_groups(self.client, self._invalidate, calls), None)

    async def bump(self, names: list[str]) -> dict[str, int]:
        """Increase namespace generations; returns the new values."""
        async def go() -> dict[str, int]:
            async with self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.incr(self.key(f"gen:{name}", self._gen_tag))
                values = await pipe.execute()
            return dict(zip(names, map(int, values), strict=True))

        return await self._guard("bump", go(), {})

    async def generations(self, names: list[str]) -> dict[str, int]:
        async def go() -> dict[str, int]:
            values = await self.client.mget([self.key(f"gen:{n}", self._gen_tag) for n in names])
            return {n: int(v) for n, v in zip(names, values, strict=True) if v is not None}

        return await self._guard("generations", go(), {})

    async def accept_version(self, field: str, version: int) -> bool | None:
        """True when `version` is newer than any seen for `field`; None when Redis is down."""
        result = await self._guard(
            "version", self._accept(keys=[self.key("versions")], args=[field, version]), None)
        return None if result is None else bool(result)

    async def publish(self, message: bytes, ack: str | None = None,
                      wait_s: float = 0.0) -> int:
        """Publish `message`; with `ack`, wait up to `wait_s` until every other subscriber
        has acknowledged it. Returns how many acknowledged."""
        receivers = await self._guard(
            "publish", redisclient.publish(self.client, self.bus_key(self.channel), message), 0)
        if ack is None or receivers <= 1:
            return 0
        acked = 0
        deadline = self._now() + wait_s
        while acked < receivers - 1:  # the publisher is subscribed too, and does not ack
            left = deadline - self._now()
            if left <= 0:
                break
            got = await self._guard("ack", self._blpop(self.bus_key(ack), left), None)
            if got is None:
                break
            acked += 1
        return acked

    async def _blpop(self, key: str, wait_s: float) -> Any:
        return await self.client.blpop([key], timeout=wait_s)

    def listen(self, handle: Callable[[bytes], str | None]) -> None:
        self._task = asyncio.create_task(self._listen(handle))

    async def _listen(self, handle: Callable[[bytes], str | None]) -> None:
        # Reconnects for as long as the process lives: a replica that lost Redis for a while
        # receives invalidations again once it is back.
        while True:
            try:
                async with redisclient.subscription(self.client,
                                                    self.bus_key(self.channel)) as messages:
                    async for data in messages:
                        ack = handle(data)
                        if ack is not None:
                            key = self.bus_key(ack)
                            async with self.client.pipeline(transaction=False) as pipe:
                                pipe.rpush(key, 1)
                                pipe.expire(key, 10)
                                await pipe.execute()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.debug("pub/sub interrupted: %s", err)
                await self.clock.sleep(self.RETRY_AFTER_S)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.client.aclose()
