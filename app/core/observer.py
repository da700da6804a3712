"""What the gateway's parts report as they work, in one interface.

The loaders, the entity cache, the upstream client and the executor call an `Observer`; they
know nothing of spans or metrics. `app.telemetry.observer` implements it with OpenTelemetry
spans, Prometheus metrics and logs, and is handed to each part where the app is wired
(`app.http.app`). This base class does nothing, so a part built without one (a unit test)
runs unobserved. Every hook is cheap when nothing records: no span is made outside a recorded
trace, and the hooks on hot paths are one method call.

The events: a batch dispatched; cache hits, misses and stale values; an upstream call, its
attempts, retries and failure; a breaker's state and a retry refused by the budget; Redis
going down and up; an operation started and planned; orders placed and cancelled and reviews
added (the business counters); subscriptions opened and closed, the
change events their hub received, each event's fan-out, the messages sent, and why a
subscription connection was closed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any

_NULL: AbstractContextManager[None] = nullcontext()


class CallObservation:
    """One logical upstream call (its attempts and retries), from start to end.

    Used as a context manager around the call: the attempts run inside it (so a trace shows
    them under the call). `end` reports how the call ended; leaving the block without it
    (cancelled, or a bug) reports that instead."""

    __slots__ = ()

    def __enter__(self) -> CallObservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def attempt(self, number: int) -> None:
        """Attempt `number` (1 is the first) is about to go out."""

    def retry(self, attempt: int, code: str, wait_s: float) -> None:
        """The attempt before `attempt` failed with `code`; the next goes out after `wait_s`."""

    def end(self, retries: int, code: str | None, message: str = "") -> None:
        """The call ended: ok (`code` None) or failed with `code`, after `retries` retries."""


_NULL_CALL = CallObservation()


class FanOutObservation:
    """One change event's fan-out to its subscribers (the lookups of its entity and the
    subscribers' selections run inside it), from start to end."""

    __slots__ = ()

    def __enter__(self) -> FanOutObservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def subscribers(self, count: int) -> None:
        """The event concerns `count` subscriptions (0: nobody here watches that entity)."""


_NULL_FAN_OUT = FanOutObservation()


class Observer:
    """The hooks; each does nothing here."""

    # -- loaders ---------------------------------------------------------------------------
    def batch(self, loader: str, size: int) -> AbstractContextManager[Any]:
        """A batch of `size` keys dispatched by `loader`: the block that runs it."""
        return _NULL

    # -- the entity cache ------------------------------------------------------------------
    def cache_read(self, entity: str, hits: int, misses: int, stale: int) -> None:
        """A batch read through the entity cache: its hits, misses and stale values served
        while they are refreshed."""

    def cache_bypassed(self, misses: int) -> None:
        """A batch read without the cache (a namespace that caches nothing): all misses."""

    def stale_served(self, entity: str) -> None:
        """A value past its TTL served because its upstream failed (stale-if-error)."""

    def evicted(self, entity: str) -> None:
        """A cached `entity` evicted by a change."""

    def evictions_held(self, count: int) -> None:
        """`count` evictions made here wait for Redis to be sent (it was down); while any
        does, this replica reads around its cache."""

    def hits_at_hand(self, entity: str, hits: int) -> None:
        """Lookups answered from the cache's memory level without a batch (counted once per
        request, when it ends)."""

    # -- the upstream client ---------------------------------------------------------------
    def call(self, service: str, method: str, route: str) -> CallObservation:
        """An upstream call begins."""
        return _NULL_CALL

    def retry_refused(self, service: str) -> None:
        """The retry budget refused a retry to `service`."""

    def breaker_changed(self, service: str, state: int, opened: bool) -> None:
        """`service`'s breaker is now in `state` (0 closed, 1 open, 2 half-open); `opened`
        when this change opened it."""

    def quiet(self) -> AbstractContextManager[Any]:
        """A block whose HTTP calls are not traced (health probes, which are not requests)."""
        return _NULL

    # -- Redis -----------------------------------------------------------------------------
    def redis_changed(self, state: int, outage: bool) -> None:
        """Redis's guard (`app.core.redisguard`) is now in `state`: 0 up, 1 probing (a probe
        in flight), 2 down (its breaker's states); `outage` when this change starts an outage
        (Redis was up). Reported once at start, with 0."""

    # -- execution -------------------------------------------------------------------------
    def operation_started(self, name: str | None) -> None:
        """An operation of this name starts executing (log lines carry its name)."""

    def operation_planned(self) -> None:
        """An operation runs on the plan executor."""

    def deprecated_field_used(self, coordinate: str, client: str | None, *, admit: bool,
                              limit: int) -> None:
        """An answer used a deprecated field; `client`: its apollographql-client-name header
        (a new name becomes a label only when `admit`, while fewer than `limit` are)."""

    def operation_cost(self, estimated: int, actual: int | None) -> None:
        """An operation's estimated cost (IBM cost directives), and its actual cost once it
        ran (None: a subscription, measured when it starts)."""

    # -- business events (the gateway's successful mutations) --------------------------------
    def order_placed(self, currency: str, total_cents: int) -> None:
        """placeOrder placed a new order of `total_cents` in `currency`."""

    def order_cancelled(self) -> None:
        """cancelOrder cancelled an order that was not cancelled yet."""

    def review_added(self) -> None:
        """addReview wrote a review."""

    # -- subscriptions ---------------------------------------------------------------------
    def subscription_changed(self, protocol: str, field: str, delta: int) -> None:
        """A subscription to `field` over `protocol` (ws, sse) started (+1) or ended (-1)."""

    def subscription_event(self, entity: str, outcome: str) -> None:
        """A change event reached the subscription hub: `outcome` fanned_out (someone here
        watches its type), unwatched, stale (an older or repeated version: nothing sent), or
        coalesced (replaced by a newer event of its entity before its fan-out began)."""

    def fan_out(self, entity: str, entity_id: str, version: int) -> FanOutObservation:
        """An event's fan-out begins."""
        return _NULL_FAN_OUT

    def subscription_message(self, protocol: str, kind: str) -> None:
        """A message was sent to a subscriber: next, error or complete."""

    def subscription_connection_closed(self, protocol: str, reason: str) -> None:
        """The gateway closed a subscription connection (or refused it) for `reason`:
        slow_consumer, token_expired, shutdown, init_timeout, too_many_connections,
        over_capacity (MAX_SUBSCRIPTION_CONNECTIONS), unauthenticated, bad_request."""


NULL_OBSERVER = Observer()
