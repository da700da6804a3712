"""Idempotency keys kept by the gateway, for a write whose service takes none (`addReview`:
the reviews service's `POST /reviews` has no idempotency support in the contract, and the
gateway must work against any implementation of it).

A key holds one `Claim`: the fingerprint of the write's body, who claimed it and when, and,
once the write is made, its answer. The first request with a key claims it (atomically: in
Redis one script, shared by every replica), makes the write and stores the answer; a repeat
with the same body gets that answer, one with another body a conflict. What the caller does
with a claim that is not its own (wait for it, look for the write it may have made, take it
over) is the mutation's (`resolvers/mutations.py`); this module only keeps claims.

Keys live IDEMPOTENCY_TTL_S. Through Redis (`app.core.redisguard`) when it is configured;
without it, or while it is down, in this process (bounded, least recently claimed first out):
then a repeat sent to another replica is not recognised, which the README says.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.redisguard import RedisGuard

MAX_LOCAL = 100_000  # claims kept in process
_DOWN: Any = object()

# The key's claim, or none: then ARGV[1] is stored with a ttl of ARGV[2] ms.
CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
# Replace the claim ARGV[1] by ARGV[2] (ttl ARGV[3] ms), or delete it when ARGV[2] is empty,
# only if it is still the one held: 1 when done, 0 when another holds the key now.
SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""


@dataclass(frozen=True)
class Claim:
    fingerprint: str  # of the write's body: the same key with another body is a conflict
    owner: str  # who claimed it (a random id per request)
    at: float  # wall time of the claim
    result: Any = None  # the write's answer, once made
    unknown: bool = False  # the write went out and its outcome is not known: it may exist

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @staticmethod
    def decode(raw: bytes | str) -> Claim | None:
        try:
            fields = orjson.loads(raw)
            return Claim(**fields) if isinstance(fields, dict) else None
        except (orjson.JSONDecodeError, TypeError):
            return None


class IdempotencyStore:
    def __init__(self, redis: RedisGuard | None, prefix: str, ttl_s: float,
                 max_local: int = MAX_LOCAL, clock: Clock = SYSTEM_CLOCK) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._redis = redis
        self._prefix = f"{prefix}:idem:"
        self._claim = redis.register_script(CLAIM) if redis is not None else None
        self._swap = redis.register_script(SWAP) if redis is not None else None
        self._local: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # raw, until
        self._max_local = max_local

    def now(self) -> float:
        return self.clock.time()

    async def claim(self, key: str, claim: Claim) -> tuple[Claim, bool]:
        """The claim `key` holds, and whether it is `claim`, just taken; a claim that cannot
        be read (written by another version) counts as this one's conflict."""
        raw = claim.encode()
        held = await self._redis_call(self._claim, key, [raw, self._ttl_ms()])
        if held is _DOWN:
            held = self._local_get(key)
            if held is None:
                self._local_set(key, raw)
        if held is None:
            return claim, True
        return Claim.decode(held) or Claim("?", "?", 0.0), False

    async def replace(self, key: str, old: Claim, new: Claim | None) -> bool:
        """Put `new` (None: nothing) in place of `old`, if `old` is still what `key` holds."""
        old_raw, new_raw = old.encode(), new.encode() if new is not None else b""
        done = await self._redis_call(self._swap, key, [old_raw, new_raw, self._ttl_ms()])
        if done is not _DOWN:
            return bool(done)
        if self._local_get(key) != old_raw:
            return False
        if new is None:
            self._local.pop(key, None)
        else:
            self._local_set(key, new_raw)
        return True

    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def _redis_call(self, script: Any, key: str, args: list[Any]) -> Any:
        if self._redis is None or script is None:
            return _DOWN
        full = self._prefix + key
        return await self._redis.run("idempotency key",
                                     lambda: script(keys=[full], args=args), _DOWN)

    def _local_get(self, key: str) -> bytes | None:
        found = self._local.get(key)
        if found is None:
            return None
        if found[1] <= self.now():
            del self._local[key]
            return None
        return found[0]

    def _local_set(self, key: str, raw: bytes) -> None:
        now = self.now()
        self._local[key] = (raw, now + self.ttl_s)
        self._local.move_to_end(key)
        # Oldest first: every claim has the same ttl.
        while self._local and (len(self._local) > self._max_local
                               or next(iter(self._local.values()))[1] <= now):
            self._local.popitem(last=False)
