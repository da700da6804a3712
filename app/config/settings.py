"""One typed settings object, read from the environment and an optional TOML file.

Each field names its environment variable and says what it means, so that the README's table
of settings can be generated from this class and a bad value fails at start with a clear
message instead of deep inside a request. A file (GATEWAY_SETTINGS_FILE; the profiles in
config/) uses the same names as keys; the environment overrides it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core import redisclient

SERVICES = ("users", "catalog", "inventory", "orders", "reviews", "recommendations")
DEFAULT_PORTS = dict(zip(SERVICES, range(8001, 8007), strict=True))
# The reference services sign events with this secret unless told otherwise; it is a
# development default only, and long enough for HMAC-SHA256.
DEV_EVENT_SECRET = "dev-event-secret-change-me-0123456789abcdef"
# `make run` signed its development tokens with this before the authorization server
# (services/auth.py) came; published since, so refused all the same.
DEV_JWT_SECRET = "dev-jwt-secret-change-me-0123456789abcdef"
# The reference authorization server's seed API clients' secrets (services/auth.py, the
# Makefile's `make token`, the README): published, so never a secret of the gateway's.
DEV_CLIENT_SECRETS = frozenset({
    "sandbox-secret-0123456789abcdef0123456789",
    "acme-shop-secret-0123456789abcdef012345",
    "bigcorp-secret-0123456789abcdef0123456789",
})
# Secrets anyone can read (the Makefile, config/, docker/, the README): with DEV_MODE off the
# gateway refuses to start with one of them (`Settings.check_deployable`), since whoever
# knows it can sign change events or bearer tokens. tests/security/test_secrets.py finds
# every secret those files publish and fails if one is missing here.
PUBLISHED_SECRETS = frozenset({DEV_EVENT_SECRET, DEV_JWT_SECRET, *DEV_CLIENT_SECRETS})
MIN_SECRET_BYTES = 32  # HMAC-SHA256's key length: a shorter one is easier to guess


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def setting(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    settings_file: str = setting(
        "", "GATEWAY_SETTINGS_FILE",
        "A TOML file of settings (keys: these variable names), such as a profile in config/; "
        "the environment overrides it.",
    )
    host: str = setting("127.0.0.1", "GATEWAY_HOST", "Address the gateway listens on.")
    port: int = setting(8000, "GATEWAY_PORT", "Port the gateway listens on.")
    workers: int = setting(
        1, "GATEWAY_WORKERS",
        "Gateway processes on the port, each with its own socket (SO_REUSEPORT: the kernel "
        "spreads connections over them), restarted when one ends; give them a shared "
        "REDIS_URL.",
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
        1.0,
        "UPSTREAM_TIMEOUT_S",
        "Total time one upstream HTTP attempt may take, in seconds (below the request "
        "deadline, so that a hung call leaves time for a retry).",
    )
    upstream_connect_timeout_s: float = setting(
        0.25, "UPSTREAM_CONNECT_TIMEOUT_S", "Time to open a connection to an upstream, in seconds."
    )
    upstream_timeouts: str = setting(
        "",
        "UPSTREAM_TIMEOUTS",
        "Per-service overrides of the two timeouts above, as JSON: "
        '{"recommendations": {"total": 0.3, "connect": 0.1}}.',
    )
    request_deadline_s: float = setting(
        2.0,
        "REQUEST_DEADLINE_S",
        "Time budget of one GraphQL request, in seconds: no upstream call or retry runs past "
        "it. A client may ask for less with the X-Request-Timeout-Ms header.",
    )
    retry_max_attempts: int = setting(
        7, "RETRY_MAX_ATTEMPTS",
        "Attempts per upstream call, the first included; 1 turns retries off. Retries that "
        "fail are bounded by the retry budget and the breaker, not by this cap: it bounds "
        "how long one call may keep trying a flaky service (7 rides out 30% failures: "
        "0.3^7, 2 calls in 10,000, still fail).",
    )
    retry_base_s: float = setting(
        0.025, "RETRY_BASE_S",
        "First backoff step in seconds; each retry waits a random time (full jitter) up to "
        "base * 2^retry, capped by RETRY_MAX_BACKOFF_S.",
    )
    retry_max_backoff_s: float = setting(
        0.5, "RETRY_MAX_BACKOFF_S", "Longest backoff wait in seconds (Retry-After aside)."
    )
    retry_budget_ratio: float = setting(
        0.2, "RETRY_BUDGET_RATIO",
        "Retries allowed per service as a share of its calls in the budget window; a retry "
        "that the service answers is given back, so this bounds the retries that fail.",
    )
    retry_budget_min_per_s: float = setting(
        1.0, "RETRY_BUDGET_MIN_PER_S",
        "Retries per second always allowed per service, so that a quiet service can retry.",
    )
    retry_budget_window_s: float = setting(
        10.0, "RETRY_BUDGET_WINDOW_S", "Window of the retry budget, in seconds."
    )
    breaker_enabled: bool = setting(
        True, "BREAKER_ENABLED", "Circuit breaker per upstream service on or off."
    )
    breaker_failure_rate: float = setting(
        0.5, "BREAKER_FAILURE_RATE",
        "Share of failed calls (timeouts, connection errors, 5xx, bad bodies, each call "
        "counted once, after its retries) in the window that opens a service's breaker.",
    )
    breaker_min_calls: int = setting(
        20, "BREAKER_MIN_CALLS", "Calls in the window before the failure rate counts."
    )
    breaker_window_s: float = setting(
        10.0, "BREAKER_WINDOW_S", "Window over which the breaker measures the failure rate."
    )
    breaker_open_s: float = setting(
        5.0, "BREAKER_OPEN_S", "How long an open breaker fails calls before it lets probes through."
    )
    breaker_probes: int = setting(
        3, "BREAKER_PROBES",
        "Successful probe calls in a row that close a half-open breaker (one in flight at a time).",
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
        "Shared secret that signs the services' change events (HMAC-SHA256), at least 32 "
        "bytes. The default is the published development one: with DEV_MODE off the gateway "
        "will not start with it.",
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
        "Run queries, and mutations' payloads, with the plan executor "
        "(app/execution/executor.py); false: graphql-core's own executor for everything.",
    )
    lean_path: bool = setting(
        True,
        "LEAN_PATH",
        "Answer the common request (one JSON POST of one operation to /graphql) in one "
        "ASGI callable in front of the middleware stack (app/http/lean.py); false: every "
        "request through the whole stack. The answers are the same.",
    )
    cache_enabled: bool = setting(
        True, "CACHE_ENABLED", "Entity cache on or off (off: every lookup goes upstream)."
    )
    redis_url: str = setting(
        "",
        "REDIS_URL",
        "Redis for the shared cache level, cross-replica invalidation, rate limits and "
        "persisted queries: one Redis, such as redis://127.0.0.1:6379/0, or a Redis "
        "Cluster, such as redis+cluster://10.0.0.5:7000 (any of its nodes; several "
        "separated by commas; rediss:// and rediss+cluster:// with TLS); empty: in-process "
        "only.",
    )
    redis_prefix: str = setting(
        "gw", "REDIS_PREFIX", "Prefix of every Redis key and channel the gateway uses."
    )
    redis_timeout_ms: int = setting(
        100,
        "REDIS_TIMEOUT_MS",
        "Time every Redis operation (cache, invalidation, rate limit, persisted queries, "
        "/readyz) may take, in milliseconds; one that fails or takes longer marks Redis down: "
        "its breaker opens and each part uses its fallback (README: Redis as a dependency).",
    )
    redis_breaker_open_s: float = setting(
        1.0,
        "REDIS_BREAKER_OPEN_S",
        "While Redis is down, how often a background PING probes it, in seconds (no request "
        "waits for a probe); the first answer closes the breaker.",
    )
    cache_max_entries: int = setting(
        100_000, "CACHE_MAX_ENTRIES", "Entries the in-process cache level keeps (LRU)."
    )
    invalidation_lease_ms: int = setting(
        1000,
        "INVALIDATION_LEASE_MS",
        "With Redis: how long a replica trusts its cache after it last heard the "
        "invalidation channel answer (pings every quarter of it); a write waits this long "
        "at most for the other replicas to evict. The bound T of the README's guarantees.",
    )
    event_version_ttl_s: float = setting(
        3600.0,
        "EVENT_VERSION_TTL_S",
        "How long the latest change-event version per entity is remembered (to ignore older "
        "and repeated events); it must outlast the services' redelivery of one event.",
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

    # -- query limits (app/execution/limits.py) and request size --------------------------
    max_query_depth: int = setting(
        12, "MAX_QUERY_DEPTH", "Deepest field nesting an operation may have."
    )
    max_aliases: int = setting(30, "MAX_ALIASES", "Aliased fields an operation may have.")
    max_query_tokens: int = setting(
        3000, "MAX_QUERY_TOKENS", "Lexical tokens a document may have (checked while parsing)."
    )
    max_query_cost: int = setting(
        10000,
        "MAX_QUERY_COST",
        "Estimated cost an operation may have, by the IBM GraphQL Cost Directives "
        "specification (the schema's @cost and @listSize): an object 1, a scalar 0, a list "
        "times its `first` (or number of `ids`; defaults count), a mutation 10 more.",
    )
    max_id_length: int = setting(
        256, "MAX_ID_LENGTH",
        "Longest ID an operation may give (a literal or a variable), in characters; a longer "
        "one refuses the request with BAD_USER_INPUT before any upstream call.",
    )
    max_string_length: int = setting(
        10_000, "MAX_STRING_LENGTH",
        "Longest other string an operation may give (a review's body is at most 10,000), in "
        "characters; a longer one refuses the request with BAD_USER_INPUT before any "
        "upstream call.",
    )
    max_body_bytes: int = setting(
        1_000_000, "MAX_BODY_BYTES",
        "Largest request body on every route (/graphql, /events), in bytes: 413 as soon as "
        "Content-Length says more or more has arrived; the rest is read and dropped, never "
        "kept.",
    )
    batch_max_operations: int = setting(
        10,
        "BATCH_MAX_OPERATIONS",
        "Operations one batch (a JSON array of operations in one POST, as Apollo Client's "
        "BatchHttpLink sends) may hold; above it the batch is refused with 400 "
        "BATCH_TOO_LARGE and nothing runs. 0: batches are refused (BATCHING_DISABLED).",
    )
    # -- connections (app/http/connections.py, app/http/server.py) ---------------------------------
    header_timeout_s: float = setting(
        10.0, "HEADER_TIMEOUT_S",
        "Time a client has to send a request's line and headers, from their first byte (a "
        "new connection's first request: from the connection's opening); past it 408 and the "
        "connection is closed.",
    )
    body_timeout_s: float = setting(
        30.0, "BODY_TIMEOUT_S",
        "Time a client has to send a request's whole body once its headers are in; past it "
        "408 and the connection is closed.",
    )
    keepalive_timeout_s: float = setting(
        5.0, "KEEPALIVE_TIMEOUT_S",
        "How long an idle connection is kept open before its first request and between "
        "requests (uvicorn's timeout_keep_alive); keep it above a reverse proxy's keep-alive "
        "to the gateway (docker/nginx.conf: 4 s).",
    )
    max_header_bytes: int = setting(
        16_384, "MAX_HEADER_BYTES",
        "Largest request line and headers together, in bytes; 431 above it (checked as they "
        "arrive) and the connection is closed.",
    )
    max_connections: int = setting(
        1000, "MAX_CONNECTIONS",
        "Connections (and requests in flight) one gateway process serves at once (uvicorn's "
        "limit_concurrency, per worker); a request on a connection beyond them gets 503 with "
        "Retry-After at once, and the connection is closed.",
    )
    trusted_proxies: str = setting(
        "", "TRUSTED_PROXIES",
        "Addresses of the reverse proxies in front of the gateway (IPs or networks, "
        "comma-separated): only a connection from one of them has its X-Forwarded-For and "
        "X-Forwarded-Proto believed (the client address then rate-limits and is logged). "
        "Empty: those headers are ignored from everyone. Forwarded is never read.",
    )
    # -- subscriptions (app/execution/subscriptions.py, app/http/subscriptions.py) ----------
    subscriptions_per_connection: int = setting(
        100, "SUBSCRIPTIONS_PER_CONNECTION",
        "Subscriptions one WebSocket connection may hold at once; one more is refused with an "
        "error message (TOO_MANY_SUBSCRIPTIONS), the others go on.",
    )
    subscription_connections_per_client: int = setting(
        20, "SUBSCRIPTION_CONNECTIONS_PER_CLIENT",
        "Subscription connections (WebSocket and SSE) one client (token subject, else address) "
        "may hold at once on a gateway process; one more is refused (WebSocket: close 1013, SSE: "
        "429).",
    )
    max_subscription_connections: int = setting(
        10_000, "MAX_SUBSCRIPTION_CONNECTIONS",
        "Subscription connections (WebSockets and SSE streams) one gateway process holds at "
        "once, all clients together; one more is refused (WebSocket: close 1013, SSE: 503 "
        "with Retry-After). They are not counted against MAX_CONNECTIONS, which bounds the "
        "HTTP requests (and /events) beside them. An idle WebSocket costs about 100 kB, an "
        "SSE stream about 34 kB (bench/RESULTS.md).",
    )
    subscription_init_timeout_s: float = setting(
        10.0, "SUBSCRIPTION_INIT_TIMEOUT_S",
        "Time a WebSocket client has to send connection_init after it connects, in seconds "
        "(then close 4408).",
    )
    subscription_buffer_bytes: int = setting(
        1_000_000, "SUBSCRIPTION_BUFFER_BYTES",
        "Messages waiting to be sent to one subscription connection, in bytes: a consumer that "
        "falls this far behind is dropped (WebSocket: close 1013; SSE: the stream ends), so a "
        "slow client never grows the gateway's memory.",
    )
    subscription_keepalive_s: float = setting(
        15.0, "SUBSCRIPTION_KEEPALIVE_S",
        "How often an idle subscription connection gets a keep-alive (a graphql-transport-ws "
        "ping, an SSE comment), in seconds; 0: never.",
    )
    # -- transport (app/http/transport.py) ---------------------------------------------------------
    cors_origins: str = setting(
        "",
        "CORS_ORIGINS",
        "Origins a browser may call the gateway from, comma-separated (* for any); empty: "
        "no cross-origin calls.",
    )
    introspection: bool = setting(
        True, "INTROSPECTION",
        "Answer introspection queries (the IDE's docs need them); off for a production "
        "graph that should not publish its schema.",
    )
    graphql_ide: bool = setting(
        True, "GRAPHQL_IDE", "Serve the GraphiQL IDE on GET /graphql from a browser."
    )
    ide_assets_dir: str = setting(
        "", "IDE_ASSETS_DIR",
        "The node_modules folder holding the IDE's pinned scripts (package.json; `make "
        "assets`). Empty: the repository's. Not installed: the IDE loads them from a CDN.",
    )
    hsts: bool = setting(
        False, "HSTS",
        "Send Strict-Transport-Security (only behind HTTPS).",
    )
    # -- Apollo Federation (schema/federation.py) -------------------------------------------
    federation_subgraph: bool = setting(
        False, "FEDERATION_SUBGRAPH",
        "Serve the graph as an Apollo Federation v2 subgraph as well: `_service { sdl }` (the "
        "schema with `@key` on User, Product, Category, Order and Review) and "
        "`_entities(representations:)`, so that a supergraph router can compose it. "
        "`_service` answers even with INTROSPECTION off: expose the gateway to the router "
        "only, or compose from a published SDL.",
    )
    # -- persisted queries (app/security/persisted.py) ---------------------------------------------
    persisted_queries_file: str = setting(
        "",
        "PERSISTED_QUERIES_FILE",
        "The trusted documents: a JSON manifest of operations clients may send by id, in "
        "Apollo's persisted-query manifest format (operations with id and body) or The "
        "Guild's ({\"<id>\": \"query ...\"}, the id a sha256 or sha1 of the document, or any "
        "id).",
    )
    persisted_queries_only: bool = setting(
        False,
        "PERSISTED_QUERIES_ONLY",
        "Accept only the manifest's operations (PERSISTED_QUERIES_FILE), sent by their id or "
        "hash: a query text is refused, and so is a hash registered through automatic "
        "persisted queries. For third-party production traffic.",
    )
    # -- idempotency keys (app/security/idempotency.py) ------------------------------------------
    idempotency_ttl_s: float = setting(
        86_400.0, "IDEMPOTENCY_TTL_S",
        "How long the gateway remembers an `addReview` idempotencyKey (the reviews service has "
        "none of its own): a repeat within it answers the first review; in Redis when "
        "REDIS_URL is set (shared by replicas), else in process.",
    )
    # -- rate limits (app/security/ratelimit.py) ---------------------------------------------------
    rate_limit_enabled: bool = setting(
        True, "RATE_LIMIT_ENABLED", "Rate limits per client, counted in query cost."
    )
    rate_limit_window_s: float = setting(
        60.0, "RATE_LIMIT_WINDOW_S",
        "The window the tier budgets below are per: a client's bucket holds one window's "
        "budget and refills at budget/window per second.",
    )
    rate_limit_anonymous: int = setting(
        20000, "RATE_LIMIT_ANONYMOUS",
        "Query cost an anonymous client (by address) may spend per window.",
    )
    rate_limit_authenticated: int = setting(
        100000, "RATE_LIMIT_AUTHENTICATED",
        "Query cost a signed-in client (by token subject) may spend per window.",
    )
    rate_limit_gold: int = setting(
        500000, "RATE_LIMIT_GOLD",
        "Query cost a gold client (a token with tier: gold) may spend per window.",
    )
    rate_limit_tiers: str = setting(
        '{"free": 20000, "standard": 100000}', "RATE_LIMIT_TIERS",
        "More tiers, as a JSON object of tier name to query cost per window: a token whose "
        "`tier` claim names one (an API client's, set by the authorization server) gets its "
        "budget; an unknown tier gets RATE_LIMIT_AUTHENTICATED's.",
    )
    # -- authentication (app/security/auth.py) -----------------------------------------------------
    auth_jwt_secret: str = setting(
        "",
        "AUTH_JWT_SECRET",
        "HS256 secret that signs bearer tokens (the tests' development tokens, `python -m app "
        "token --sub u1`; `make run` uses the authorization server instead); at least 32 "
        "bytes; with DEV_MODE off, not a published development one. Empty: HS256 tokens are "
        "refused.",
    )
    auth_jwks_url: str = setting(
        "",
        "AUTH_JWKS_URL",
        "JWKS URL of the identity provider (an OAuth 2.0 authorization server; "
        "config/development.toml: the reference one on 8007): RS256 and ES256 tokens are "
        "checked against its keys, each key with its own algorithm only.",
    )
    auth_jwks_ttl_s: float = setting(
        300.0, "AUTH_JWKS_TTL_S",
        "How long the key set is used before it is fetched again (a key the provider stops "
        "publishing stops verifying then; a new key id is fetched at once, see below).",
    )
    auth_jwks_cooldown_s: float = setting(
        30.0, "AUTH_JWKS_COOLDOWN_S",
        "Least time between two fetches of the key set caused by unknown key ids (tokens "
        "with made-up ids must not make the gateway hammer the provider).",
    )
    auth_issuer: str = setting(
        "", "AUTH_ISSUER", "Required `iss` of bearer tokens; empty: not checked."
    )
    auth_audience: str = setting(
        "", "AUTH_AUDIENCE", "Required `aud` of bearer tokens; empty: not checked."
    )
    auth_leeway_s: float = setting(
        30.0, "AUTH_LEEWAY_S", "Clock skew allowed on `exp` and `nbf`, in seconds."
    )
    # -- telemetry (app/telemetry) -----------------------------------------------------------
    traces_exporter: str = setting(
        "",
        "OTEL_TRACES_EXPORTER",
        "Where spans go: none, otlp (OTLP over HTTP, configured by the standard "
        "OTEL_EXPORTER_OTLP_* variables) or console; empty: otlp when "
        "OTEL_EXPORTER_OTLP_ENDPOINT is set, else none.",
    )
    traces_sample_ratio: float = setting(
        1.0,
        "OTEL_TRACES_SAMPLER_ARG",
        "Share of traces exported, decided at the root and followed downstream (parent-based "
        "ratio sampling); a sampled incoming traceparent is always followed.",
    )
    traces_keep_failed: bool = setting(
        True,
        "TRACES_KEEP_FAILED",
        "Export the trace of every failed request (errors in the response, or a 5xx) even when "
        "the ratio did not sample it. Costs recording spans for every request while an "
        "exporter is set.",
    )
    trace_all_fields: bool = setting(
        False,
        "TRACE_ALL_FIELDS",
        "A span for every field, trivial ones (a key read from the parent) included; off: "
        "only resolvers that do work (call a loader or an upstream, or are async).",
    )
    resolver_metrics_ratio: float = setting(
        0.1,
        "RESOLVER_METRICS_RATIO",
        "Share of requests whose resolvers (those that do work) are timed into "
        "gateway_resolver_duration_seconds; 0: none. Timing every call costs about a "
        "microsecond per resolver call, a fifth of a deep query's CPU.",
    )
    client_names_max: int = setting(
        20,
        "CLIENT_NAMES_MAX",
        "Client names (the apollographql-client-name header) counted each under its own "
        "label in gateway_client_requests_total (and gateway_deprecated_field_uses_total); "
        "any other name is counted as `other`. A "
        "name takes a label only once a signed-in caller or a persisted-query manifest "
        "operation sends it (any caller in development mode), like operation names; each "
        "name keeps at most 10 versions (apollographql-client-version), then `other`.",
    )
    service_name: str = setting(
        "gateway", "OTEL_SERVICE_NAME", "The service.name of the gateway's spans."
    )
    log_format: str = setting(
        "json", "LOG_FORMAT",
        "json: one JSON object per line, with the trace id; text: plain lines for a terminal.",
    )
    metrics_port: int = setting(
        0, "METRICS_PORT",
        "Serve /metrics on this port (on GATEWAY_HOST) instead of the main one, for the "
        "scraper only: the public port then does not publish the gateway's internals. 0: "
        "on the main port.",
    )
    debug_token: str = setting(
        "",
        "DEBUG_TOKEN",
        "A caller sending X-Gateway-Debug with this value gets the request's waterfall in "
        "extensions.debug; in DEV_MODE any value does. Empty: development mode only.",
    )

    def exporters(self) -> list[str]:
        return [k.strip() for k in self.traces_exporter.split(",") if k.strip()]

    def service_url(self, service: str) -> str:
        return str(getattr(self, f"{service}_url")).rstrip("/")

    def proxies(self) -> list[str]:
        """TRUSTED_PROXIES as networks (an address is a network of one), for uvicorn."""
        out = []
        for item in self.trusted_proxies.split(","):
            if not item.strip():
                continue
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise SettingsError(
                    f"TRUSTED_PROXIES must list IP addresses or networks (such as 10.0.0.5 or "
                    f"10.0.0.0/24), got {item.strip()!r}") from None
        return out

    def service_timeouts(self) -> dict[str, tuple[float, float]]:
        """(total, connect) seconds of one attempt, per service."""
        overrides: Any = {}
        if self.upstream_timeouts:
            try:
                overrides = orjson.loads(self.upstream_timeouts)
            except orjson.JSONDecodeError:
                raise SettingsError("UPSTREAM_TIMEOUTS is not valid JSON") from None
            if not isinstance(overrides, dict):
                raise SettingsError("UPSTREAM_TIMEOUTS must map service names to objects")
        out = {}
        for service in SERVICES:
            own = overrides.pop(service, {})
            if not isinstance(own, dict) or set(own) - {"total", "connect"}:
                raise SettingsError(
                    f'UPSTREAM_TIMEOUTS["{service}"] must be an object of "total" and "connect"')
            total = own.get("total", self.upstream_timeout_s)
            connect = own.get("connect", self.upstream_connect_timeout_s)
            for value in (total, connect):
                if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                    raise SettingsError(
                        f'UPSTREAM_TIMEOUTS["{service}"] timeouts must be positive numbers')
            out[service] = (float(total), float(connect))
        if overrides:
            raise SettingsError(f"UPSTREAM_TIMEOUTS names unknown services: {sorted(overrides)}")
        return out

    def rate_limit_budgets(self) -> dict[str, int]:
        """Query cost per window, by rate-limit tier."""
        tiers = orjson.loads(self.rate_limit_tiers) if self.rate_limit_tiers else {}
        return {**tiers, "anonymous": self.rate_limit_anonymous,
                "authenticated": self.rate_limit_authenticated, "gold": self.rate_limit_gold}

    def check_deployable(self) -> None:
        """Refuse, outside development mode, the secrets anyone can read: with the published
        EVENT_SECRET anyone can post change events (evict the cache, and with a high version
        make the genuine events be ignored); with the published AUTH_JWT_SECRET, sign a token
        for any user. Called when the gateway starts (`python -m app`), not by tools such as
        `make token` that only read the settings."""
        if self.dev_mode:
            return
        for name in ("event_secret", "auth_jwt_secret"):
            if getattr(self, name) in PUBLISHED_SECRETS:
                raise SettingsError(
                    f"{_env_of(name)} is the published development value; with DEV_MODE off "
                    f"set a secret of your own, at least {MIN_SECRET_BYTES} random bytes "
                    "(such as `openssl rand -hex 32`)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        path = env.get(_env_of("settings_file"), "")
        if path:
            env = {**read_file(path), **env}
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
        for name in ("rate_limit_window_s",
                     "upstream_timeout_s", "upstream_connect_timeout_s", "upstream_keepalive_s",
                     "request_deadline_s", "retry_base_s", "retry_max_backoff_s",
                     "retry_budget_window_s", "breaker_window_s", "breaker_open_s",
                     "event_version_ttl_s", "redis_breaker_open_s", "header_timeout_s",
                     "body_timeout_s", "keepalive_timeout_s", "idempotency_ttl_s",
                     "subscription_init_timeout_s", "auth_jwks_ttl_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_of(name)} must be positive")
        for name in ("retry_budget_ratio", "retry_budget_min_per_s", "batch_max_operations"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{_env_of(name)} must not be negative")
        if not 0 < self.breaker_failure_rate <= 1:
            raise SettingsError("BREAKER_FAILURE_RATE must be in (0, 1]")
        for name in ("max_query_depth", "max_aliases", "max_query_tokens", "max_query_cost",
                     "max_id_length", "max_string_length",
                     "max_body_bytes", "rate_limit_anonymous", "rate_limit_authenticated",
                     "rate_limit_gold",
                     "upstream_pool_size", "fanout_concurrency", "port", "cache_max_entries",
                     "workers", "retry_max_attempts", "breaker_min_calls", "breaker_probes",
                     "invalidation_lease_ms", "redis_timeout_ms", "max_header_bytes",
                     "max_connections", "subscriptions_per_connection",
                     "subscription_connections_per_client", "subscription_buffer_bytes",
                     "max_subscription_connections"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{_env_of(name)} must be at least 1")
        self.proxies()  # raises on a bad TRUSTED_PROXIES
        if not 0 <= self.metrics_port <= 65535 or self.metrics_port == self.port:
            raise SettingsError("METRICS_PORT must be 0 (the main port) or another port than "
                                f"GATEWAY_PORT, got {self.metrics_port}")
        if self.redis_url and (problem := redisclient.url_problem(self.redis_url)):
            raise SettingsError(problem)
        self.service_timeouts()  # raises on a bad UPSTREAM_TIMEOUTS
        if not set(self.exporters()) <= {"none", "otlp", "console"}:
            raise SettingsError("OTEL_TRACES_EXPORTER must list none, otlp or console, got "
                                f"{self.traces_exporter!r}")
        if not 0 <= self.client_names_max <= 1000:
            raise SettingsError("CLIENT_NAMES_MAX must be from 0 to 1000")
        if not 0 <= self.resolver_metrics_ratio <= 1:
            raise SettingsError("RESOLVER_METRICS_RATIO must be in [0, 1]")
        if not 0 <= self.traces_sample_ratio <= 1:
            raise SettingsError("OTEL_TRACES_SAMPLER_ARG must be in [0, 1]")
        if self.auth_jwt_secret and len(self.auth_jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"AUTH_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                                "(HS256)")
        if len(self.event_secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"EVENT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                                "(HMAC-SHA256)")
        if self.auth_jwks_url and not self.auth_jwks_url.startswith(("http://", "https://")):
            raise SettingsError(f"AUTH_JWKS_URL must be an http(s) URL, got {self.auth_jwks_url!r}")
        if self.auth_jwks_url and not (self.auth_issuer and self.auth_audience):
            # The provider signs tokens for other applications too: without these, any of
            # them would be accepted here.
            raise SettingsError("AUTH_JWKS_URL needs AUTH_ISSUER and AUTH_AUDIENCE")
        if self.subscription_keepalive_s < 0:
            raise SettingsError("SUBSCRIPTION_KEEPALIVE_S must not be negative")
        if self.auth_leeway_s < 0:
            raise SettingsError("AUTH_LEEWAY_S must not be negative")
        if self.persisted_queries_only and not self.persisted_queries_file:
            # Only the manifest's operations run (never APQ-registered ones): none would.
            raise SettingsError("PERSISTED_QUERIES_ONLY needs PERSISTED_QUERIES_FILE, the "
                                "manifest of the operations it runs")
        try:
            tiers = orjson.loads(self.rate_limit_tiers) if self.rate_limit_tiers else {}
        except orjson.JSONDecodeError:
            raise SettingsError("RATE_LIMIT_TIERS is not valid JSON") from None
        if not isinstance(tiers, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1
                for v in tiers.values()):
            raise SettingsError("RATE_LIMIT_TIERS must map tier names to budgets of at least 1")
        if {"anonymous", "authenticated", "gold"} & set(tiers):
            raise SettingsError("RATE_LIMIT_TIERS may not redefine anonymous, authenticated "
                                "or gold (RATE_LIMIT_ANONYMOUS, ..._AUTHENTICATED, ..._GOLD)")
        smallest = min(self.rate_limit_budgets().values())
        if self.rate_limit_enabled and self.max_query_cost > smallest:
            raise SettingsError(f"MAX_QUERY_COST ({self.max_query_cost}) must not exceed the "
                                f"smallest rate-limit budget ({smallest}): such a query could "
                                "never run")
        if self.log_format not in ("json", "text"):
            raise SettingsError(f"LOG_FORMAT must be json or text, got {self.log_format!r}")
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


def markdown_table() -> str:
    """The README's table of settings, generated from this class (make settings-doc)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = ("empty" if default == "" else f"`{str(default).lower()}`"
                 if isinstance(default, bool) else f"`{default}`")
        meaning = (" ".join(str(f.metadata["help"]).split()).replace("|", "\\|")
                   .replace("<", "&lt;"))
        rows.append(f"| `{f.metadata['env']}` | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"


README_START = "<!-- settings: generated by `make settings-doc` from app/config/settings.py -->"
README_END = "<!-- settings: end -->"


def readme_with_table(readme: str) -> str:
    """`readme` with its settings table replaced by the generated one."""
    head, start, rest = readme.partition(README_START)
    _, end, tail = rest.partition(README_END)
    if not start or not end:
        raise ValueError("README.md has no settings markers")
    return f"{head}{start}\n{markdown_table()}{end}{tail}"


def read_file(path: str) -> dict[str, str]:
    """A settings file's values as the environment would give them, refusing unknown keys
    (a misspelt key would otherwise be silently ignored)."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as err:
        raise SettingsError(f"GATEWAY_SETTINGS_FILE {path!r} cannot be read: "
                            f"{err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SettingsError(f"GATEWAY_SETTINGS_FILE {path!r} is not valid TOML: {err}") from None
    known = {f.metadata["env"] for f in dataclasses.fields(Settings)} - {"GATEWAY_SETTINGS_FILE"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"GATEWAY_SETTINGS_FILE {path!r} has unknown settings: "
                            f"{', '.join(unknown)}")
    out = {}
    for key, value in data.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        else:
            raise SettingsError(f"{key} in {path!r} must be a string, number or boolean")
    return out


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
            value = float(raw)
            if not math.isfinite(value):  # nan passes every "must be positive" check
                raise ValueError(raw)
            return value
        return raw
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
