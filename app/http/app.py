"""The ASGI application: routes, and the resources that live as long as the process."""

from __future__ import annotations

import gc
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from app.cache.entity import EntityCache, Staleness
from app.cache.hints import CacheHints
from app.cache.invalidation import Invalidator, response_namespace
from app.cache.response import ResponseCache
from app.config.settings import Settings
from app.core import redisclient
from app.core.observer import NULL_OBSERVER, Observer
from app.core.redisguard import RedisGuard
from app.execution.subscriptions import Hub
from app.http import transport
from app.http.events import receive_event
from app.http.health import Readiness, healthz
from app.http.ide import ASSET_PATH
from app.http.lean import LeanGraphQL
from app.http.subscriptions import Streams
from app.http.view import Caching, GatewayGraphQL
from app.security.ratelimit import RateLimiter
from app.telemetry import metrics
from app.telemetry.requests import middleware as request_telemetry
from app.telemetry.tracing import SpanExporter, Telemetry, build_telemetry
from app.upstream.client import UpstreamClient
from loaders import declarations
from loaders import entities as entities_registry
from loaders.registry import item_reader
from loaders.registry import namespaces as loader_namespaces
from schema import build_schema
from schema.deprecations import DEPRECATED

log = logging.getLogger("gateway")
GC_THRESHOLD = 50_000


def tune_gc() -> None:
    # A deep query allocates thousands of short-lived objects; with the default gen-0
    # threshold (700) the collector runs many times per request and re-walks the long-lived
    # schema each time. Freezing the start-up heap and collecting gen 0 less often cut CPU per
    # deep query at concurrency 32 (bench/README.md). The older generations keep a short
    # cadence (a full pass every 25 young ones): with (50000, 20, 50) a full pass came about
    # every 50 minutes under load, and cyclic garbage grew the heap linearly in the soak.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 5, 5)


def build_redis(settings: Settings, observer: Observer = NULL_OBSERVER) -> RedisGuard | None:
    """The process's one Redis client (one connection pool; a cluster's, one per node) for
    everything shared through Redis, behind its guard: the timeout, the breaker, the probe.
    REDIS_URL chooses one Redis or a cluster (`app.core.redisclient`). None without it."""
    if not settings.redis_url:
        return None
    # No socket timeouts of the client's own: the guard times every call out, and the
    # pub/sub connection's reads must wait for messages as long as there are none.
    client = redisclient.connect(settings.redis_url)
    return RedisGuard(client, timeout_s=settings.redis_timeout_ms / 1000,
                      open_s=settings.redis_breaker_open_s, observer=observer)


def build_caching(settings: Settings, sdl: str, client: UpstreamClient,
                  telemetry: Telemetry | None = None,
                  redis: RedisGuard | None = None) -> Caching:
    """The caching parts the settings ask for, all driven by the schema's cache hints."""
    hints = CacheHints(sdl, settings.cache_hints)
    if not settings.cache_enabled:
        return Caching(hints)
    configured = orjson.loads(settings.cache_stale) if settings.cache_stale else {}
    staleness = {**entities_registry.STALENESS, **{
        entity: Staleness(float(v.get("swr", 0)), float(v.get("sie", 0)))
        for entity, v in configured.items()
    }}
    entities = EntityCache(
        hints, max_entries=settings.cache_max_entries, redis=redis,
        staleness=staleness, prefix=settings.redis_prefix,
        version_ttl_s=settings.event_version_ttl_s,
        lease_s=settings.invalidation_lease_ms / 1000,
        schema_tag=hashlib.sha256(sdl.encode()).hexdigest()[:10],
        observer=telemetry.observer if telemetry is not None else NULL_OBSERVER,
    )
    entities.track([response_namespace(t) for t in entities_registry.ENTITIES])
    namespaces = loader_namespaces(entities, declarations.ALL)
    responses = (ResponseCache(hints.schema, entities, settings.cache_max_entries // 10,
                               reads=entities_registry.READS, namespaces=namespaces,
                               loader_entities={s.name: s.entity for s in declarations.ALL})
                 if settings.response_cache else None)
    invalidator = Invalidator(entities, namespaces, entities_registry.EVICTIONS,
                              item_reader(client))
    return Caching(hints, entities, namespaces, invalidator, responses)


def create_app(settings: Settings | None = None, exporter: SpanExporter | None = None
               ) -> LeanGraphQL | Starlette:
    """The gateway. `exporter` (tests) receives every exported span, synchronously. The
    common request, one JSON POST to /graphql, takes the lean path (app/http/lean.py) in
    front of the Starlette application, which takes everything else (LEAN_PATH=false: all)."""
    settings = settings or Settings.from_env()
    telemetry = build_telemetry(settings, exporter)
    client = UpstreamClient(settings, telemetry.observer, telemetry.aiohttp_trace_configs())
    redis = build_redis(settings, telemetry.observer)
    limiter = RateLimiter(settings, redis) if settings.rate_limit_enabled else None
    schema = build_schema(plan_executor=settings.plan_executor, telemetry=telemetry,
                          settings=settings, limiter=limiter)
    caching = build_caching(settings, schema.as_str(), client, telemetry, redis)
    graphql = GatewayGraphQL(schema, settings, client, caching, telemetry, limiter, redis)
    # /metrics on a port of its own (METRICS_PORT), or on the main one.
    metrics_server = (metrics.MetricsServer(settings.host, settings.metrics_port,
                                            reuse_port=settings.workers > 1)
                      if settings.metrics_port else None)
    subscription = schema._schema.subscription_type
    metrics.start_series(tuple(subscription.fields) if subscription is not None else (),
                         tuple(DEPRECATED))
    hub = Hub(schema._schema, settings, client, caching.hints, entities=caching.entities,
              namespaces=caching.namespaces, persisted=graphql.persisted, limiter=limiter,
              observer=telemetry.observer)
    streams = graphql.streams = Streams(hub, settings, graphql.auth, schema,
                                        telemetry.observer)
    if caching.entities is not None:
        # Every replica hands the change events to its hub once their evictions are applied.
        caching.entities.on_events(hub.receive)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await client.start()
        if redis is not None:
            await redis.start()
        if caching.entities is not None:
            await caching.entities.start()
        if metrics_server is not None:
            await metrics_server.start()  # a port in use: the gateway does not start
        metrics.watch_gc()  # (first: the start-up's full collection is timed too)
        tune_gc()
        if settings.dev_mode:
            log.warning("DEVELOPMENT MODE: the X-User-Id header is trusted as the acting user")
        try:
            yield
        finally:
            if metrics_server is not None:
                await metrics_server.close()
            await streams.shutdown()  # (done already when the server shut down: see server.py)
            await hub.close()
            if caching.entities is not None:
                await caching.entities.close()
            await client.close()
            await graphql.auth.close()
            if redis is not None:
                await redis.close()
            telemetry.shutdown()  # exports the spans still queued
            metrics.process_exit()

    app = Starlette(
        routes=[
            # Route, not Mount: a Mount answers /graphql with a redirect to /graphql/.
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", streams),
            *([Route(f"{ASSET_PATH}{{path:path}}", graphql.ide.asset)] if graphql.ide else []),
            Route("/healthz", healthz),
            Route("/readyz", Readiness(client, redis).endpoint),
            *([] if metrics_server is not None else [Route("/metrics", metrics.endpoint)]),
            Route("/events", receive_event, methods=["POST"]),
        ],
        lifespan=lifespan,
        # Telemetry outermost (a refused or failed request is traced and logged too), then
        # the security headers and CORS.
        middleware=[*request_telemetry(settings, telemetry, graphql.auth),
                    *transport.middleware(settings)],
    )
    # No redirect from /graphql/ to /graphql: Starlette builds it from the Host header,
    # which the caller chooses (a redirect to http://evil.example/graphql); a 404 instead.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.client = client
    app.state.caching = caching
    app.state.telemetry = telemetry
    app.state.events_received = 0
    app.state.hub = hub
    app.state.streams = streams
    return LeanGraphQL(app, graphql, settings, telemetry) if settings.lean_path else app
