"""Every upstream failure is one of a few kinds, classified here in one table: the code a
client sees, whether the client retries, whether a retry could help, whether it counts
against the service in its breaker, whether the request went out at all, and whether a write
that met it may have been carried out all the same. Nothing else in the gateway decides what
a failure means.
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
        retryable: bool | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message, code=failure.code, service=service,
                         retryable=failure.transient if retryable is None else retryable,
                         cause=cause)
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
    the service in its circuit breaker (`trips`); whether the request may have reached the
    service (`sent`: a write without an idempotency key is retried only when it did not);
    whether a write that met it may have been carried out all the same (`unsettled`: no
    answer after the request went out, an answer that cannot be read, a 5xx that does not
    say the service refused the work), which the client reports as UPSTREAM_OUTCOME_UNKNOWN
    rather than as a failure."""

    code: str
    retry: bool
    transient: bool
    trips: bool
    sent: bool = True
    unsettled: bool = False


# The classification table: every upstream failure is one of these, and nothing else in the
# gateway decides what a failure means.
FAILURES: dict[str, Failure] = {
    # No answer after the request went out (or possibly went out: aiohttp's total timeout
    # does not say in which phase it fired).
    "timeout": Failure("UPSTREAM_TIMEOUT", retry=True, transient=True, trips=True,
                       unsettled=True),
    # The connection closed or reset before an answer (aiohttp does not say whether the
    # request had been written).
    "dropped": Failure("UPSTREAM_UNAVAILABLE", retry=True, transient=True, trips=True,
                       unsettled=True),
    # No connection could be opened (refused, unreachable, or the connect timeout): nothing
    # was sent.
    "connection": Failure("UPSTREAM_UNAVAILABLE", retry=True, transient=True, trips=True,
                          sent=False),
    "connect_timeout": Failure("UPSTREAM_TIMEOUT", retry=True, transient=True, trips=True,
                               sent=False),
    # An answer the gateway cannot use: not JSON, truncated, or not the contract's shape
    # (a 200 may come from a proxy's error page as well as from the service after the work).
    "bad_body": Failure("UPSTREAM_BAD_RESPONSE", retry=False, transient=False, trips=True,
                        unsettled=True),
    # Refused before any network call: the service's breaker is open.
    "circuit_open": Failure("CIRCUIT_OPEN", retry=False, transient=True, trips=False,
                            sent=False),
    # The request's deadline came before the call could start; or (`deadline_cut`) before an
    # answer to an attempt that went out. The service's own timeout did not pass, so neither
    # says anything against the service.
    "deadline": Failure("DEADLINE_EXCEEDED", retry=False, transient=True, trips=False,
                        sent=False),
    "deadline_cut": Failure("DEADLINE_EXCEEDED", retry=False, transient=True, trips=False,
                            unsettled=True),
    # A write that may or may not have been carried out: what one of the `unsettled`
    # failures above (or below) becomes when it ends a write (not a kind of attempt: the
    # client reports it). Retryable is set per call: true for a write with an idempotency
    # key (sent again with the same key, it is carried out at most once), false otherwise.
    "outcome_unknown": Failure("UPSTREAM_OUTCOME_UNKNOWN", retry=False, transient=False,
                               trips=False),
}
# Failures that say nothing against the service: no request reached it, or the caller's
# own deadline cut the wait short.
NO_VERDICT = (FAILURES["deadline"], FAILURES["deadline_cut"], FAILURES["circuit_open"])
# By HTTP status of the answer. 429 and 503 say that the service did not take the work on
# (RFC 9110: too many requests; unable to handle the request); 500, 502 and 504 do not say
# that (the service, or a proxy in front of it, may have failed after the work was done).
STATUS_FAILURES: dict[int, Failure] = {
    404: Failure("NOT_FOUND", retry=False, transient=False, trips=False),
    429: Failure("UPSTREAM_RATE_LIMITED", retry=True, transient=True, trips=False),
    500: Failure("UPSTREAM_UNAVAILABLE", retry=False, transient=False, trips=True,
                 unsettled=True),
    502: Failure("UPSTREAM_UNAVAILABLE", retry=True, transient=True, trips=True,
                 unsettled=True),
    503: Failure("UPSTREAM_UNAVAILABLE", retry=True, transient=True, trips=True),
    504: Failure("UPSTREAM_TIMEOUT", retry=True, transient=True, trips=True, unsettled=True),
}
# Any other 5xx is the service failing; any other 4xx (400, 401, 403, 409...) refuses what
# the gateway sent, which the gateway cannot fix by itself: the service's answer is unusable.
OTHER_5XX = Failure("UPSTREAM_UNAVAILABLE", retry=False, transient=False, trips=True,
                    unsettled=True)
OTHER_4XX = Failure("UPSTREAM_BAD_RESPONSE", retry=False, transient=False, trips=False)
# An answer outside 1xx-5xx, or a 1xx/3xx the client did not follow.
ODD_STATUS = Failure("UPSTREAM_BAD_RESPONSE", retry=False, transient=False, trips=True,
                     unsettled=True)

MESSAGES = {
    "timeout": "{service} did not answer in time",
    "dropped": "{service} closed the connection before answering",
    "connection": "{service} is unavailable",
    "connect_timeout": "{service} did not accept a connection in time",
    "bad_body": "{service} answered off-contract: {detail}",
    "circuit_open": "{service} is failing; calls to it are paused for {detail}",
    "deadline": "The request's deadline passed before {service} answered",
    "deadline_cut": "The request's deadline passed before {service} answered",
    "outcome_unknown": "Whether {service} made the change is unknown: {detail}",
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


def outcome_unknown(cause: UpstreamError, keyed: bool) -> UpstreamError:
    """A write ended with `cause`, after which it may have been carried out: the error says
    so (a client must not take it for a failure), names the cause's code, and is retryable
    only when the write carries an idempotency key."""
    message = str(cause)
    detail = message[0].lower() + message[1:] if message else cause.code
    return UpstreamError(MESSAGES["outcome_unknown"].format(service=cause.service,
                                                            detail=detail),
                         failure=FAILURES["outcome_unknown"], service=cause.service,
                         retryable=keyed, cause=cause.code)


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
