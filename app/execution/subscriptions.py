"""Subscriptions: what a subscription watches, how a client subscribes, and the hub that fans
each change event out to the subscriptions it concerns. The protocols that carry them
(graphql-transport-ws, GraphQL over Server-Sent Events) are in `app/http/subscriptions.py`.

Subscribing (`Hub.subscribe`) runs the operation's checks, as a query over HTTP has them:
the persisted-query rules, the token limit while parsing, validation, the depth, alias and
cost limits (`app.execution.limits`), the rate limit, then the field's subscribe resolver
through graphql-core (`resolvers/subscriptions.py`, after the field's permission classes).
That resolver checks its arguments and returns a `Watch`: which change events concern the
subscription, and how to read the entity each one names.

The hub hears every change event once its eviction is applied on this replica
(`EntityCache.on_events`; every replica hears them through the invalidation channel's own
message, so what an event evicted is gone before its subscribers' messages are resolved;
without the entity cache, `/events` hands them over directly). Per event:

- an older or repeated version (per entity, the last one fanned out here) sends nothing;
- events of one entity fan out one after the other, in the order they came (so in version
  order), events of different entities side by side. While an entity's fan-out runs, only
  its latest event waits behind it (`EntityQueue`): a newer one replaces it, since a
  message is resolved at its event's version or newer and the older one would read the
  same entity. What waits is bounded by the number of entities, not of events (under load
  three in four queued events were superseded before their turn);
- one fan-out is one set of loaders (`loaders.registry.Loaders`, one deadline) shared by
  every subscriber of the event: the entity is read once, through the entity cache, and the
  subscribers' selections run together, so their lookups batch and dedupe as one query's
  do. Each subscriber's selection runs with its own request context (its viewer: private
  fields are checked per subscriber) on the plan executor, with the entity as its root;
- each subscriber's result is handed to its connection (`Sink.offer`) as soon as it is
  resolved, not once every subscriber's is: the connection queues it without waiting (and
  drops a consumer that falls too far behind).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    ValidationRule,
    get_operation_ast,
    specified_rules,
)
from graphql.execution import create_source_event_stream, execute_subscription_event
from graphql.execution.collect_fields import collect_fields
from graphql.execution.executor import Executor
from graphql.validation import NoSchemaIntrospectionCustomRule

from app.cache.entity import EntityCache, Event, Namespace
from app.cache.hints import CacheHints, RequestPolicy
from app.cache.versions import EventVersions
from app.config.settings import Settings
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.errors import GatewayError, HTTPRefusal
from app.core.observer import NULL_OBSERVER, Observer
from app.execution.context import RequestContext
from app.execution.errors import classify_errors
from app.execution.executor import PlanExecutor
from app.execution.limits import Lengths, check_limits, length_rule
from app.execution.operations import OperationCache
from app.security.auth import Viewer
from app.security.persisted import NotFound, PersistedQueries
from app.security.ratelimit import RateLimiter, rate_limited
from app.upstream.client import CallScope, UpstreamClient
from app.upstream.resilience import Deadline
from loaders.registry import Loaders
from loaders.spec import BatchSpec

log = logging.getLogger("gateway.subscriptions")
ALL_OPS = frozenset({"create", "update", "delete"})
DOCUMENTS_CACHED = 256  # subscription documents kept parsed and validated, the latest used
Payload = dict[str, Any]  # an execution result as sent: data, errors


@dataclass(frozen=True)
class Watch:
    """What a subscription field watches (its subscribe resolver's answer): the change events
    of `entity` whose entity has `key`, as the event's id (`route` None) or as the field
    `route` of the entity read by `spec` (a review's product_id); only events whose op is
    in `ops`. The entity, read by `spec` at the event's id, is the root of the subscriber's
    selection at each event.

    graphql-core requires a subscribe resolver to return an event stream: a Watch is one in
    name only, as the hub, not graphql-core, drives it (`Hub`)."""

    entity: str
    key: str
    spec: BatchSpec
    route: str | None = None
    ops: frozenset[str] = ALL_OPS

    def __aiter__(self) -> AsyncIterator[Any]:
        raise TypeError("a Watch is driven by the subscription hub, not iterated")


class Sink(Protocol):
    """A subscription's connection, as the hub sees it."""

    def offer(self, subscription: Subscription, payload: Payload) -> None:
        """Queue `payload` for the client without waiting; a connection whose queue is
        full drops its consumer (and ends its subscriptions) instead."""


@dataclass(eq=False)
class Subscription:
    id: str  # the client's id for it (graphql-transport-ws), or the stream's
    field: str  # the root field, for metrics
    protocol: str
    watch: Watch
    executor: Executor[Any]  # the operation, validated, its variables coerced
    viewer: Viewer
    client_address: str
    sink: Sink
    active: bool = True


@dataclass
class OperationRequest:
    """A GraphQL request as a streaming transport received it, its shape already checked."""

    query: str | None
    variables: dict[str, Any] | None = None
    operation_name: str | None = None
    extensions: dict[str, Any] | None = None


@dataclass
class NotSubscription:
    """The request is a query or a mutation: the transport runs it as over HTTP."""

    query: str  # the document's text (a persisted query's, when sent by its hash)
    document: DocumentNode
    operation: OperationType


Refusal = list[dict[str, Any]]  # the formatted GraphQL errors that refuse a request


class NoSubscriptionOverHTTP(ValidationRule):
    """A subscription sent as a plain HTTP request (its answer is one response): refused,
    saying where subscriptions are served. (The hub validates without this rule.)"""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        if node.operation == OperationType.SUBSCRIPTION:
            self.report_error(GraphQLError(
                "Subscriptions are served at /graphql over a WebSocket (subprotocol "
                "graphql-transport-ws) or as Server-Sent Events (Accept: text/event-stream), "
                "not as a single HTTP response", node))


@dataclass
class _Route:
    """The subscriptions to one kind of watch of one entity type, by key."""

    spec: BatchSpec
    route: str | None
    by_key: dict[str, dict[int, Subscription]] = field(default_factory=dict)


def formatted(result: ExecutionResult) -> Payload:
    """`result` as sent to a client: its errors given their codes (`classify_errors`)."""
    payload: Payload = {"data": result.data}
    if result.errors:
        errors = list(result.errors)
        classify_errors(errors)
        payload["errors"] = [error.formatted for error in errors]
    return payload


def refusal(*errors: GraphQLError) -> Refusal:
    return formatted(ExecutionResult(None, list(errors))).get("errors", [])


def gateway_error(error: GatewayError) -> GraphQLError:
    return GraphQLError(str(error), original_error=error)


class EntityQueue:
    """Per entity, one fan-out at a time and at most one event waiting behind it: the latest.

    `put` starts `run(event)` at once when the entity has no fan-out running; otherwise the
    event waits, replacing any event that was waiting (which then never runs: it is handed
    to `on_replaced`, for the metric). When a fan-out ends, the waiting event, if any,
    starts. So an entity's events run in the order they came, every run
    reads at least the version of the event it was started for, and the memory held is at
    most two events per entity however fast they come."""

    def __init__(self, run: Callable[[Event], Awaitable[None]],
                 on_replaced: Callable[[Event], None] | None = None) -> None:
        self._run = run
        self._on_replaced = on_replaced
        self._running: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, Event] = {}

    def put(self, name: str, event: Event) -> None:
        if name in self._running:
            replaced = self._waiting.get(name)
            self._waiting[name] = event
            if replaced is not None and self._on_replaced is not None:
                self._on_replaced(replaced)
            return
        # A context of its own: a fan-out is a trace of its own, whoever delivered it.
        self._running[name] = asyncio.get_running_loop().create_task(
            self._drain(name, event), context=contextvars.Context())

    async def _drain(self, name: str, event: Event | None) -> None:
        try:
            while event is not None:
                try:
                    await self._run(event)
                except Exception:  # one failed fan-out: the next event still runs
                    log.exception("subscription fan-out failed")
                event = self._waiting.pop(name, None)
        finally:
            self._running.pop(name, None)
            self._waiting.pop(name, None)

    @property
    def waiting(self) -> int:
        """Events waiting behind a running fan-out (at most one per entity)."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    async def close(self) -> None:
        """Stop every fan-out in flight and drop what waits."""
        self._waiting.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


class Hub:
    """This process's subscriptions, and the fan-out of change events to them."""

    def __init__(self, schema: GraphQLSchema, settings: Settings, client: UpstreamClient,
                 hints: CacheHints, *, entities: EntityCache | None = None,
                 namespaces: Mapping[str, Namespace] | None = None,
                 persisted: PersistedQueries | None = None,
                 limiter: RateLimiter | None = None, observer: Observer = NULL_OBSERVER,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.schema = schema
        self.settings = settings
        self.client = client
        self.hints = hints
        self.entities = entities
        self.namespaces = dict(namespaces or {})
        self.persisted = persisted
        self.limiter = limiter
        self.observer = observer
        self.clock = clock
        self.limits = {"depth": settings.max_query_depth, "aliases": settings.max_aliases,
                       "cost": settings.max_query_cost}
        self.lengths = Lengths(settings.max_id_length, settings.max_string_length)
        self.rules = (*specified_rules, length_rule(self.lengths),
                      *(() if settings.introspection else (NoSchemaIntrospectionCustomRule,)))
        # The last version fanned out per entity: bounded in time and size, as the cache's.
        self.versions = EventVersions(settings.event_version_ttl_s,
                                      settings.cache_max_entries, clock)
        self._routes: dict[str, dict[tuple[str | None, str], _Route]] = {}
        self.queue = EntityQueue(self._fan_out, self._replaced)
        # Subscription documents parsed and validated once, by the same mechanism as HTTP's
        # (with the hub's rules: HTTP's refuse subscriptions).
        self.operations = OperationCache(schema, self.rules, settings.max_query_tokens,
                                         DOCUMENTS_CACHED)
        self.count = 0

    # -- subscribing ------------------------------------------------------------------------
    async def subscribe(self, request: OperationRequest, viewer: Viewer, client_address: str,
                        sink: Sink, protocol: str, subscription_id: str
                        ) -> Subscription | NotSubscription | Refusal:
        """Check and start a subscription; a query or a mutation is handed back to run as
        over HTTP; a refusal is the errors to send."""
        try:
            query, register = await self._document(request)
        except NotFound:
            return refusal(GraphQLError("PersistedQueryNotFound",
                                        extensions={"code": "PERSISTED_QUERY_NOT_FOUND"}))
        except HTTPRefusal as error:
            return refusal(GraphQLError(error.reason, extensions={"code": error.code}))
        checked = self._checked(query)
        if isinstance(checked, list):
            return refusal(*checked)
        document = checked
        if register is not None and self.persisted is not None:
            await self.persisted.register(register, query)
        operation = get_operation_ast(document, request.operation_name)
        if operation is None:
            return refusal(GraphQLError(
                "Must provide operation name if query contains multiple operations."
                if request.operation_name is None
                else f"Unknown operation named '{request.operation_name}'.",
                extensions={"code": "BAD_REQUEST"}))
        if operation.operation != OperationType.SUBSCRIPTION:
            return NotSubscription(query, document, operation.operation)
        cost, over = check_limits(self.schema, document, request.operation_name,
                                  request.variables or {}, self.limits, self.lengths)
        if over is not None:
            return refusal(over)
        if cost is not None:
            self.observer.operation_cost(cost, None)
        if self.limiter is not None:
            # A subscription costs its selection once, when it starts.
            decision = await self.limiter.spend_for(viewer, client_address, cost or 1)
            if not decision.allowed:
                return refusal(*(rate_limited(decision, cost or 1).errors or []))
        context = self.request_context(viewer, client_address)
        try:
            executor = PlanExecutor.build(self.schema, document, None, context,
                                          request.variables, request.operation_name)
            if isinstance(executor, list):  # the variables do not coerce
                return refusal(*executor)
            stream: Any = create_source_event_stream(executor)
            if inspect.isawaitable(stream):
                stream = await stream
        finally:
            context.loaders.release()
        if isinstance(stream, ExecutionResult):  # refused by its resolver or permissions
            return formatted(stream).get("errors", [])
        assert isinstance(stream, Watch), stream
        collected = collect_fields(self.schema, executor.fragments, executor.variable_values,
                                   self.schema.subscription_type, operation)  # type: ignore[arg-type]
        field_name = next(iter(collected.grouped_field_set.values()))[0].node.name.value
        subscription = Subscription(subscription_id, field_name, protocol, stream, executor,
                                    viewer, client_address, sink)
        self._add(subscription)
        return subscription

    def _checked(self, query: str) -> DocumentNode | list[GraphQLError]:
        """`query` parsed and validated, or its errors, from the operation cache: clients
        subscribe with the same few documents, and 5,000 subscribing at once spent 85% of
        the gateway's CPU validating one document again and again (bench/RESULTS.md)."""
        try:
            prepared = self.operations.get(query)
        except GraphQLError as error:
            return [error]
        return list(prepared.errors) if prepared.errors else prepared.document

    async def _document(self, request: OperationRequest) -> tuple[str, str | None]:
        """The document to run (the persisted one a hash names), and the hash to register
        it under once it is valid."""
        query, register = request.query, None
        if self.persisted is not None:
            query, register = await self.persisted.resolve(query, request.extensions)
        if query is None:
            raise HTTPRefusal(400, "The request has no query", "BAD_REQUEST")
        return query, register

    def _add(self, subscription: Subscription) -> None:
        watch = subscription.watch
        routes = self._routes.setdefault(watch.entity, {})
        route = routes.get((watch.route, watch.spec.name))
        if route is None:
            route = routes[(watch.route, watch.spec.name)] = _Route(watch.spec, watch.route)
        route.by_key.setdefault(watch.key, {})[id(subscription)] = subscription
        self.count += 1
        self.observer.subscription_changed(subscription.protocol, subscription.field, 1)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop `subscription` (the client completed it, or its connection ended): no
        message is offered for it from now on, even by a fan-out in flight."""
        if not subscription.active:
            return
        subscription.active = False
        watch = subscription.watch
        routes = self._routes.get(watch.entity, {})
        route = routes.get((watch.route, watch.spec.name))
        if route is not None:
            subscribers = route.by_key.get(watch.key, {})
            subscribers.pop(id(subscription), None)
            if not subscribers:
                route.by_key.pop(watch.key, None)
            if not route.by_key:
                del routes[(watch.route, watch.spec.name)]
        if not routes:
            self._routes.pop(watch.entity, None)
        self.count -= 1
        self.observer.subscription_changed(subscription.protocol, subscription.field, -1)

    # -- events -------------------------------------------------------------------------------
    def receive(self, events: list[Event]) -> None:
        """Change events whose evictions are applied here (called without awaiting, in the
        order they were applied): each starts its fan-out, or waits behind its entity's."""
        for event in events:
            entity, entity_id, version = event.get("type"), event.get("id"), event.get("version")
            if not (isinstance(entity, str) and isinstance(entity_id, str)
                    and isinstance(version, int)):
                continue
            name = f"{entity}:{entity_id}"
            if not self.versions.record(name, version):
                self.observer.subscription_event(entity, "stale")
                continue
            if entity not in self._routes:
                self.observer.subscription_event(entity, "unwatched")
                continue
            self.queue.put(name, dict(event))

    def _replaced(self, event: Event) -> None:
        # Superseded while it waited: the newer event's message reads its entity anyway.
        self.observer.subscription_event(event["type"], "coalesced")

    async def _fan_out(self, event: Event) -> None:
        entity, entity_id = event["type"], event["id"]
        self.observer.subscription_event(entity, "fanned_out")
        scope = CallScope(deadline=Deadline(self.settings.request_deadline_s, self.clock))
        loaders = self._loaders(scope)
        try:
            with self.observer.fan_out(entity, entity_id, event["version"]) as observed:
                targets = await self._targets(event, loaders)
                observed.subscribers(len(targets))
                if not targets:
                    return
                # Started together, so that their lookups batch in the shared loaders;
                # each message goes to its connection as soon as it is resolved.
                await asyncio.gather(*(self._deliver(subscription, root, loaders, scope)
                                       for subscription, root in targets))
        finally:
            loaders.release()

    async def _deliver(self, subscription: Subscription, root: Any, loaders: Loaders,
                       scope: CallScope) -> None:
        payload = await self._resolve(subscription, root, loaders, scope)
        if subscription.active:
            subscription.sink.offer(subscription, payload)

    async def _targets(self, event: Event, loaders: Loaders
                       ) -> list[tuple[Subscription, Any]]:
        """The subscriptions `event` concerns, each with its root: the entity the event
        names, read once for all of them (or the error its read failed with)."""
        entity_id, op = event["id"], event.get("op")
        targets: list[tuple[Subscription, Any]] = []
        for route in list(self._routes.get(event["type"], {}).values()):
            if route.route is None and entity_id not in route.by_key:
                continue  # nobody here watches this entity: not even read
            try:
                root: Any = await loaders.load(route.spec, entity_id)
            except Exception as error:  # its service failed: said to those who watch it
                root = error
            if root is None:
                continue  # gone already: nothing to resolve
            if route.route is None:
                key = entity_id
            elif isinstance(root, Mapping):
                key = root.get(route.route)
            else:
                log.warning("%s %s unread for its subscribers: %s", event["type"], entity_id,
                            root)
                continue
            targets += [(s, root) for s in list(route.by_key.get(key, {}).values())
                        if op in s.watch.ops]
        return targets

    def _loaders(self, scope: CallScope) -> Loaders:
        # No viewer: a fan-out's lookups are shared by every subscriber, so it reads only
        # what is the same for all (private namespaces, keyed per viewer, are read around
        # the cache); what each subscriber may see is checked on its own context.
        return Loaders(self.client.scoped(scope), self.settings.fanout_concurrency,
                       self.entities, self.namespaces, viewer=None, policy=RequestPolicy(),
                       observer=self.observer)

    def request_context(self, viewer: Viewer, client_address: str,
                 scope: CallScope | None = None, loaders: Loaders | None = None
                 ) -> RequestContext:
        scope = scope or CallScope(deadline=Deadline(self.settings.request_deadline_s,
                                                     self.clock))
        loaders = loaders or self._loaders(scope)
        return RequestContext(
            settings=self.settings, client=self.client, upstream=self.client.scoped(scope),
            scope=scope, loaders=loaders, policy=RequestPolicy(), hints=self.hints,
            observer=self.observer, viewer=viewer, client_address=client_address,
            resolver_hooks=False)

    async def _resolve(self, subscription: Subscription, root: Any, loaders: Loaders,
                       scope: CallScope) -> Payload:
        """`subscription`'s message for this event: its selection on `root`."""
        if isinstance(root, Exception):
            error = GraphQLError(str(root), path=[subscription.field], original_error=root)
            return formatted(ExecutionResult(None, [error]))
        executor = subscription.executor.build_per_event_executor(root)
        executor.context_value = self.request_context(subscription.viewer,
                                               subscription.client_address, scope, loaders)
        try:
            result: Any = execute_subscription_event(executor)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:  # a bug: masked for the client, logged by classify
            result = ExecutionResult(None, [GraphQLError(
                str(error), path=[subscription.field], original_error=error)])
        return formatted(result)

    async def close(self) -> None:
        """Stop every fan-out in flight (the process is ending)."""
        await self.queue.close()
