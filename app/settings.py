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
        for name in ("upstream_timeout_s", "upstream_connect_timeout_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_of(name)} must be positive")
        for name in ("upstream_pool_size", "fanout_concurrency", "port"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{_env_of(name)} must be at least 1")


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
