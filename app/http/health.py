"""Liveness and readiness, as JSON.

`/healthz` says the process is alive. `/readyz` says what the gateway can serve: each
service's reachability (a direct health check, outside the breaker and the retry budget)
and breaker state, and Redis when one is configured. A service being down makes the gateway
`degraded`, not unready: it still answers everything else, and taking every replica out of
a load balancer because one upstream failed would turn a partial outage into a full one.
Only when no service at all answers is it unready (503).

Redis is such a part too: while it is down the gateway serves without it (no shared cache,
rate limits per replica, no new persisted queries), so readiness stays 200 and says
`degraded`. Its check goes through Redis's guard: at most REDIS_TIMEOUT_MS, and nothing at
all while the guard already knows Redis is down.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from app.core.redisguard import RedisGuard
from app.upstream.client import UpstreamClient

PROBE_TIMEOUT_S = 0.5
MEMO_S = 0.25  # probes are reused this long, so frequent polling costs the services little


async def healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


class Readiness:
    def __init__(self, client: UpstreamClient, redis: RedisGuard | None) -> None:
        self.client = client
        self.redis = redis
        self._memo: tuple[float, dict[str, bool], bool | None] | None = None
        self._lock = asyncio.Lock()

    async def _probe(self) -> tuple[dict[str, bool], bool | None]:
        async with self._lock:
            now = time.monotonic()
            if self._memo is None or now - self._memo[0] > MEMO_S:
                services = list(self.client.guards)
                checks = [self.client.probe(s, PROBE_TIMEOUT_S) for s in services]
                if self.redis is not None:
                    checks.append(self.redis.ping())
                results = await asyncio.gather(*checks)
                reachable = dict(zip(services, results[: len(services)], strict=True))
                redis_ok = results[-1] if self.redis is not None else None
                self._memo = (time.monotonic(), reachable, redis_ok)
            return self._memo[1], self._memo[2]

    async def endpoint(self, _: Request) -> JSONResponse:
        reachable, redis_ok = await self._probe()
        services = {
            service: {"reachable": reachable[service], "breaker": guard.state}
            for service, guard in self.client.guards.items()
        }
        body: dict[str, Any] = {"services": services}
        parts = list(services.values())
        if redis_ok is not None and self.redis is not None:
            # The guard's state is live: a Redis it knows is down is not reachable, whatever
            # the last (memoized) ping said.
            body["redis"] = {"reachable": redis_ok and self.redis.up,
                             "breaker": self.redis.state}
            parts.append(body["redis"])
        healthy = all(p["reachable"] and p["breaker"] in ("closed", "disabled") for p in parts)
        body["status"] = "ok" if healthy else "degraded"
        if not any(reachable.values()):
            body["status"] = "unavailable"
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)
