"""The GraphQL endpoint: Strawberry's ASGI view with this gateway's per-request context,
persisted queries, the whole-response cache and the rate limit's charge. What the answer
says besides its body is decided by `response_policy` (Cache-Control, status) and `debug`
(trace ids, the waterfall); the HTTP checks before GraphQL are in `negotiation`. A batch (a
JSON array of operations) runs each through the same per-operation pipeline, each with its
own context over the request's shared loaders; what is particular to a batch (its checks,
its order, its one answer's headers) is in `batching`. An operation with @defer or @stream,
for a client that accepts multipart/mixed, is answered in parts (`incremental`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import strawberry
from cross_web import HTTPException
from graphql import ExperimentalIncrementalExecutionResults, GraphQLError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, GraphQLRequestProtocol
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from app.cache.entity import EntityCache, Namespace
from app.cache.hints import CacheHints, RequestPolicy
from app.cache.invalidation import Invalidator
from app.cache.response import ResponseCache
from app.config.settings import Settings
from app.core.errors import HTTPRefusal
from app.core.redisguard import RedisGuard
from app.execution.context import RequestContext
from app.execution.deprecations import deprecated_fields
from app.execution.errors import classify_errors
from app.http import batching
from app.http.batching import Batch
from app.http.debug import annotate
from app.http.framing import MULTIPART_MEDIA_TYPE
from app.http.ide import DEFAULT_MODULES, Ide
from app.http.incremental import (
    INCREMENTAL_CACHE_CONTROL,
    discard,
    later_payloads,
    multipart_body,
)
from app.http.negotiation import (
    LEGACY_JSON,
    accept_of,
    accepts_incremental,
    answer_media_type,
    bounded,
    check_length,
    check_media_type,
    normalized,
    refusal,
    wants_event_stream,
)
from app.http.response_policy import (
    CLIENT_NAME_HEADER,
    COST_HEADER,
    cache_headers,
    report_cost,
    report_deprecations,
    settle_status,
)
from app.http.subscriptions import Streams
from app.security.auth import ANONYMOUS, Authenticator
from app.security.idempotency import IdempotencyStore
from app.security.persisted import DOCUMENT_ID, NotFound, PersistedQueries
from app.security.ratelimit import RateLimiter, rate_limited
from app.telemetry.tracing import RECORD_REQUEST, Telemetry, current_span_ids
from app.upstream.client import CallScope, UpstreamClient
from app.upstream.resilience import Deadline
from loaders.registry import Loaders

# A client's own, shorter, time budget for its request (the setting is the maximum).
DEADLINE_HEADER = "X-Request-Timeout-Ms"
DEADLINE_MAX_MS = 999_999_999
DEADLINE_VALUE = re.compile(r"[0-9]{1,9}")


@dataclass
class Caching:
    """The process-wide caching parts a request uses (each None when switched off)."""

    hints: CacheHints
    entities: EntityCache | None = None
    namespaces: dict[str, Namespace] | None = None
    invalidator: Invalidator | None = None
    responses: ResponseCache | None = None


class GatewayGraphQL(GraphQL[RequestContext, None]):
    def __init__(
        self, schema: strawberry.Schema, settings: Settings, client: UpstreamClient,
        caching: Caching, telemetry: Telemetry, limiter: RateLimiter | None = None,
        redis: RedisGuard | None = None,
    ) -> None:
        # Subscriptions are served by app/http/subscriptions.py (the WebSocket route and
        # Server-Sent Events), not by Strawberry's own protocols.
        super().__init__(schema, graphql_ide="graphiql" if settings.graphql_ide else None,
                         allow_queries_via_get=True, subscription_protocols=())
        self.settings = settings
        self.graphql_schema = schema._schema  # graphql-core's, for reading documents
        self.client = client
        self.caching = caching
        self.telemetry = telemetry
        self.auth = Authenticator(settings)
        self.persisted = PersistedQueries(settings, redis)
        self.idempotency = IdempotencyStore(redis, settings.redis_prefix,
                                            settings.idempotency_ttl_s)
        self.limiter = limiter
        self.ide = (Ide(Path(settings.ide_assets_dir or DEFAULT_MODULES))
                    if settings.graphql_ide else None)
        self.streams: Streams | None = None  # set where the app is wired

    @property
    def graphql_ide_html(self) -> str:
        assert self.ide is not None  # (Strawberry asks only when the IDE is on)
        return self.ide.html

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        # Strawberry answers a refused request (bad JSON, a bad header) in plain text; here
        # it gets the same JSON error shape, with a code, as every other error.
        limit = self.settings.max_body_bytes
        scope = normalized(scope)
        request = Request(scope=scope, receive=bounded(receive, limit))
        try:
            try:
                check_length(request, limit)
                check_media_type(request)
                if self.streams is not None and request.method in ("GET", "POST") \
                        and wants_event_stream(accept_of(request)):
                    body = (self._event_stream_body(await request.body())
                            if request.method == "POST" else None)
                    await self.streams.event_stream(scope, receive, send, body)
                    return
                response = await self.run(request)
                batch: Batch | None = getattr(request.state, "batch", None)
                if batch is not None:
                    batch.finish(response)
            except HTTPException as error:
                response = await self.refused(request, error)
            await response(scope, receive, send)
        finally:
            # The answer is sent (or the request ended without one): the request's loaded
            # data can go now, not when the cycle collector gets to it. Freeing it is a
            # noticeable part of a deep query's CPU: it runs on the loop's next turn, once
            # the middleware has timed and logged the request, so neither the caller nor
            # the request's own duration includes it (the next request on the core may).
            results = getattr(request.state, "incremental_results", None)
            if results is not None:
                await discard(results)  # (the client left before the parts were sent)
            release_later(scope)

    async def refused(self, request: Request, error: HTTPException) -> Response:
        """The answer to a request refused before GraphQL ran (`negotiation.refusal`),
        charged to the caller's rate limit."""
        response = refusal(request, error)
        if self.limiter is not None:
            response = await self._charge_refusal(request, response, error.status_code)
        return response

    async def _charge_refusal(self, request: Request, response: Response,
                              status: int) -> Response:
        """A request refused before GraphQL (400, 401, 405, 413, 415, 503) costs the minimum,
        1, and carries the RateLimit headers like every other answer; a caller already over
        its limit is answered 429 with Retry-After instead (a flood of bad requests is
        limited like any other). The caller is the token's subject when the token verifies,
        else the address (a 401's or 503's token is not checked again)."""
        assert self.limiter is not None
        gateway = getattr(request.state, "gateway", None)
        context: RequestContext | None = gateway[0] if gateway is not None else None
        decision = context.rate_limit if context is not None else None
        if decision is None:
            if context is not None:
                viewer = context.viewer
            elif status in (401, 503):  # the token is the problem (or cannot be checked)
                viewer = ANONYMOUS
            else:
                try:
                    viewer = await self.auth.viewer(request.headers)
                except HTTPException:
                    viewer = ANONYMOUS
            address = request.client.host if request.client else "unknown"
            decision = await self.limiter.spend_for(viewer, address, 1)
        if not decision.allowed:
            errors = rate_limited(decision, 1).errors or []
            response = refusal(request, HTTPRefusal(
                429, errors[0].message, "RATE_LIMITED",
                extensions={"retryAfter": decision.retry_after_s, "cost": 1}))
        response.headers.update(decision.headers())
        return response

    async def get_context(self, request: Any, response: Any) -> RequestContext:
        # Loaders are built here, per request, inside the running loop: aiodataloader binds
        # the loop it was created in, and a loader shared across requests would leak data.
        viewer = await self.auth.viewer(request.headers)  # a bad token: 401 here
        policy = RequestPolicy()
        caching = self.caching
        scope = CallScope(deadline=Deadline(self._deadline_s(request)))
        upstream = self.client.scoped(scope)
        context = RequestContext(
            settings=self.settings,
            client=self.client,
            upstream=upstream,
            scope=scope,
            loaders=Loaders(upstream, self.settings.fanout_concurrency, caching.entities,
                            caching.namespaces, viewer=viewer.id, policy=policy,
                            observer=self.telemetry.observer),
            policy=policy,
            hints=caching.hints,
            invalidator=caching.invalidator,
            observer=self.telemetry.observer,
            viewer=viewer,
            idempotency=self.idempotency,
            client_address=request.client.host if request.client else "unknown",
            # (A batch's operations are answered whole: `batching.FIELDS` resets it.)
            incremental=accepts_incremental(accept_of(request)),
        )
        context.trace_id, context.trace_root = current_span_ids()  # the server span's
        # Decided once, by the middleware that records the request's spans for it.
        context.debug = RECORD_REQUEST.get()
        request.state.gateway = (context, response)
        return context

    def _deadline_s(self, request: Any) -> float:
        """The request's time budget: the setting, or less when the client asks for less."""
        default = self.settings.request_deadline_s
        raw = request.headers.get(DEADLINE_HEADER)
        if raw is None:
            return default
        # Digits only (int() would take "+5", "5_000", " 5" and other scripts' digits), and
        # few enough to be a float: a 400-digit value was an OverflowError, a 500.
        if not DEADLINE_VALUE.fullmatch(raw) or int(raw) == 0:
            raise HTTPRefusal(
                400, f"{DEADLINE_HEADER} must be a whole number of milliseconds from 1 to "
                f"{DEADLINE_MAX_MS}", "BAD_USER_INPUT")
        return min(default, int(raw) / 1000)

    async def execute_operation(
        self, request: Request, request_adapter: Any,
        request_data: GraphQLRequestData | list[GraphQLRequestData], context: RequestContext,
        root_value: Any, sub_response: Any,
    ) -> Any:
        if not isinstance(request_data, list):
            return await super().execute_operation(request, request_adapter, request_data,
                                                   context, root_value, sub_response)
        return await self._execute_batch(request, request_adapter, request_data, context,
                                         root_value, sub_response)

    async def _execute_batch(
        self, request: Request, request_adapter: Any, operations: list[GraphQLRequestData],
        context: RequestContext, root_value: Any, sub_response: Any,
    ) -> list[ExecutionResult]:
        """Each operation of a batch through `_execute` with a context of its own over the
        request's loaders, in the order `batching.run_in_order` gives; one that cannot run
        gets its error in its slot, and the others run."""
        batch = request.state.batch = Batch(context, [])
        # (create_response takes the answer's media type from the batch's sub-response.)
        sub_response.headers["content-type"] = answer_media_type(accept_of(request))
        ready: list[ExecutionResult | str | None] = []  # a refusal, else the hash to register
        mutations: list[bool] = []
        for i, data in enumerate(operations):
            batch.operation(context, await self.get_sub_response(request), i == 0)
            problem = batching.shape_error(data.query, data.variables, data.operation_name,
                                           data.extensions)
            prepared: ExecutionResult | str | None
            try:
                if problem is not None:
                    raise HTTPRefusal(400, problem, "BAD_REQUEST")
                prepared = await self._persisted(data)
            except HTTPRefusal as error:  # as a request of its own would be refused
                prepared = batching.failed(error)
            ready.append(prepared)
            mutations.append(not isinstance(prepared, ExecutionResult)
                             and data.query is not None
                             and batching.is_mutation(data.query, data.operation_name,
                                                      self.settings.max_query_tokens))

        async def run(i: int, gate: batching.Member | None) -> ExecutionResult:
            op, prepared = batch.operations[i], ready[i]
            op.context.batch_gate = gate
            try:
                if isinstance(prepared, ExecutionResult):
                    op.result = prepared
                else:
                    op.result = await self._execute(
                        request, request_adapter, op.sub_response, op.context, root_value,
                        operations[i], prepared)
            except HTTPException as error:  # refused by Strawberry (no query, its type)
                op.result = batching.failed(error)
            finally:
                if gate is not None:
                    gate.arrive()  # (if it never reached the executor)
            return op.result

        results = await batching.run_in_order(mutations, run)
        batch.settled()
        return results

    async def _persisted(self, request_data: Any) -> ExecutionResult | str | None:
        """Resolve the operation's persisted query into `request_data.query`: the hash to
        register it under once it ran (None: nothing), or the refusal to answer with."""
        try:
            request_data.query, register = await self.persisted.resolve(
                request_data.query, request_data.extensions)
        except NotFound:
            return ExecutionResult(data=None, errors=[GraphQLError(
                "PersistedQueryNotFound",
                extensions={"code": "PERSISTED_QUERY_NOT_FOUND"})])
        return register

    async def execute_single(
        self, request: Request, request_adapter: Any, sub_response: Any, context: RequestContext,
        root_value: Any, request_data: Any,
    ) -> ExecutionResult:
        prepared = await self._persisted(request_data)
        if isinstance(prepared, ExecutionResult):
            return prepared
        return await self._execute(request, request_adapter, sub_response, context,
                                   root_value, request_data, prepared)

    async def _execute(
        self, request: Request, request_adapter: Any, sub_response: Any, context: RequestContext,
        root_value: Any, request_data: Any, register: str | None,
    ) -> ExecutionResult:
        """One operation, its persisted query resolved: from the response cache, or run
        (Strawberry's execute_single), and registered or cached afterwards."""
        if request_data.query:
            # A manifest operation's name may become a metric label (app/telemetry/metrics.py).
            context.manifest_operation = self.persisted.in_manifest(request_data.query)
            context.deprecated = deprecated_fields(
                self.graphql_schema, request_data.query, request_data.operation_name,
                self.settings.max_query_tokens)
        responses = self.caching.responses
        key = None
        if (responses is not None and request_data.query
                and OperationType.QUERY in OperationType.from_http(request_adapter.method)):
            key = responses.key(request_data.query, request_data.operation_name,
                                request_data.variables)
            hit = responses.get(key) if key is not None else None
            if hit is not None and self.limiter is not None:
                # A cached answer is cheap, not free: it costs the minimum, and a client
                # over its limit is not served.
                refused = await self._spend(context, 1)
                if refused is not None:
                    return refused
            if hit is not None:
                context.operation_policy = hit.policy
                # Age (RFC 9111): how long ago this answer was computed.
                sub_response.headers["Age"] = str(int(responses.now() - hit.stored_at))
                return ExecutionResult(data=hit.data, errors=None)
        # The generations before it runs: a change during execution must not be stored as
        # seen with the data from before it (issue 16 b).
        seen = responses.seen() if key is not None and responses is not None else None
        result = await super().execute_single(request, request_adapter, sub_response, context,
                                              root_value, request_data)
        await self._settle_cost(context)
        if register is not None and context.document is not None and request_data.query:
            # It parsed, validated and fit the limits: only now is it worth keeping.
            await self.persisted.register(register, request_data.query)
        if isinstance(result, ExperimentalIncrementalExecutionResults):
            # Answered in parts (Strawberry then asks for a streaming response), and never
            # stored: the response cache keeps whole answers only.
            await self._incremental(request, sub_response, context, result)
            return result  # (Strawberry's run streams it: create_streaming_response)
        if key is not None and responses is not None and context.document is not None:
            # put() keeps only PUBLIC policies with a max-age: never a failed or stale answer.
            responses.put(key, context.document, result.data,
                          context.response_policy(bool(result.errors)), seen,
                          context.loaders.read_keys())
        return result

    async def _settle_cost(self, context: RequestContext) -> None:
        """The operation ran: its estimated and actual costs to the metrics, and the rate
        limit's charge (the estimate) refunded down to the actual cost (at least 1)."""
        actual = context.cost_actual
        if actual is None:
            return
        self.telemetry.observer.operation_cost(context.cost, actual)
        decision = context.rate_limit
        refund = max(1, context.cost) - max(1, actual)
        if self.limiter is not None and decision is not None and decision.allowed \
                and refund > 0:
            context.rate_limit = await self.limiter.refund_for(
                context.viewer, context.client_address, refund)

    async def _incremental(self, request: Request, sub_response: Response,
                           context: RequestContext,
                           result: ExperimentalIncrementalExecutionResults) -> None:
        """The first part, through `process_result` as any answer (errors classified,
        rate-limit headers, status, the waterfall), and the body that sends it and the parts
        after it (kept for `create_streaming_response`)."""
        hide = not self.settings.introspection
        initial = result.initial_result
        if initial.errors:  # (Strawberry hands an incremental result on unclassified)
            classify_errors(initial.errors, hide_suggestions=hide)
        first = await self.process_result(request, initial)  # type: ignore[arg-type]  # same fields
        first["pending"] = [p.formatted for p in initial.pending]
        first["hasNext"] = initial.has_next
        sub_response.headers["Cache-Control"] = INCREMENTAL_CACHE_CONTROL
        request.state.incremental = multipart_body(
            dict(first), later_payloads(result, context, hide_suggestions=hide))
        request.state.incremental_results = result

    async def create_streaming_response(
        self, request: Request | Any, stream: Callable[[], AsyncIterator[str]],
        sub_response: Response, headers: Any,
    ) -> Response:
        body: AsyncIterator[bytes] | None = getattr(request.state, "incremental", None)
        if body is None:
            return await super().create_streaming_response(request, stream, sub_response,
                                                           headers)
        kept = {k: v for k, v in sub_response.headers.items() if k != "content-type"}
        return StreamingResponse(body, status_code=sub_response.status_code or 200,
                                 headers={**kept, "x-accel-buffering": "no"},
                                 media_type=MULTIPART_MEDIA_TYPE)

    async def _spend(self, context: RequestContext, cost: int) -> ExecutionResult | None:
        """Charge `cost` to the caller; the refusal to answer with when over its limit."""
        assert self.limiter is not None
        decision = await self.limiter.spend_for(context.viewer, context.client_address, cost)
        context.rate_limit = decision
        return None if decision.allowed else rate_limited(decision, cost)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        processed = await super().process_result(request, result)
        batch: Batch | None = getattr(request.state, "batch", None)
        if batch is None:
            context, response = request.state.gateway
        else:  # one operation of a batch: its own context and headers (Batch.finish)
            operation = batch.of(result)
            context, response = operation.context, operation.sub_response
        cache_headers(context, response, bool(result.errors))
        if context.rate_limit is None and self.limiter is not None:
            # Refused before it ran (a document that does not parse, validate, or fit the
            # limits): it still costs the minimum, and gets the headers.
            await self._spend(context, 1)
        if context.rate_limit is not None:
            response.headers.update(context.rate_limit.headers())
            if not context.rate_limit.allowed:
                response.status_code = 429
        media_type = answer_media_type(accept_of(request))
        response.headers["content-type"] = media_type  # (create_response uses it)
        settle_status(context, response, result, processed, media_type)
        annotate(processed, context, self.telemetry)
        if COST_HEADER in request.headers:
            report_cost(processed, context, response)
        if context.deprecated and result.data is not None:
            report_deprecations(processed, context.deprecated, response)
            client = request.headers.get(CLIENT_NAME_HEADER)
            for coordinate in sorted(context.deprecated):
                self.telemetry.observer.deprecated_field_used(
                    coordinate, client, admit=context.names_admitted,
                    limit=context.settings.client_names_max)
        return processed

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        # Strawberry's response, in the media type process_result chose (it copies the
        # sub-response's headers, so the choice is taken off them first).
        media_type = sub_response.headers.get("content-type", LEGACY_JSON)
        if "content-type" in sub_response.headers:
            del sub_response.headers["content-type"]
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = media_type
        return response

    def parse_json(self, data: str | bytes) -> Any:
        """The body as Strawberry expects it: a JSON object, or a batch (a list of them,
        `batching.check`), with a string or null operation name. Anything else is the
        client's 400, not a crash inside Strawberry."""
        body = super().parse_json(data)
        if isinstance(body, list):
            batching.check(body, self.settings.batch_max_operations)
            for item in body:
                with_document_id(item)
            return body
        if not isinstance(body, dict):
            raise HTTPRefusal(400, "The request body must be a JSON object", "BAD_REQUEST")
        if not isinstance(body.get("operationName"), str | None):
            raise HTTPRefusal(400, "`operationName` must be a string or null", "BAD_REQUEST")
        return with_document_id(body)

    def _validate_batch_request(self, request_data: list[GraphQLRequestData],
                                protocol: GraphQLRequestProtocol) -> None:
        # (Strawberry's own check wants its batching config; `parse_json` checked the batch.)
        if self._get_stream_transport(protocol) is not None:
            raise HTTPRefusal(400, "A batch cannot be answered as a stream", "BAD_REQUEST")

    def _event_stream_body(self, data: bytes) -> Any:
        try:
            body = self.parse_json(data)
        except ValueError:
            raise HTTPRefusal(400, "Unable to parse request body as JSON",
                              "BAD_REQUEST") from None
        if isinstance(body, list):
            raise HTTPRefusal(400, "A batch cannot be answered as a stream", "BAD_REQUEST")
        return body

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)


def release_later(scope: Scope) -> None:
    """The request's loaded data released on the loop's next turn (see `__call__`)."""
    gateway = scope.get("state", {}).get("gateway")
    if gateway is not None:
        asyncio.get_running_loop().call_soon(gateway[0].loaders.release)


def with_document_id(body: Any) -> Any:
    """A trusted document's `documentId` (The Guild's clients; GraphQL over HTTP's persisted
    documents) moved into `extensions`, where persisted queries are read: Strawberry keeps
    no other field of the body."""
    if isinstance(body, dict) and DOCUMENT_ID in body:
        extensions = body.get("extensions")
        if extensions is None or isinstance(extensions, dict):
            body["extensions"] = {**(extensions or {}), DOCUMENT_ID: body.pop(DOCUMENT_ID)}
    return body
