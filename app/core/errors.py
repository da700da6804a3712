"""The gateway's own errors: each carries the `extensions.code` a client sees.

Upstream failures are classified in `app.upstream.failures`; errors of a GraphQL result are
given their codes in `app.execution.errors`.
"""

from __future__ import annotations

from typing import Any

from cross_web import HTTPException


class GatewayError(Exception):
    """An error whose message is safe to show to a client."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, *, code: str | None = None, **extensions: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.extensions = {k: v for k, v in extensions.items() if v is not None}


class BadUserInput(GatewayError):
    code = "BAD_USER_INPUT"


class Unauthenticated(GatewayError):
    code = "UNAUTHENTICATED"


class Forbidden(GatewayError):
    """The caller may not read this field or make this change."""

    code = "FORBIDDEN"


class Refused(GatewayError):
    """A service refused the client's input for a business reason (not enough stock, an
    order already shipped): a mutation reports it in its payload's `errors`."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field

    def payload(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "field": self.field}


class HTTPRefusal(HTTPException):
    """A request refused before GraphQL runs (a bad header), with its `extensions.code`."""

    def __init__(self, status_code: int, reason: str, code: str,
                 headers: dict[str, str] | None = None,
                 extensions: dict[str, Any] | None = None) -> None:
        super().__init__(status_code, reason)
        self.code = code
        self.headers = headers
        self.extensions = extensions or {}  # besides the code: the figures of a limit


# A request refused at the HTTP level -> its `extensions.code` (Apollo Server's names).
HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
              413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


def http_refusal_body(error: HTTPException) -> dict[str, Any]:
    """The GraphQL-shaped body of a refused request: a client reads one error format."""
    return {"errors": [{"message": error.reason, "extensions": refusal_extensions(error)}]}


def refusal_extensions(error: HTTPException) -> dict[str, Any]:
    """A refusal's `extensions`: its code, and the figures of the limit it is over."""
    code = getattr(error, "code", None) or HTTP_CODES.get(error.status_code, "BAD_REQUEST")
    return {"code": code, **getattr(error, "extensions", {})}


# The `extensions.code` values that are the client's own doing: what it sent, who it is,
# what it asked for, how often. A request whose errors all have one of these does not count
# against the availability SLO (ops/prometheus/slo.rules.yml, README: For SREs); any other
# code, an unknown one included, is the gateway's or an upstream's failure and does.
CLIENT_FAULT_CODES = frozenset({
    "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT", "BAD_REQUEST",
    "QUERY_TOO_COMPLEX", "RATE_LIMITED", "PERSISTED_QUERY_NOT_FOUND",
    "PERSISTED_QUERY_REQUIRED", "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND",
    "BATCH_TOO_LARGE", "BATCHING_DISABLED", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE",
    "METHOD_NOT_ALLOWED",
})


def fault(codes: frozenset[str] | set[str]) -> str:
    """Whose failure a request's error codes are: none (no error), client (all the
    client's own), server (any other)."""
    if not codes:
        return "none"
    return "client" if codes <= CLIENT_FAULT_CODES else "server"
