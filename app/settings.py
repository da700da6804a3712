"""One typed settings object, read from the environment.

Each field names its environment variable and says what it means, so that the README's table
of settings can be generated from this class and a bad value fails at start with a clear
message instead of deep inside a request.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

SERVICES = ("users", "catalog", "inventory", "orders", "reviews", "recommendations")
DEFAULT_PORTS = dict(zip(SERVICES, range(8001, 8007), strict=True))
# The reference services sign events with this secret unless told otherwise; it is a
# development default only, and long enough for HMAC-SHA256.
DEV_EVENT_SECRET = "dev-event-secret-change-me-0123456789abcdef"


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def setting(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", "GATEWAY_HOST", "Address the gateway listens on.")
    port: int = setting(8000, "GATEWAY_PORT", "Port the gateway listens on.")
    workers: int = setting(
        1, "GATEWAY_WORKERS",
        "Gateway processes sharing the port (uvicorn workers); give them a shared REDIS_URL.",
    )
    users_url: str = setting(
        "http://127.0.0.1:8001", "USERS_URL", "Base URL of the users service."
    )
    catalog_url: str = setting(
        "http://127.0.0.1:8002", "CATALOG_URL", "Base URL of the catalog service."
    )
    inventory_url: str = setting(
        "http://127.0.0.1:8003", "INVENTORY_URL", "Base URL of the inventory service."
    )
    orders_url: str = setting(
        "http://127.0.0.1:8004", "ORDERS_URL", "Base URL of the orders service."
    )
    reviews_url: str = setting(
        "http://127.0.0.1:8005", "REVIEWS_URL", "Base URL of the reviews service."
    )
    recommendations_url: str = setting(
        "http://127.0.0.1:8006",
        "RECOMMENDATIONS_URL",
        "Base URL of the recommendations service.",
    )
    upstream_timeout_s: float = setting(
        2.0, "UPSTREAM_TIMEOUT_S", "Total time one upstream HTTP call may take, in seconds."
    )
    upstream_connect_timeout_s: float = setting(
        0.5, "UPSTREAM_CONNECT_TIMEOUT_S", "Time to open a connection to an upstream, in seconds."
    )
    upstream_keepalive_s: float = setting(
        4.0,
        "UPSTREAM_KEEPALIVE_S",
        "How long an idle pooled upstream connection is kept; keep it below the services' "
        "own keep-alive (uvicorn's default is 5 s), or a reused connection may already be "
        "closed by the service.",
    )
    upstream_pool_size: int = setting(
        100, "UPSTREAM_POOL_SIZE", "Pooled keep-alive connections per upstream service."
    )
    fanout_concurrency: int = setting(
        8,
        "FANOUT_CONCURRENCY",
        "Concurrent upstream calls per request for lookups that have no batch endpoint "
        "(recommendations, a category's products, a user's orders).",
    )
    event_secret: str = setting(
        DEV_EVENT_SECRET,
        "EVENT_SECRET",
        "Shared secret that signs the services' change events (HMAC-SHA256).",
    )
    dev_mode: bool = setting(
        False,
        "DEV_MODE",
        "Development mode: trusts an X-User-Id header as the acting user. Never in production.",
    )
    log_level: str = setting("info", "LOG_LEVEL", "Log level: debug, info, warning or error.")
    plan_executor: bool = setting(
        True,
        "PLAN_EXECUTOR",
        "Run queries with the breadth-first executor (app/executor.py); false: graphql-core's "
        "own executor for everything.",
    )
    cache_enabled: bool = setting(
        True, "CACHE_ENABLED", "Entity cache on or off (off: every lookup goes upstream)."
    )
    redis_url: str = setting(
        "",
        "REDIS_URL",
        "Redis for the shared cache level and cross-replica invalidation, such as "
        "redis://127.0.0.1:6379/0; empty: in-process cache only.",
    )
    redis_prefix: str = setting(
        "gw", "REDIS_PREFIX", "Prefix of every Redis key and channel the gateway uses."
    )
    cache_max_entries: int = setting(
        100_000, "CACHE_MAX_ENTRIES", "Entries the in-process cache level keeps (LRU)."
    )
    cache_hints: str = setting(
        "",
        "CACHE_HINTS",
        'Overrides of the schema\'s @cacheControl hints by coordinate, as JSON: '
        '{"Product.inventory": {"maxAge": 10}, "Stock": {"maxAge": 2, "scope": "PUBLIC"}}.',
    )
    cache_stale: str = setting(
        "",
        "CACHE_STALE",
        "Staleness per type, as JSON (seconds past the TTL): stale-while-revalidate "
        '(swr) and stale-if-error (sie), such as {"Product": {"swr": 30, "sie": 300}}; '
        "merged over the defaults.",
    )
    response_cache: bool = setting(
        False,
        "RESPONSE_CACHE",
        "Cache whole responses of PUBLIC operations (by operation hash and variables) for "
        "their max-age; invalidated by the same change events.",
    )

    def service_url(self, service: str) -> str:
        return str(getattr(self, f"{service}_url")).rstrip("/")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if name in env:
                values[f.name] = _parse(name, env[name], type(f.default))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for service in SERVICES:
            url = self.service_url(service)
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"{service.upper()}_URL must be an http(s) URL, got {url!r}")
        for name in ("upstream_timeout_s", "upstream_connect_timeout_s", "upstream_keepalive_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_of(name)} must be positive")
        for name in ("upstream_pool_size", "fanout_concurrency", "port", "cache_max_entries",
                     "workers"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{_env_of(name)} must be at least 1")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://")):
            raise SettingsError(f"REDIS_URL must be a redis:// URL, got {self.redis_url!r}")
        for name in ("cache_hints", "cache_stale"):
            raw = getattr(self, name)
            if raw:
                try:
                    value = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise SettingsError(f"{_env_of(name)} is not valid JSON") from None
                if not isinstance(value, dict) or not all(
                    isinstance(v, dict) for v in value.values()
                ):
                    raise SettingsError(f"{_env_of(name)} must map names to objects")


def _env_of(field_name: str) -> str:
    return next(f.metadata["env"] for f in dataclasses.fields(Settings) if f.name == field_name)


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
