"""What an answer carries for whoever debugs it: the trace id on every error (a support
ticket quoting one leads to its trace), the waterfall for a caller allowed to ask for it,
and the notices that stale data was served or that a write's evictions wait for Redis."""

from __future__ import annotations

from typing import Any

from strawberry.http import GraphQLHTTPResponse

from app.execution.context import RequestContext
from app.telemetry.tracing import Telemetry
from app.telemetry.waterfall import waterfall


def annotate(processed: GraphQLHTTPResponse, context: RequestContext,
             telemetry: Telemetry) -> None:
    trace_id = format(context.trace_id, "032x") if context.trace_id else None
    out: dict[str, Any] = processed  # type: ignore[assignment]  # extensions is ours to add
    if trace_id and out.get("errors"):
        # A copy: the extensions may be those of an error the validation cache shares.
        for error in out["errors"]:
            error["extensions"] = {**(error.get("extensions") or {}), "traceId": trace_id}
    if context.debug:
        # The waterfall: resolver and upstream timings, retries and error classes, from
        # the request's spans (recorded for this caller whatever the sampling).
        spans = telemetry.requests.take(context.trace_root)
        out["extensions"] = {**(out.get("extensions") or {}),
                             "debug": {"traceId": trace_id, **waterfall(spans)}}
    cache: dict[str, bool] = {}
    if context.policy.stale:
        cache["stale"] = True  # data older than its TTL was served: an upstream failed
    if context.policy.evictions_held:
        # The write stands, but the other replicas may serve the old value until Redis is
        # back: read-your-writes holds only on this replica meanwhile.
        cache["evictionsHeld"] = True
    if cache:
        out["extensions"] = {**(out.get("extensions") or {}), "cache": cache}
