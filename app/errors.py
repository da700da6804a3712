"""Gateway errors and their classification into `extensions.code`.

Every error a client sees is classified here, in one table, rather than by `if`s spread
through resolvers: upstream failures carry the service and whether a retry could help.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError

log = logging.getLogger("gateway.errors")


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


class UpstreamError(GatewayError):
    """An upstream call failed; `status` is the HTTP status when there was an answer."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        service: str,
        status: int | None = None,
        upstream_code: str | None = None,
        upstream_message: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, code=code, service=service, retryable=retryable)
        self.service = service
        self.status = status
        self.upstream_code = upstream_code
        self.upstream_message = upstream_message
        self.retryable = retryable


# HTTP status of an upstream answer -> (extensions.code, retryable).
STATUS_CODES: dict[int, tuple[str, bool]] = {
    400: ("UPSTREAM_BAD_REQUEST", False),
    401: ("UPSTREAM_UNAUTHORIZED", False),
    403: ("UPSTREAM_FORBIDDEN", False),
    404: ("NOT_FOUND", False),
    409: ("CONFLICT", False),
    429: ("UPSTREAM_RATE_LIMITED", True),
    502: ("UPSTREAM_UNAVAILABLE", True),
    503: ("UPSTREAM_UNAVAILABLE", True),
    504: ("UPSTREAM_TIMEOUT", True),
}


def classify_status(status: int) -> tuple[str, bool]:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    if status >= 500:
        return "UPSTREAM_UNAVAILABLE", False
    return "UPSTREAM_BAD_RESPONSE", False


def _classify(error: GraphQLError) -> tuple[str, dict[str, Any], bool]:
    """Return (code, extra extensions, whether the message must be masked)."""
    original = error.original_error
    if isinstance(original, GatewayError):
        return original.code, original.extensions, False
    if isinstance(error, GraphQLSyntaxError) or isinstance(original, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED", {}, False
    if error.path is None:
        # A request error raised by graphql-core before any resolver ran: the variables did
        # not coerce to their declared types, or the document failed validation.
        if error.message.startswith("Variable '$"):
            return "BAD_USER_INPUT", {}, False
        if original is None:
            return "GRAPHQL_VALIDATION_FAILED", {}, False
    # Anything else under a field is ours: a resolver's exception, or a value that failed
    # to serialize (an upstream answered off-contract). Masked, and logged in full.
    return "INTERNAL_SERVER_ERROR", {}, True


def classify_errors(errors: list[GraphQLError]) -> None:
    """Give every error an `extensions.code`; mask unexpected exceptions and log them.

    Called by the schema for every list of errors on every path (parse, validation,
    execution), so no error reaches a client unclassified. Idempotent: Strawberry may hand
    the same error over twice.
    """
    for error in errors:
        if error.extensions and "code" in error.extensions:
            continue
        code, extra, mask = _classify(error)
        if mask:
            log.error("unexpected error at %s", error.path, exc_info=error.original_error)
            error.message = "Internal server error"
        error.extensions = {**(error.extensions or {}), **extra, "code": code}
