"""Every upstream failure is one of a few kinds, classified here in one table: the code a
client sees, whether the client retries, whether a retry could help, and whether it counts
against the service in its breaker. Nothing else in the gateway decides what a failure means.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import GatewayError


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
