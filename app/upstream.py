"""The one HTTP client the gateway uses to reach the domain services.

It owns the shared connection pool, timeouts, JSON decoding and the classification of
failures into `UpstreamError`; loaders and resolvers never see an HTTP error. Retries, the
retry budget, the deadline and circuit breakers belong here too as they land.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from app.errors import UpstreamError, classify_status
from app.settings import SERVICES, Settings

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class UpstreamClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_urls = {s: settings.service_url(s) for s in SERVICES}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # One session for the app's lifetime: keep-alive connections are reused across
        # requests, which is most of an upstream call's cost on a fast network.
        connector = aiohttp.TCPConnector(
            limit=self.settings.upstream_pool_size * len(SERVICES),
            limit_per_host=self.settings.upstream_pool_size,
            ttl_dns_cache=300,
            keepalive_timeout=self.settings.upstream_keepalive_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=self.settings.upstream_timeout_s,
                sock_connect=self.settings.upstream_connect_timeout_s,
            ),
            json_serialize=lambda o: orjson.dumps(o).decode(),
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call `service` and return its decoded JSON body, or raise `UpstreamError`."""
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        url = self.base_urls[service] + path
        data = orjson.dumps(json) if json is not None else None
        hdrs = {**JSON_HEADERS, **headers} if headers else JSON_HEADERS
        try:
            async with self._session.request(
                method, url, params=params, data=data, headers=hdrs
            ) as resp:
                body = await resp.read()
                status = resp.status
        except TimeoutError:
            raise UpstreamError(
                f"{service} did not answer in time", code="UPSTREAM_TIMEOUT",
                service=service, retryable=True,
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as err:
            raise UpstreamError(
                f"{service} is unavailable", code="UPSTREAM_UNAVAILABLE", service=service,
                retryable=True,
            ) from err
        except asyncio.CancelledError:
            raise
        return _decode(service, status, body)


def _decode(service: str, status: int, body: bytes) -> Any:
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
        if 200 <= status < 300:
            raise UpstreamError(
                f"{service} answered a body that is not JSON", code="UPSTREAM_BAD_RESPONSE",
                service=service, status=status,
            ) from None
    if 200 <= status < 300:
        return payload
    code, retryable = classify_status(status)
    upstream_code = message = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        upstream_code = payload["error"].get("code")
        message = payload["error"].get("message")
    raise UpstreamError(
        f"{service} answered {status}" + (f": {message}" if message else ""),
        code=code, service=service, status=status, upstream_code=upstream_code,
        upstream_message=message, retryable=retryable,
    )
