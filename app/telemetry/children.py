"""Label children of the hot paths' metrics, bound once (prometheus_client checks the values
and takes a lock on every `labels()` call). The label values kept here are bounded: services,
routes, loaders, entity types, outcomes, and operation and client names already bounded by
`app.telemetry.metrics`."""

from __future__ import annotations

from typing import TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)
_children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, bound once and kept."""
    key = (id(metric), values)
    series = _children.get(key)
    if series is None:
        series = _children[key] = metric.labels(*values)
    return series  # type: ignore[return-value]  # (stored by the metric's own labels())
