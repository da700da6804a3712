"""Redis as a dependency like any upstream: every Redis operation of the process goes through
one `RedisGuard` (the entity cache's shared level and its invalidation pub/sub, the rate
limiter, persisted queries, /readyz), which gives each the same three things.

- A timeout (REDIS_TIMEOUT_MS). A healthy Redis answers in well under a millisecond, so an
  operation that takes this long counts as Redis being down.
- A circuit breaker (`app.core.breaker`). The first failed or timed-out operation opens it;
  while it is open every operation returns its fallback at once, without touching the
  network, so a stalled Redis costs one timeout, not one per request. Every
  REDIS_BREAKER_OPEN_S a PING probes Redis in the background (one at a time, awaited by no
  request); its success closes the breaker.
- A fallback, which each caller names where it calls: a cache miss, the in-process rate
  limit, an APQ registration refused, "degraded" on /readyz.

The logs say it once per transition (down, then up, at warning), and the observer hears of
every state change (`Observer.redis_changed`: a gauge, and a count of outages).

The guard is handed the client, however it was built (`app.core.redisclient`: one Redis, a
cluster): it only awaits the calls it is given, and asks `redisclient` for a PING (the probe,
/readyz: on a cluster, every master) and to drop idle connections. Any exception a call
raises counts as a Redis failure, not only redis-py's errors: a cluster client mid-failover
also raises RuntimeError or AttributeError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from app.core import redisclient
from app.core.breaker import CircuitBreaker, State
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.observer import NULL_OBSERVER, Observer

log = logging.getLogger("gateway.redis")
T = TypeVar("T")
# Loop turns an operation still gets after its timeout fired: when the event loop itself was
# busy past the timeout (a collector pause, a CPU-heavy request), Redis's answer may already
# be in the socket and only needs reading; a timer that ran first must not call Redis down.
GRACE_TURNS = 3
# How long the process's start waits for the client to be ready (a cluster's slot map and
# command table, the scripts loaded), once.
START_TIMEOUT_S = 2.0


class RedisUnavailable(ConnectionError):
    """`RedisGuard.call` while Redis is down: nothing was sent."""


class RedisGuard:
    """The process's Redis client with its timeout, breaker and probe."""

    def __init__(self, client: Any, *, timeout_s: float, open_s: float,
                 observer: Observer = NULL_OBSERVER, clock: Clock = SYSTEM_CLOCK) -> None:
        self.client = client  # redis.asyncio.Redis or RedisCluster: built by the wiring
        self.timeout_s = timeout_s
        self.open_s = open_s
        self.observer = observer
        self.clock = clock
        # failure_rate 0 with min_calls 1: the first failure opens it. One probe closes it.
        self.breaker = CircuitBreaker(failure_rate=0.0, min_calls=1, window_s=1.0,
                                      open_s=open_s, probes=1, clock=clock)
        self._down_since = 0.0
        self._prober: asyncio.Task[None] | None = None
        self._scripts: list[Any] = []
        self._when_up: list[Callable[[], object]] = []
        observer.redis_changed(int(State.CLOSED), False)  # the gauge exists from the start

    @property
    def up(self) -> bool:
        """Whether operations go to Redis now (the breaker is closed)."""
        return self.breaker.state is State.CLOSED

    @property
    def state(self) -> str:
        """closed, half_open (a probe in flight) or open."""
        return self.breaker.state.name.lower()

    def retry_in(self) -> float:
        """Seconds until the next probe of a Redis that is down (0 when up, or probing)."""
        return 0.0 if self.up else self.breaker.retry_in()

    async def run(self, what: str, call: Callable[[], Awaitable[T]], fallback: T, *,
                  wait_s: float = 0.0) -> T:
        """`call()`'s result, or `fallback` when Redis is down, fails or takes longer than
        the timeout (plus `wait_s`, for a command that blocks on purpose, like BLPOP).
        `what` names the operation in the log line of an outage."""
        if self.breaker.state is not State.CLOSED:
            return fallback
        try:
            return await self.call(what, call, wait_s=wait_s)
        except Exception:  # any failure of Redis degrades; never fails the request
            return fallback

    async def call(self, what: str, call: Callable[[], Awaitable[T]], *,
                   wait_s: float = 0.0) -> T:
        """As `run`, for a caller that has no fallback and must know: raises
        RedisUnavailable while Redis is down, and the failure (TimeoutError included)."""
        if self.breaker.state is not State.CLOSED:
            raise RedisUnavailable(f"{what}: redis is down (retried in {self.retry_in():.1f} s)")
        try:
            result = await self._attempt(call, self.timeout_s + wait_s)
        except Exception as err:
            self.failed(what, err)
            raise
        self.breaker.record(True)
        return result

    def failed(self, what: str, error: BaseException) -> None:
        """An operation failed (in `run` or `call`, or one its caller timed itself)."""
        if self.breaker.state is not State.CLOSED:
            return
        self.breaker.record(False)
        if self.breaker.state is State.CLOSED:
            return
        self._down_since = self.clock.monotonic()
        reason = str(error) or f"no answer within {self.timeout_s * 1000:.0f} ms"
        log.warning("redis unavailable (%s: %s: %s): serving without it, probing every %g s",
                    what, type(error).__name__, reason, self.open_s)
        self.observer.redis_changed(int(self.breaker.state), True)
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())

    def when_up(self, callback: Callable[[], object]) -> None:
        """Call `callback` each time Redis is available again after an outage (the entity
        cache then sends the evictions it could not)."""
        self._when_up.append(callback)

    def register_script(self, source: str) -> Any:
        """A Lua script of the client's (an AsyncScript: run it through `run` or `call`),
        loaded into Redis by `start`."""
        script = self.client.register_script(source)
        self._scripts.append(script)
        return script

    async def start(self) -> None:
        """Before the process serves: the client made ready and the registered scripts
        loaded (`redisclient.prepare`), with a longer wait than an operation's
        (START_TIMEOUT_S); a failure is Redis down, as for any operation."""
        try:
            await self.clock.wait_for(redisclient.prepare(self.client, self._scripts),
                                      START_TIMEOUT_S)
        except Exception as err:
            self.failed("start", err)

    async def ping(self) -> bool:
        """Whether Redis answers a PING now; False at once while it is down."""
        return bool(await self.run("ping", self._ping, False))

    def _ping(self) -> Awaitable[bool]:
        return redisclient.ping(self.client)

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
        await self.client.aclose()

    async def _attempt(self, call: Callable[[], Awaitable[T]], limit: float) -> T:
        task = asyncio.ensure_future(call())
        try:
            return await self.clock.wait_for(asyncio.shield(task), limit)
        except TimeoutError:
            for _ in range(GRACE_TURNS):
                await asyncio.sleep(0)
                if task.done():
                    return task.result()
            task.cancel()  # redis-py drops the connection of a cancelled command
            raise
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _drop_idle_connections(self) -> None:
        """A Redis that was down may have been restarted: a pooled connection from before
        would fail the first operation that takes it (redis-py does not retry that one), and
        open the breaker again. Idle connections are closed (every node's, on a cluster);
        the next operations open new ones."""
        await redisclient.drop_idle_connections(self.client)

    async def _probe_until_up(self) -> None:
        while self.breaker.state is not State.CLOSED:
            await self.clock.sleep(self.breaker.retry_in())
            if self.breaker.allow() is not True:
                continue
            self.observer.redis_changed(int(self.breaker.state), False)  # half-open
            try:
                ok = bool(await self._attempt(self._ping, self.timeout_s))
                if ok:
                    await self._attempt(self._drop_idle_connections, self.timeout_s)
            except Exception:
                ok = False
            self.breaker.record(ok, probe=True)
            self.observer.redis_changed(int(self.breaker.state), False)
        log.warning("redis available again after %.1f s",
                    self.clock.monotonic() - self._down_since)
        for callback in self._when_up:
            callback()
