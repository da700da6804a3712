"""`UpstreamClient` with pyreqwest (Rust's reqwest) in place of aiohttp, for the benchmarks
(bench/upstream_client.py; bench/server_settings.py runs the gateway with it): issue 19 asks
for a Rust-backed client measured behind the same interface. Not the gateway's client."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import aiohttp
from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import ConnectError, ConnectTimeoutError, RequestError

from app.config.settings import Settings
from app.upstream.client import MIN_ATTEMPT_S, Check, ServiceGuard, UpstreamClient, _decode
from app.upstream.failures import upstream_failure
from app.upstream.resilience import Deadline


class ReqwestUpstreamClient(UpstreamClient):
    """`UpstreamClient` with pyreqwest in place of aiohttp for its calls' attempts.

    The seam is `_send`, one attempt: everything around it (the deadline, the retries and
    their waits, the budget, the breaker, the classification table, the decoding, the
    observer) is `UpstreamClient`'s own. One pyreqwest client per service, as reqwest's
    connect timeout and connection cap are the client's, not the request's: the service's
    connect timeout, at most UPSTREAM_POOL_SIZE connections in flight (aiohttp's
    `limit_per_host`; its total `limit` is their sum) and as many kept idle for
    UPSTREAM_KEEPALIVE_S. Each attempt's total timeout is its own (the service's, or what is
    left of the request's deadline). With tracing on, the attempt carries `traceparent`
    (injected from the current context, the logical call's span) but has no client span
    of its own: aiohttp's instrumentation makes that one. The health probe (`probe`) stays
    on aiohttp's session."""

    def __init__(self, settings: Settings, *args: Any, **kwargs: Any) -> None:
        super().__init__(settings, *args, **kwargs)
        self._clients: dict[str, Client] = {}
        self._totals = {service: timedelta(seconds=guard.total)
                        for service, guard in self.guards.items()}

    async def start(self) -> None:
        await super().start()  # the session `probe` uses, and `request` checks for
        size = self.settings.upstream_pool_size
        for service, guard in self.guards.items():
            self._clients[service] = (
                ClientBuilder()
                .connect_timeout(timedelta(seconds=guard.connect))
                .max_connections(size)
                .pool_max_idle_per_host(size)
                .pool_idle_timeout(timedelta(seconds=self.settings.upstream_keepalive_s))
                .build())

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        await super().close()

    async def _send(self, guard: ServiceGuard, method: str, url: str,
                    params: Mapping[str, str] | None, data: bytes | None,
                    hdrs: Mapping[str, str], limits: aiohttp.ClientTimeout,
                    deadline: Deadline | None, check: Check | None) -> tuple[Any, int]:
        service = guard.service
        total = (self._totals[service] if limits is guard.timeout or limits.total is None
                 else timedelta(seconds=limits.total))
        if self.trace_configs:  # tracing on: the call's span goes on in the service
            from opentelemetry import propagate
            carrier = dict(hdrs)
            propagate.inject(carrier)
            hdrs = carrier
        builder = self._clients[service].request(method, url).headers(hdrs).timeout(total)
        if params:
            builder = builder.query(dict(params))
        if data is not None:
            builder = builder.body_bytes(data)
        try:
            resp = await builder.build().send()
            body = (await resp.bytes()).to_bytes()
            status = resp.status
            retry_after = resp.get_header("Retry-After") if status in (429, 503) else None
        except TimeoutError as err:  # pyreqwest's timeouts are TimeoutErrors
            connecting = isinstance(err, ConnectTimeoutError)
            if deadline is not None and deadline.remaining() < MIN_ATTEMPT_S:
                raise upstream_failure("deadline" if connecting else "deadline_cut",
                                       service) from None
            raise upstream_failure("connect_timeout" if connecting else "timeout",
                                   service) from None
        except ConnectError as err:
            raise upstream_failure("connection", service) from err
        except (RequestError, OSError) as err:
            # reqwest does not tell a reply that is not HTTP from a dropped connection.
            raise upstream_failure("dropped", service) from err
        value = _decode(service, status, body, retry_after)
        wrong = check(value) if check is not None else None
        if wrong is not None:
            raise upstream_failure("bad_body", service, wrong)
        return value, status
