"""The GraphQL endpoint: Strawberry's ASGI view with this gateway's per-request context,
its Cache-Control, and the whole-response cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import strawberry
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from app.cache.entity import EntityCache, Namespace
from app.cache.hints import CacheHints, RequestPolicy
from app.cache.invalidation import Invalidator
from app.cache.response import ResponseCache
from app.context import RequestContext
from app.errors import HTTPRefusal, http_refusal_body
from app.resilience import Deadline
from app.settings import Settings
from app.upstream import CallScope, UpstreamClient
from loaders.registry import Loaders

USER_HEADER = "x-user-id"
# A client's own, shorter, time budget for its request (the setting is the maximum).
DEADLINE_HEADER = "X-Request-Timeout-Ms"
DEBUG_HEADER = "x-gateway-debug"


@dataclass
class Caching:
    """The process-wide caching parts a request uses (each None when switched off)."""

    hints: CacheHints
    entities: EntityCache | None = None
    namespaces: dict[str, Namespace] | None = None
    invalidator: Invalidator | None = None
    responses: ResponseCache | None = None


class OperationPolicy(SchemaExtension):
    """Notes the executing operation's static cache policy on the request context: one call
    per operation, no per-field hook."""

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        context = ctx.context
        if isinstance(context, RequestContext) and ctx.graphql_document is not None:
            context.document = ctx.graphql_document
            context.operation_policy = context.hints.operation_policy(
                ctx.graphql_document, ctx.operation_name)
        yield


class GatewayGraphQL(GraphQL[RequestContext, None]):
    def __init__(
        self, schema: strawberry.Schema, settings: Settings, client: UpstreamClient,
        caching: Caching,
    ) -> None:
        super().__init__(schema, graphql_ide="graphiql", allow_queries_via_get=True)
        self.settings = settings
        self.client = client
        self.caching = caching

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        # Strawberry answers a refused request (bad JSON, a bad header) in plain text; here
        # it gets the same JSON error shape, with a code, as every other error.
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as error:
            response = Response(orjson.dumps(http_refusal_body(error)),
                                status_code=error.status_code, media_type="application/json")
        await response(scope, receive, send)

    async def get_context(self, request: Any, response: Any) -> RequestContext:
        # Loaders are built here, per request, inside the running loop: aiodataloader binds
        # the loop it was created in, and a loader shared across requests would leak data.
        user_id = None
        if self.settings.dev_mode:
            user_id = request.headers.get(USER_HEADER) or None
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
                            caching.namespaces, viewer=user_id, policy=policy),
            policy=policy,
            hints=caching.hints,
            invalidator=caching.invalidator,
            user_id=user_id,
        )
        request.state.gateway = (context, response)
        return context

    def _deadline_s(self, request: Any) -> float:
        """The request's time budget: the setting, or less when the client asks for less."""
        default = self.settings.request_deadline_s
        raw = request.headers.get(DEADLINE_HEADER)
        if raw is None:
            return default
        try:
            asked = int(raw)
        except ValueError:
            asked = 0
        if asked <= 0:
            raise HTTPRefusal(
                400, f"{DEADLINE_HEADER} must be a positive whole number of milliseconds",
                "BAD_USER_INPUT")
        return min(default, asked / 1000)

    async def execute_single(  # type: ignore[override]
        self, request: Request, request_adapter: Any, sub_response: Any, context: RequestContext,
        root_value: Any, request_data: Any,
    ) -> ExecutionResult:
        responses = self.caching.responses
        key = None
        if (responses is not None and request_data.query
                and OperationType.QUERY in OperationType.from_http(request_adapter.method)):
            key = responses.key(request_data.query, request_data.operation_name,
                                request_data.variables)
            hit = responses.get(key)
            if hit is not None:
                context.operation_policy = hit.policy
                # Age (RFC 9111): how long ago this answer was computed.
                sub_response.headers["Age"] = str(int(time.time() - hit.stored_at))
                return ExecutionResult(data=hit.data, errors=None)
        result = await super().execute_single(request, request_adapter, sub_response, context,
                                              root_value, request_data)
        if key is not None and responses is not None and context.document is not None:
            # put() keeps only PUBLIC policies with a max-age: never a failed or stale answer.
            responses.put(key, context.document, result.data,
                          context.response_policy(bool(result.errors)))
        return result

    async def process_result(  # type: ignore[override]
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        processed = await super().process_result(request, result)
        context, response = request.state.gateway
        context.loaders.release()  # the result is built: the request's loaded data can go
        response.headers["Cache-Control"] = context.response_policy(bool(result.errors)).header()
        if self.settings.dev_mode and request.headers.get(DEBUG_HEADER):
            # The request's upstream calls, for a developer (and the tests) to see retries
            # and failures per call. Development only until callers are authenticated.
            processed["extensions"] = {**(processed.get("extensions") or {}),
                                       "debug": {"upstream": context.scope.report()}}
        if context.policy.stale:
            # Data older than its TTL was served because an upstream failed.
            processed["extensions"] = {**(processed.get("extensions") or {}),
                                       "cache": {"stale": True}}
        return processed

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)
