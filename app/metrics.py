"""Prometheus metrics, all in one place; `/metrics` serves the default registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CACHE_EVENTS = Counter(
    "gateway_cache_events_total",
    "Entity cache lookups and evictions, by entity type and outcome "
    "(hit, miss, stale, eviction).",
    ["entity", "outcome"],
)

UPSTREAM_CALLS = Counter(
    "gateway_upstream_calls_total",
    "Logical upstream calls (retries included in one), by service, route template and outcome "
    "(OK or the error code).",
    ["service", "route", "outcome"],
)
UPSTREAM_RETRIES = Counter(
    "gateway_upstream_retries_total", "Upstream attempts that were retries, by service.",
    ["service"],
)
RETRY_BUDGET_REFUSALS = Counter(
    "gateway_retry_budget_refusals_total",
    "Retries not made because the service's retry budget was spent, by service.",
    ["service"],
)
BREAKER_STATE = Gauge(
    "gateway_circuit_state",
    "Circuit breaker state per service: 0 closed, 1 half-open, 2 open.",
    ["service"],
)
BREAKER_OPENED = Counter(
    "gateway_circuit_opened_total", "Times a service's circuit breaker opened.", ["service"],
)
