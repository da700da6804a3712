"""Rate limits per client, counted in query cost: a token bucket per client (the token's
subject, else the client's address) whose size is its tier's budget per window
(anonymous, authenticated, gold) and which refills continuously.

With REDIS_URL the buckets live in Redis (one, or a cluster: a bucket is one key, so its
script runs on the key's node) and one Lua script reads, refills and spends a bucket
atomically, on Redis's clock, so replicas share them exactly; without it they live in this
process. While Redis is down (its guard, `app.core.redisguard`: a timeout, a breaker; a
cluster's master failing over, too) each replica keeps the limits on its own: per replica,
but limits still; the limiter protects the graph, it must not take it down, nor slow it.

Meanwhile a replica limits from the bucket Redis last reported for the client (not a full
one), and what it lets through is charged to the client's bucket in Redis once Redis answers
again (a debt, which may leave the bucket below zero, down to minus one window's quota). So
an outage over-admits at most what the other replicas' last reports still allowed: with two
replicas, at most one window's quota, and then the bucket pays it back. (Without the two,
each replica would start from a full bucket, and a failover would lose what they spent: two
replicas could admit three quotas in one window.)
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from app.config.settings import Settings
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.redisguard import RedisGuard
from app.security.auth import Viewer

MAX_LOCAL_CLIENTS = 100_000

# KEYS[1]: the bucket. ARGV: capacity, refill per second, cost, debt (what this replica let
# through while Redis was unreachable: charged first, at most down to -capacity).
# Returns: allowed (0/1), tokens left, seconds until full, seconds until `cost` would fit.
SPEND = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or capacity
local ts = tonumber(data[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
tokens = math.max(-capacity, tokens - tonumber(ARGV[4]))
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
local wait = 0
if allowed == 0 then wait = (cost - tokens) / rate end
return {allowed, tostring(tokens), tostring((capacity - tokens) / rate), tostring(wait)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # until the bucket is full again
    retry_after_s: int  # until this request's cost would fit (0 when allowed)

    def headers(self) -> dict[str, str]:
        out = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
               "RateLimit-Reset": str(self.reset_s)}
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after_s)
        return out


class RateLimiter:
    def __init__(self, settings: Settings, redis: RedisGuard | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._now = clock.monotonic  # the in-process buckets' time (Redis keeps its own)
        self.budgets = {"anonymous": settings.rate_limit_anonymous,
                        "authenticated": settings.rate_limit_authenticated,
                        "gold": settings.rate_limit_gold}
        self._redis = redis
        self._spend = redis.register_script(SPEND) if redis is not None else None
        # Per client: (tokens, when), this process's bucket, or Redis's last report of it.
        self._local: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Per client: the cost let through here while Redis was down, not yet charged to it.
        self._debt: OrderedDict[str, int] = OrderedDict()

    async def spend(self, client: str, tier: str, cost: int) -> Decision:
        capacity = self.budgets.get(tier, self.budgets["anonymous"])
        rate = capacity / self.settings.rate_limit_window_s
        cost = max(1, cost)
        local = f"{tier}:{client}"
        if self._redis is not None and self._spend is not None:
            key = f"{self.settings.redis_prefix}:rl:{tier}:{client}"
            spend = self._spend
            debt = self._debt.pop(local, 0)
            spent = await self._redis.run(
                "rate limit", lambda: spend(keys=[key], args=[capacity, rate, cost, debt]),
                None)
            if spent is not None:
                allowed, tokens, full, wait = spent
                self._keep(local, float(tokens))  # where this replica starts if Redis fails
                return _decision(bool(int(allowed)), capacity, float(tokens), float(full),
                                 float(wait))
            # Redis is down: this replica's own bucket meanwhile, from Redis's last report,
            # and what it lets through is owed to Redis.
            decision = self._spend_locally(local, capacity, rate, cost)
            self._owe(local, debt + (cost if decision.allowed else 0))
            return decision
        return self._spend_locally(local, capacity, rate, cost)

    def _keep(self, key: str, tokens: float) -> None:
        self._local[key] = (tokens, self._now())
        self._local.move_to_end(key)
        if len(self._local) > MAX_LOCAL_CLIENTS:
            self._local.popitem(last=False)  # the longest idle: its bucket is full anyway

    def _owe(self, key: str, debt: int) -> None:
        if debt:
            self._debt[key] = debt
            self._debt.move_to_end(key)
            if len(self._debt) > MAX_LOCAL_CLIENTS:
                self._debt.popitem(last=False)

    async def spend_for(self, viewer: Viewer, address: str, cost: int) -> Decision:
        """Charge `cost` to the caller: its token's subject, else its address (an IPv6
        one by its /64, which one host can rotate through)."""
        return await self.spend(viewer.id or client_of(address), viewer.tier, cost)

    def _spend_locally(self, key: str, capacity: int, rate: float, cost: int) -> Decision:
        now = self._now()
        tokens, ts = self._local.pop(key, (float(capacity), now))
        tokens = min(capacity, tokens + max(0.0, now - ts) * rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._keep(key, tokens)
        wait = 0.0 if allowed else (cost - tokens) / rate
        return _decision(allowed, capacity, tokens, (capacity - tokens) / rate, wait)


def _decision(allowed: bool, capacity: int, tokens: float, full_s: float,
              wait_s: float) -> Decision:
    return Decision(allowed, capacity, max(0, math.floor(tokens)), math.ceil(full_s),
                    math.ceil(wait_s))


class RateLimit(SchemaExtension):
    """Spends the operation's cost (computed by app/execution/limits.py, which runs first) from the
    caller's bucket before anything executes; over the limit, nothing runs: RATE_LIMITED,
    and the view answers 429 with Retry-After."""

    def __init__(self, *, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        context = ec.context
        viewer = getattr(context, "viewer", None)
        if ec.result is None and viewer is not None:
            decision = await self.limiter.spend_for(viewer, context.client_address,
                                                    context.cost)
            context.rate_limit = decision
            if not decision.allowed:
                ec.result = rate_limited(decision, context.cost)
        yield


def rate_limited(decision: Decision, cost: int) -> ExecutionResult:
    cost = max(1, cost)
    return ExecutionResult(data=None, errors=[GraphQLError(
        f"Rate limit exceeded: this operation costs {cost}, {decision.remaining} of "
        f"{decision.limit} left; retry in {decision.retry_after_s} s",
        extensions={"code": "RATE_LIMITED", "retryAfter": decision.retry_after_s,
                    "cost": cost})])


def client_of(address: str) -> str:
    if ":" not in address:
        return address
    try:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    except ValueError:
        return address
