"""Gateway errors and their classification into `extensions.code`.

Every error a client sees is classified here, in one table, rather than by `if`s spread
through resolvers: upstream failures carry the service and whether a retry could help.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cross_web import HTTPException
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


class Forbidden(GatewayError):
    """The caller may not read this field or make this change."""

    code = "FORBIDDEN"


class HTTPRefusal(HTTPException):
    """A request refused before GraphQL runs (a bad header), with its `extensions.code`."""

    def __init__(self, status_code: int, reason: str, code: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, reason)
        self.code = code
        self.headers = headers


# A request refused at the HTTP level -> its `extensions.code` (Apollo Server's names).
HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
              413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


def http_refusal_body(error: HTTPException) -> dict[str, Any]:
    """The GraphQL-shaped body of a refused request: a client reads one error format."""
    code = getattr(error, "code", None) or HTTP_CODES.get(error.status_code, "BAD_REQUEST")
    return {"errors": [{"message": error.reason, "extensions": {"code": code}}]}


class UpstreamError(GatewayError):
    """An upstream call failed. Built by `upstream_failure` from the table below; `status` is
    the HTTP status when the service answered at all."""

    def __init__(
        self,
        message: str,
        *,
        failure: Failure,
        service: str,
        status: int | None = None,
        upstream_code: str | None = None,
        upstream_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=failure.code, service=service,
                         retryable=failure.transient)
        self.failure = failure
        self.service = service
        self.status = status
        self.upstream_code = upstream_code
        self.upstream_message = upstream_message
        self.retry_after = retry_after

    def settle(self, retries: int) -> UpstreamError:
        """The error as the caller sees it once the client gives up: with its retry count."""
        self.extensions["retries"] = retries
        return self


@dataclass(frozen=True)
class Failure:
    """How one kind of upstream failure is treated, everywhere: the code a client sees;
    whether the client retries the attempt (`retry`); whether a later retry could succeed,
    shown to clients as `extensions.retryable` (`transient`); whether it counts against
    the service in its circuit breaker (`trips`)."""

    code: str
    retry: bool
    transient: bool
    trips: bool


# The classification table: every upstream failure is one of these, and nothing else in the
# gateway decides what a failure means.
FAILURES: dict[str, Failure] = {
    # No answer.
    "timeout": Failure("UPSTREAM_TIMEOUT", retry=True, transient=True, trips=True),
    "connection": Failure("UPSTREAM_UNAVAILABLE", retry=True, transient=True, trips=True),
    # An answer the gateway cannot use: not JSON, truncated, or not the contract's shape.
    "bad_body": Failure("UPSTREAM_BAD_RESPONSE", retry=False, transient=False, trips=True),
    # Refused before any network call: the service's breaker is open.
    "circuit_open": Failure("CIRCUIT_OPEN", retry=False, transient=True, trips=False),
    # The request's deadline came before an answer (or before the call could start); the
    # service's own timeout did not pass, so this says nothing against the service.
    "deadline": Failure("DEADLINE_EXCEEDED", retry=False, transient=True, trips=False),
}
# Failures that say nothing against the service: no request reached it, or the caller's
# own deadline cut the wait short.
NO_VERDICT = (FAILURES["deadline"], FAILURES["circuit_open"])
# By HTTP status of the answer.
STATUS_FAILURES: dict[int, Failure] = {
    404: Failure("NOT_FOUND", retry=False, transient=False, trips=False),
    429: Failure("UPSTREAM_RATE_LIMITED", retry=True, transient=True, trips=False),
    500: Failure("UPSTREAM_UNAVAILABLE", retry=False, transient=False, trips=True),
    502: Failure("UPSTREAM_UNAVAILABLE", retry=True, transient=True, trips=True),
    503: Failure("UPSTREAM_UNAVAILABLE", retry=True, transient=True, trips=True),
    504: Failure("UPSTREAM_TIMEOUT", retry=True, transient=True, trips=True),
}
# Any other 5xx is the service failing; any other 4xx (400, 401, 403, 409...) refuses what
# the gateway sent, which the gateway cannot fix by itself: the service's answer is unusable.
OTHER_5XX = Failure("UPSTREAM_UNAVAILABLE", retry=False, transient=False, trips=True)
OTHER_4XX = Failure("UPSTREAM_BAD_RESPONSE", retry=False, transient=False, trips=False)
# An answer outside 1xx-5xx, or a 1xx/3xx the client did not follow.
ODD_STATUS = Failure("UPSTREAM_BAD_RESPONSE", retry=False, transient=False, trips=True)

MESSAGES = {
    "timeout": "{service} did not answer in time",
    "connection": "{service} is unavailable",
    "bad_body": "{service} answered off-contract: {detail}",
    "circuit_open": "{service} is failing; calls to it are paused for {detail}",
    "deadline": "The request's deadline passed before {service} answered",
}


REFUSALS_SHOWN = frozenset({400, 404, 409})


def classify_status(status: int) -> Failure:
    failure = STATUS_FAILURES.get(status)
    if failure is not None:
        return failure
    if 500 <= status < 600:
        return OTHER_5XX
    if 400 <= status < 500:
        return OTHER_4XX
    return ODD_STATUS


def upstream_failure(kind: str, service: str, detail: str = "") -> UpstreamError:
    """An error of one of the `FAILURES` kinds."""
    return UpstreamError(MESSAGES[kind].format(service=service, detail=detail),
                         failure=FAILURES[kind], service=service)


def status_failure(service: str, status: int, upstream_code: str | None,
                   message: str | None, retry_after: float | None) -> UpstreamError:
    """An error for a non-2xx answer. The service's own message is shown only for its
    refusals of the client's input; other answers may hold internals, so they stay in the
    error (and the logs), not in what the client reads."""
    shown = message if status in REFUSALS_SHOWN else None
    return UpstreamError(
        f"{service} answered {status}" + (f": {shown}" if shown else ""),
        failure=classify_status(status), service=service, status=status,
        upstream_code=upstream_code, upstream_message=message, retry_after=retry_after,
    )


# Completion failures: a value that does not fit its GraphQL type. Resolvers hand upstream
# values on as they came, so such a value is an upstream answering off-contract.
COMPLETION_ERRORS = ("Cannot return null for non-nullable field", "Expected Iterable")


def _off_contract(error: GraphQLError) -> bool:
    original = error.original_error
    if isinstance(original, GraphQLError):  # a scalar's serialize() refused the value
        return True
    return isinstance(original, TypeError) and str(original).startswith(COMPLETION_ERRORS)


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
    elif _off_contract(error):
        log.warning("off-contract upstream value at %s: %s", error.path, error.message)
        return "UPSTREAM_BAD_RESPONSE", {"retryable": False}, False
    # Anything else under a field is ours: a resolver's exception. Masked, and logged in full.
    return "INTERNAL_SERVER_ERROR", {}, True


def classify_errors(errors: list[GraphQLError]) -> None:
    """Give every error an `extensions.code`; mask unexpected exceptions and log them; and
    report a failed upstream call once, with the paths of every field it failed.

    Called by the schema for every list of errors on every path (parse, validation,
    execution), so no error reaches a client unclassified; edits the list in place.
    Idempotent: Strawberry may hand the same list over twice.
    """
    by_failure: dict[int, GraphQLError] = {}
    kept: list[GraphQLError] = []
    for error in errors:
        original = error.original_error
        if isinstance(original, UpstreamError) and error.path is not None:
            # One batch (or one call) failing many fields is one error with many paths.
            first = by_failure.get(id(original))
            if first is not None:
                first.extensions["paths"].append(error.path)  # type: ignore[index]
                continue
            by_failure[id(original)] = error
        kept.append(error)
        if error.extensions and "code" in error.extensions:
            continue
        code, extra, mask = _classify(error)
        if mask:
            log.error("unexpected error at %s", error.path, exc_info=error.original_error,
                      extra={"code": code})
            error.message = "Internal server error"
        error.extensions = {**(error.extensions or {}), **extra, "code": code}
        if not mask:
            # Upstream failures are the operator's news; a client's own mistakes are not.
            fields: dict[str, Any] = {"code": code,
                                      "path": ".".join(map(str, error.path or ())) or None}
            level = logging.INFO
            if isinstance(original, UpstreamError):
                level = logging.WARNING
                fields.update(service=original.service,
                              retries=original.extensions.get("retries"))
            log.log(level, "graphql error: %s", error.message, extra=fields)
        if id(original) in by_failure:
            error.extensions["paths"] = [error.path]
    errors[:] = kept
