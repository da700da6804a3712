"""Prometheus metrics. The cache's counters live here so the telemetry work finds them in one
place; `/metrics` serves the default registry."""

from __future__ import annotations

from prometheus_client import Counter

CACHE_EVENTS = Counter(
    "gateway_cache_events_total",
    "Entity cache lookups and evictions, by entity type and outcome "
    "(hit, miss, stale, eviction).",
    ["entity", "outcome"],
)
