"""What one GraphQL request carries: its loaders, the acting user and the shared client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from graphql import DocumentNode
from strawberry.types import Info as StrawberryInfo

from app.cache.hints import NO_STORE, CacheHints, Policy, RequestPolicy
from app.cache.invalidation import Change, Invalidator
from app.config.settings import Settings
from app.core.errors import Unauthenticated
from app.core.observer import NULL_OBSERVER, Observer
from app.security.auth import ANONYMOUS, Viewer
from app.security.idempotency import IdempotencyStore
from app.security.ratelimit import Decision
from app.upstream.client import CallScope, ScopedClient, UpstreamClient
from loaders.registry import Loaders


@dataclass
class RequestContext:
    settings: Settings
    client: UpstreamClient  # the shared client, for work outside this request's budget
    upstream: ScopedClient  # the client under this request's deadline: what resolvers use
    scope: CallScope  # the deadline, and the record of this request's upstream calls
    loaders: Loaders
    policy: RequestPolicy
    hints: CacheHints
    invalidator: Invalidator | None = None
    observer: Observer = NULL_OBSERVER  # what telemetry hears of this request's work
    viewer: Viewer = ANONYMOUS
    idempotency: IdempotencyStore | None = None  # the keys of writes whose service has none
    # The executing operation and its static cache policy, set when execution starts.
    document: DocumentNode | None = None
    operation_policy: Policy | None = None
    operation_name: str | None = None
    # For telemetry: the request's trace, whether its caller gets the waterfall, and how it
    # ended (ok, partial, error), set once the result is built.
    trace_id: int = 0
    trace_root: int = 0  # the span id of the request's server span
    debug: bool = False
    resolver_hooks: bool = True  # whether resolver middleware (telemetry) runs for it
    # The operation's estimated cost (app/execution/limits.py, by the IBM cost directives),
    # what the rate limit charges, and its actual cost once it ran (the charge is refunded
    # down to it); None: it did not run.
    cost: int = 0
    cost_measured: bool = False  # `cost` is the operation's (it parsed and validated)
    cost_actual: int | None = None
    # The deprecated fields the operation selects (`Type.field`): app/execution/deprecations.py.
    deprecated: frozenset[str] = frozenset()
    client_address: str = ""  # who an anonymous caller is, for its rate limit
    rate_limit: Decision | None = None  # the rate limiter's answer, for the headers
    outcome: str | None = None
    # The `extensions.code` of every error of the result (for the SLO's fault label).
    error_codes: frozenset[str] = frozenset()
    # The document is an operation of the persisted-query manifest (deployed, not sent by
    # whoever calls): its name may become a metric label (app/telemetry/metrics.py).
    manifest_operation: bool = False
    # A batch's request (app/http/batching.py): each operation's name and outcome, for the
    # access log; None for a request of one operation.
    batch: list[tuple[str | None, str | None]] | None = None
    # An operation of a batch that runs with others awaits this before it executes, so that
    # they all start together (app/http/batching.py, Gate).
    batch_gate: Callable[[], Awaitable[None]] | None = None
    # The client accepts incremental delivery (multipart/mixed or SSE): an operation with
    # @defer or @stream is then answered in parts (app/http/incremental.py).
    incremental: bool = False

    async def written(self, changes: Sequence[Change]) -> None:
        """This request changed these entities (type, id, the item if known): before the
        caller sees the answer, every replica evicts what they make stale, and this
        request's loaders read the write (both by `loaders.entities`' table)."""
        if self.invalidator is not None and not await self.invalidator.evict_many(
                changes, own_write=True, deadline=self.scope.deadline):
            # Redis stayed unreachable until the deadline: the write stands, but another
            # replica may serve the old value until the eviction is sent. Said in the answer.
            self.policy.evictions_held = True
        self.loaders.written(changes)

    def response_policy(self, failed: bool) -> Policy:
        """The response's cache policy: the operation's, lowered by dynamic hints; nothing
        may be stored for a failed response, stale data, or an operation that did not run."""
        if failed or self.operation_policy is None or self.policy.stale:
            return NO_STORE
        return self.operation_policy.merge(self.policy.dynamic)

    @property
    def names_admitted(self) -> bool:
        """Whether the operation and client names it sends may become new metric labels: a
        signed-in caller's or a manifest operation's (anonymous callers could make names up
        and fill the bounded tables); in development mode any (the developer is the caller)."""
        return (self.viewer.id is not None or self.manifest_operation
                or self.settings.dev_mode)

    @property
    def user_id(self) -> str | None:
        """The caller's user id; None for an anonymous caller."""
        return self.viewer.id

    def require_user(self) -> str:
        if self.user_id is None:
            raise Unauthenticated("This operation needs a signed-in user")
        return self.user_id


Info = StrawberryInfo[RequestContext, None]
