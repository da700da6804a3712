"""What a GraphQL answer says besides its data: Cache-Control and Vary from the operation's
cache policy, the status code GraphQL over HTTP gives a request that never ran, how the
request ended (for metrics and logs), and its cost when the client asks."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from app.execution.context import RequestContext
from app.http.negotiation import GRAPHQL_RESPONSE
from app.telemetry.requests import DEBUG_HEADER
from schema.deprecations import DEPRECATED

# A client that sends this header (any value) gets `extensions.cost`: the operation's
# estimated and actual cost by the IBM cost directives, and the limit (README: For
# third-party developers, Cost).
COST_HEADER = "x-gateway-cost"

# Apollo's client awareness header (Apollo Client's `clientAwareness.name`): which app a
# request comes from, for the deprecated fields' usage per client (labelled as the client
# requests are: app/telemetry/requests.py).
CLIENT_NAME_HEADER = "apollographql-client-name"

# The codes of a request refused before it ran for the client's own reasons; anything else
# without data is this gateway's failure (an exception in an extension, say).
CLIENT_CODES = frozenset({
    "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT", "BAD_REQUEST",
    "QUERY_TOO_COMPLEX", "RATE_LIMITED", "PERSISTED_QUERY_NOT_FOUND",
    "PERSISTED_QUERY_REQUIRED", "UNAUTHENTICATED", "FORBIDDEN",
})


def never_ran(result: ExecutionResult) -> bool:
    """Stopped before execution (parse, validation, variables, limits, or a failure on the
    way): no data, and no error with a path, which only field errors have."""
    return result.data is None and bool(result.errors) \
        and not any(error.path for error in result.errors or ())


def client_fault(errors: list[Any]) -> bool:
    """Every error is one the client caused (the codes as the client sees them)."""
    return all((e.get("extensions") or {}).get("code") in CLIENT_CODES for e in errors)


def cache_headers(context: RequestContext, response: Response, failed: bool) -> None:
    """Cache-Control from the response's policy; Vary on what changes the answer."""
    response.headers["Cache-Control"] = context.response_policy(failed).header()
    # The media type follows Accept: a shared cache must keep one per Accept.
    response.headers["Vary"] = "Accept"
    if context.debug:
        # A waterfall is for its caller alone: no shared cache may keep it for others.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = f"Accept, {DEBUG_HEADER}"


def settle_status(context: RequestContext, response: Response, result: ExecutionResult,
                  processed: GraphQLHTTPResponse, media_type: str) -> None:
    """The status code, and the request's outcome (ok, partial, refused, error)."""
    stopped = never_ran(result)
    errors: list[Any] = list(processed.get("errors") or [])
    # Refused: it never ran, and the client is to fix it; not an error of this gateway's.
    refused = stopped and client_fault(errors)
    if media_type == GRAPHQL_RESPONSE and stopped:
        # The specification's status for a request that never ran, and no data entry.
        processed.pop("data", None)
        if response.status_code in (None, 200):
            response.status_code = 400 if refused else 500
    context.error_codes = frozenset(
        str((e.get("extensions") or {}).get("code")) for e in errors)
    context.outcome = ("ok" if not result.errors
                       else "partial" if result.data is not None
                       else "refused" if refused else "error")


def report_cost(processed: GraphQLHTTPResponse, context: RequestContext,
                response: Response) -> None:
    """`extensions.cost`: estimated (null: the operation was not measured: it did not parse
    or validate, or came from the response cache), actual (null: it did not run), max."""
    out: dict[str, Any] = processed  # type: ignore[assignment]  # extensions is ours to add
    estimated = context.cost if context.cost_measured else None
    out["extensions"] = {**(out.get("extensions") or {}), "cost": {
        "estimated": estimated, "actual": context.cost_actual,
        "max": context.settings.max_query_cost}}
    # The body depends on the header: a cache must not give this answer to others.
    vary = response.headers.get("Vary")
    response.headers["Vary"] = f"{vary}, {COST_HEADER}" if vary else COST_HEADER


def report_deprecations(processed: GraphQLHTTPResponse, coordinates: frozenset[str],
                        response: Response) -> None:
    """The answer used deprecated fields: `Deprecation` (RFC 9745: when the first of them
    was deprecated), `Sunset` (RFC 8594: when the first of them goes) and a warning per
    field in `extensions.warnings` (what to use instead, and when it goes)."""
    known = [(c, DEPRECATED[c]) for c in sorted(coordinates) if c in DEPRECATED]
    if not known:
        return
    response.headers["Deprecation"] = min((d for _, d in known),
                                          key=lambda d: d.since).deprecation_header()
    response.headers["Sunset"] = min((d for _, d in known),
                                     key=lambda d: d.removal).sunset_header()
    out: dict[str, Any] = processed  # type: ignore[assignment]  # extensions is ours to add
    warnings = list((out.get("extensions") or {}).get("warnings") or [])
    warnings += [{"message": f"{c} is deprecated: {d.reason}",
                  "extensions": {"code": "DEPRECATED_FIELD", "coordinate": c,
                                 "replacement": d.replacement,
                                 "deprecatedOn": d.since.isoformat(),
                                 "removalOn": d.removal.isoformat()}}
                 for c, d in known]
    out["extensions"] = {**(out.get("extensions") or {}), "warnings": warnings}
