"""What an answer carries for whoever debugs it: the trace id on every error (a support
ticket quoting one leads to its trace), the waterfall for a caller allowed to ask for it,
and the notice that stale data was served."""

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
    if context.policy.stale:
        # Data older than its TTL was served because an upstream failed.
        out["extensions"] = {**(out.get("extensions") or {}), "cache": {"stale": True}}
