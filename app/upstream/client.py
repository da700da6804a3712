"""The one HTTP client the gateway uses to reach the domain services.

Everything about an upstream call is decided here, once: the shared connection pool, each
service's timeouts, the request's deadline, retries with exponential backoff and full jitter
(or the service's Retry-After), the per-service retry budget and circuit breaker, what a write
may repeat, JSON decoding, and the classification of every failure (by
`app.upstream.failures`' table) into an `UpstreamError`. Loaders and resolvers only see a
decoded body or that error (or `Refused`, `BadUserInput` where the call says which refusals
are the client's).

The retry policy tells a flaky service from a dead one. A retry is granted by the service's
budget (`RetryBudget`) and refunded when the service answers it, so retries that work cost
nothing and retries that fail are capped at a share of the calls. The breaker counts calls,
each after its retries: a flaky service whose retries succeed never trips it, a dead one
trips it within `BREAKER_MIN_CALLS` calls, and from then on its calls fail at once.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import backoff
import orjson

from app.config.settings import SERVICES, Settings
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.errors import BadUserInput, Refused
from app.core.observer import NULL_OBSERVER, CallObservation, Observer
from app.upstream.failures import (
    NO_VERDICT,
    REFUSALS_SHOWN,
    UpstreamError,
    outcome_unknown,
    status_failure,
    upstream_failure,
)
from app.upstream.resilience import CircuitBreaker, Deadline, RetryBudget, State

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
Check = Callable[[Any], "str | None"]  # what is off-contract in a decoded body, or None
MIN_ATTEMPT_S = 0.005  # below this much time left, an attempt could not finish: don't start it
MAX_UNSCOPED_WAIT_S = 5.0  # the longest Retry-After honoured outside a request's deadline


@dataclass
class CallScope:
    """What a request's upstream calls share: its deadline, and how many were made (for the
    access log; each call's detail is in its span)."""

    deadline: Deadline | None = None
    calls: int = 0


class ServiceGuard:
    """One service's timeouts, retry budget and circuit breaker."""

    def __init__(self, service: str, settings: Settings, total: float, connect: float,
                 observer: Observer = NULL_OBSERVER, clock: Clock = SYSTEM_CLOCK) -> None:
        self.service = service
        self.observer = observer
        self._now = clock.monotonic
        self.not_before = 0.0  # no retry to this service before (its last Retry-After)
        self.total = total
        self.connect = connect
        self.timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect)
        self.budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min_per_s,
                                  settings.retry_budget_window_s, clock)
        self.breaker = (
            CircuitBreaker(settings.breaker_failure_rate, settings.breaker_min_calls,
                           settings.breaker_window_s, settings.breaker_open_s,
                           settings.breaker_probes, clock)
            if settings.breaker_enabled else None
        )
        observer.breaker_changed(service, 0, False)

    def allow(self) -> bool | None:
        """None when the breaker refuses the attempt; else whether the attempt is its probe."""
        if self.breaker is None:
            return False
        before = self.breaker.state
        permit = self.breaker.allow()
        self._publish(before)
        return permit

    @property
    def closed(self) -> bool:
        """Whether a failed attempt may be retried: not while the breaker is open (the retry
        would be refused) or half-open (the attempt was its probe, or a probe is out)."""
        return self.breaker is None or self.breaker.state is State.CLOSED

    def hold(self, seconds: float) -> None:
        """The service asked for `seconds` of quiet (Retry-After): no retry before then."""
        self.not_before = max(self.not_before, self._now() + seconds)

    def held_for(self) -> float:
        return max(0.0, self.not_before - self._now())

    def record(self, ok: bool | None, probe: bool) -> None:
        """A call's outcome, after its retries: ok, failed, or None when it says nothing of
        the service."""
        if self.breaker is None:
            return
        if ok is None:
            if probe:
                self.breaker.release()
            return
        before = self.breaker.state
        self.breaker.record(ok, probe)
        self._publish(before)

    def _publish(self, before: State) -> None:
        """Report a state change, if the last step made one."""
        assert self.breaker is not None
        state = self.breaker.state
        if state is not before:
            self.observer.breaker_changed(self.service, state, state is State.OPEN)

    @property
    def state(self) -> str:
        return "disabled" if self.breaker is None else self.breaker.state.name.lower()


class UpstreamClient:
    def __init__(self, settings: Settings, observer: Observer = NULL_OBSERVER,
                 trace_configs: list[aiohttp.TraceConfig] | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock  # the budgets', breakers' and retry waits' time
        self.observer = observer
        # aiohttp's own hooks (app.telemetry: a client span per attempt, with traceparent).
        self.trace_configs = trace_configs
        self.base_urls = {s: settings.service_url(s) for s in SERVICES}
        self.guards = {
            service: ServiceGuard(service, settings, total, connect, observer, clock)
            for service, (total, connect) in settings.service_timeouts().items()
        }
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # One session for the app's lifetime: keep-alive connections are reused across
        # requests, which is most of an upstream call's cost on a fast network.
        connector = aiohttp.TCPConnector(
            limit=self.settings.upstream_pool_size * len(SERVICES),
            limit_per_host=self.settings.upstream_pool_size,
            ttl_dns_cache=300,
            keepalive_timeout=self.settings.upstream_keepalive_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda o: orjson.dumps(o).decode(),
            skip_auto_headers=("User-Agent",),
            trace_configs=self.trace_configs,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def scoped(self, scope: CallScope) -> ScopedClient:
        return ScopedClient(self, scope)

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        route: str | None = None,
        read: bool | None = None,
        check: Check | None = None,
        client_input: str | None = None,
        refusals: Mapping[str, tuple[str, str | None]] | None = None,
        scope: CallScope | None = None,
        answer: list[int] | None = None,
    ) -> Any:
        """Call `service` and return its decoded JSON body, or raise `UpstreamError`.

        `read` says the call changes nothing (by default: a GET); a read may be repeated. A
        write may be repeated when it carries an Idempotency-Key header (the service then
        carries it out at most once); without one, only when it never reached the service (no
        connection could be opened). A write that fails after it may have been carried out
        (no answer once sent, an unreadable answer, a 5xx other than 503) raises
        UPSTREAM_OUTCOME_UNKNOWN instead of the failure. `route` names the call in telemetry
        (a path template, never one with ids in it); it defaults to `path`. `check` tells
        what is wrong with a decoded 2xx body (None when it is the contract's shape): such an
        answer fails like an unparseable one. `client_input` names the client's argument
        that a 400 answer refuses (a cursor): then the error is the client's BAD_USER_INPUT.
        With `refusals` (a write), the service's refusal of the input (400, 404, 409) raises
        `Refused` with the code and field the table gives the service's error code; every
        other failure stays an `UpstreamError`. `answer`, if given, receives the successful
        answer's HTTP status and the number of attempts that went out (a write's 200 after a
        retry may be the service's replay of what the first attempt did).
        """
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        if read is None:
            read = method == "GET"
        keyed = not read and headers is not None and "Idempotency-Key" in headers
        guard = self.guards[service]
        deadline = scope.deadline if scope is not None else None
        url = self.base_urls[service] + path
        data = orjson.dumps(json) if json is not None else None
        hdrs = {**JSON_HEADERS, **headers} if headers else JSON_HEADERS
        route = route or path
        with self.observer.call(service, method, route) as call:
            try:
                return await self._call(guard, call, method, url, params, data, hdrs,
                                        read, keyed, deadline, check, scope, answer)
            except UpstreamError as err:
                if refusals is not None and err.status in REFUSALS_SHOWN:
                    code, field = refusals.get(err.upstream_code or "", ("BAD_USER_INPUT", None))
                    raise Refused(code, err.upstream_message or str(err), field) from err
                if err.status == 400 and client_input is not None:
                    raise BadUserInput(f"`{client_input}` is not valid for this list",
                                       field=client_input) from err
                raise

    async def _call(self, guard: ServiceGuard, call: CallObservation, method: str, url: str,
                    params: Mapping[str, str] | None, data: bytes | None,
                    hdrs: Mapping[str, str], read: bool, keyed: bool,
                    deadline: Deadline | None, check: Check | None,
                    scope: CallScope | None, answer: list[int] | None = None) -> Any:
        service = guard.service
        budget = guard.budget
        sent = 0  # attempts that went out; retries are the ones after the first
        waits: Iterator[float] | None = None
        # Unbound when the call ends (`finally`), see there.
        err: UpstreamError | None = None
        previous: UpstreamError | None = None
        unknown: UpstreamError | None = None
        granted = False  # the budget granted the retry about to go out
        unsettled = False  # a write's attempt failed in a way it may have been carried out
        probe_taken = False
        verdict: bool | None = None  # the call's outcome for the breaker; None: no verdict
        try:
            while True:
                try:
                    limits = self._admit(guard, deadline)
                    probe = guard.allow()
                    if probe is None:
                        assert guard.breaker is not None
                        raise upstream_failure("circuit_open", service,
                                               f"{guard.breaker.retry_in():.1f} s")
                except UpstreamError as refused:  # nothing went out
                    err = refused
                    if granted:
                        budget.refund()  # a granted retry that never went out costs nothing
                else:
                    probe_taken = probe_taken or probe
                    if sent == 0:
                        budget.record_call()  # the budget counts calls that went out
                    sent += 1
                    call.attempt(sent)
                    try:
                        body, status = await self._send(guard, method, url, params, data,
                                                        hdrs, limits, deadline, check)
                    except UpstreamError as failed:
                        err = failed
                        if granted and _verdict(failed):
                            budget.refund()  # answered, if only with a refusal: not down
                    else:
                        if granted:
                            budget.refund()  # the retry worked: the service is flaky, not down
                        verdict = True
                        self._ended(call, scope, sent - 1, None)
                        if answer is not None:
                            answer.extend((status, sent))
                        return body
                unsettled = unsettled or err.failure.unsettled
                retries = max(0, sent - 1)
                # A read or a keyed write may be repeated; any write, if it never went out.
                repeat = (err.failure.retry and guard.closed
                          and (read or keyed or not err.failure.sent))
                if repeat and waits is None:
                    waits = self._waits()  # the first repeatable failure
                wait = self._retry_wait(guard, err, retries, deadline,
                                        waits if repeat else None)
                if wait is None:
                    if previous is not None and err.failure in NO_VERDICT:
                        # A retry that the deadline cut short, or that the breaker (opened by
                        # the failure before it) refused: that failure is the news.
                        err = previous
                    verdict = _verdict(err)
                    if not read and unsettled and not _settles(err):
                        # Sent, and no answer says it was not carried out: the client must
                        # not take it for a failure (README: Nothing lost).
                        unknown = outcome_unknown(err, keyed)
                        self._ended(call, scope, retries, unknown)
                        raise unknown.settle(retries) from err
                    self._ended(call, scope, retries, err)
                    raise err.settle(retries) from err.__cause__
                previous = err
                granted = True
                call.retry(sent + 1, err.code, wait)
                if wait > 0:
                    await self.clock.sleep(wait)
        finally:
            # Once per call, whatever ended it (a cancelled request too): its verdict, or
            # none, which frees the probe slot if the call held it.
            guard.record(verdict, probe_taken)
            # The error raised from here holds this frame in its traceback, and the frame held
            # the error: a cycle that kept the frame (the call's body, headers, scope) until
            # the rarely run cycle collector (app/http/app.py, tune_gc) found it. The soak
            # (bench/RESULTS.md) held hundreds of them, the placeOrder refusals (409s).
            err = previous = unknown = None

    @staticmethod
    def _ended(call: CallObservation, scope: CallScope | None, retries: int,
               error: UpstreamError | None) -> None:
        """A logical call ended, ok or with `error`: reported, and counted for the request."""
        if error is None:
            call.end(retries, None)
        else:
            call.end(retries, error.code, str(error))
        if scope is not None:
            scope.calls += 1

    # -- one attempt ------------------------------------------------------------------------
    @staticmethod
    def _admit(guard: ServiceGuard, deadline: Deadline | None) -> aiohttp.ClientTimeout:
        """The attempt's timeouts; or the deadline error when too little time is left."""
        if deadline is None:
            return guard.timeout
        left = deadline.remaining()
        if left < MIN_ATTEMPT_S:
            raise upstream_failure("deadline", guard.service)
        if left < guard.total:
            # The deadline comes first: the attempt gets what is left of it.
            return aiohttp.ClientTimeout(total=left, sock_connect=min(guard.connect, left))
        return guard.timeout

    async def _send(self, guard: ServiceGuard, method: str, url: str,
                    params: Mapping[str, str] | None, data: bytes | None,
                    hdrs: Mapping[str, str], limits: aiohttp.ClientTimeout,
                    deadline: Deadline | None, check: Check | None) -> tuple[Any, int]:
        """One attempt: the decoded body and its status, or the classified failure."""
        service = guard.service
        assert self._session is not None
        try:
            async with self._session.request(method, url, params=params, data=data,
                                             headers=hdrs, timeout=limits) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = (resp.headers.get("Retry-After") if status in (429, 503)
                               else None)
        except TimeoutError as err:
            # aiohttp's connect timeout is raised before anything is written; its total
            # timeout may fire in any phase, so the request may have gone out.
            connecting = isinstance(err, aiohttp.ConnectionTimeoutError)
            if deadline is not None and deadline.remaining() < MIN_ATTEMPT_S:
                # The request ran out of time, not the service (a connect timeout ends
                # with time left): no verdict on the service.
                raise upstream_failure("deadline" if connecting else "deadline_cut",
                                       service) from None
            raise upstream_failure("connect_timeout" if connecting else "timeout",
                                   service) from None
        except aiohttp.ClientResponseError as err:
            # A reply that is not valid HTTP (a bad status line, oversized headers).
            raise upstream_failure("bad_body", service, "not a valid HTTP reply") from err
        except aiohttp.ClientConnectorError as err:
            raise upstream_failure("connection", service) from err
        except (aiohttp.ClientError, OSError) as err:
            raise upstream_failure("dropped", service) from err
        value = _decode(service, status, body, retry_after)
        wrong = check(value) if check is not None else None
        if wrong is not None:
            raise upstream_failure("bad_body", service, wrong)
        return value, status

    # -- retries ----------------------------------------------------------------------------
    def _waits(self) -> Iterator[float]:
        # backoff's own generator: base * 2^n, capped; full jitter is applied per wait. The
        # backoff decorators are not used because whether to retry is decided per attempt
        # by the budget, the deadline and Retry-After, which they cannot express.
        waits = backoff.expo(base=2, factor=self.settings.retry_base_s,
                             max_value=self.settings.retry_max_backoff_s)
        next(waits)  # backoff's generators yield None first, to be primed
        return waits

    def _retry_wait(self, guard: ServiceGuard, err: UpstreamError, retries: int,
                    deadline: Deadline | None, waits: Iterator[float] | None) -> float | None:
        """How long to wait before the next attempt, or None to give up with `err`. `waits`
        exist only for a call that may repeat `err`."""
        if err.retry_after is not None:
            guard.hold(err.retry_after)  # whether or not this call retries
        if waits is None or not err.failure.retry:
            return None
        if retries + 1 >= self.settings.retry_max_attempts:
            return None
        if err.retry_after is not None:
            wait = err.retry_after  # the service said when: no jitter
        else:
            wait = backoff.full_jitter(next(waits))
        # Another call's Retry-After holds every retry to the service.
        wait = max(wait, guard.held_for())
        if deadline is not None and deadline.remaining() - wait < MIN_ATTEMPT_S:
            return None  # the retry could not finish before the deadline
        if deadline is None and wait > MAX_UNSCOPED_WAIT_S:
            return None  # work outside a request (event handling) does not wait for long
        if not guard.budget.try_spend():
            self.observer.retry_refused(guard.service)
            return None
        return wait

    # -- readiness --------------------------------------------------------------------------
    async def probe(self, service: str, within_s: float) -> bool:
        """Whether `service` answers its health check; outside the breaker and the budget."""
        assert self._session is not None
        try:
            # Probes are not requests: no client span (each would be a trace of its own).
            with self.observer.quiet():
                async with self._session.get(
                    self.base_urls[service] + "/healthz",
                    timeout=aiohttp.ClientTimeout(total=within_s),
                ) as resp:
                    await resp.read()
                    return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False


class ScopedClient:
    """The client as one request uses it: every call carries the request's scope."""

    __slots__ = ("client", "scope")

    def __init__(self, client: UpstreamClient, scope: CallScope) -> None:
        self.client = client
        self.scope = scope

    async def request(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        return await self.client.request(service, method, path, scope=self.scope, **kwargs)


def _verdict(err: UpstreamError) -> bool | None:
    """What a failure says of the service: None (nothing: it was not reached, or the
    request's own deadline cut the wait), False (it failed), True (it answered, if only to
    refuse)."""
    if err.failure in NO_VERDICT:
        return None
    return not err.failure.trips


def _settles(err: UpstreamError) -> bool:
    """Whether the service's answer decides a write, whatever an earlier attempt did: a
    refusal (a 4xx other than 429). With an idempotency key, an earlier attempt that had
    been carried out would have been answered again instead."""
    return err.status is not None and 400 <= err.status < 500 and err.status != 429


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _decode(service: str, status: int, body: bytes, retry_after: str | None) -> Any:
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
        if 200 <= status < 300:
            raise upstream_failure("bad_body", service, "the body is not JSON") from None
    if 200 <= status < 300:
        return payload
    upstream_code = message = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        upstream_code = payload["error"].get("code")
        message = payload["error"].get("message")
        if not isinstance(message, str):
            message = None
    raise status_failure(service, status, upstream_code, message, _retry_after(retry_after))


