"""The Strawberry schema of the public graph."""

from __future__ import annotations

import operator
from pathlib import Path

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from app.config.settings import Settings
from app.execution.cost import attach
from app.execution.errors import classify_errors
from app.execution.executor import GatewayExecutor, PlanExecutor
from app.execution.limits import Lengths, QueryLimits, length_rule
from app.execution.operations import OperationCache, PreparedOperation, http_rules
from app.execution.policy import OperationPolicy
from app.execution.runner import FastExtensionsRunner
from app.execution.subscriptions import NoSubscriptionOverHTTP
from app.security.ratelimit import RateLimit, RateLimiter
from app.telemetry.extension import tracing_factory
from app.telemetry.tracing import Telemetry
from schema import federation
from schema.direct_resolvers import install_direct_resolvers
from schema.partial import install_fallbacks
from schema.root import Mutation, Query, Subscription


class GatewaySchema(strawberry.Schema):
    # With introspection off, validation messages do not suggest the schema's names either.
    hide_suggestions = False
    operations: OperationCache

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry's hook for every error list (by default it logs each with a trace):
        # classify them instead, and log in full only what is unexpected.
        classify_errors(errors, hide_suggestions=self.hide_suggestions)

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        # The same hooks in the same order, without Strawberry's per-request set-up of each
        # (app/execution/runner.py).
        return FastExtensionsRunner(execution_context=execution_context, extensions=extensions)


def build_schema(plan_executor: bool = True, telemetry: Telemetry | None = None,
                 settings: Settings | None = None, limiter: RateLimiter | None = None
                 ) -> GatewaySchema:
    """The schema; with `telemetry`, its resolvers are traced and timed (app/telemetry)."""
    settings = settings or Settings()
    lengths = Lengths(settings.max_id_length, settings.max_string_length)
    # Fixed for the schema's life (the operation cache depends on them): string literals
    # over their length, subscriptions over HTTP (they have transports of their own:
    # app/http/subscriptions.py), and introspection off by setting (graphql-core's rule).
    rules = [length_rule(lengths), NoSubscriptionOverHTTP,
             *([] if settings.introspection else [NoSchemaIntrospectionCustomRule])]
    query, federate = (federation.federated_query(Query) if settings.federation_subgraph
                       else (Query, None))
    schema = GatewaySchema(
        query=query,
        mutation=Mutation,
        subscription=Subscription,
        # Sources are upstream dicts: read fields by key, a C call per field.
        # @defer and @stream (the contract's): served incrementally only to a client that
        # accepts it (app/http/incremental.py); otherwise the executor applies them as if
        # absent and the answer is whole.
        config=StrawberryConfig(default_resolver=operator.getitem,
                                enable_experimental_incremental_execution=True,
                                scalar_map=federation.SCALARS if federate else {}),
        execution_context_class=PlanExecutor if plan_executor else GatewayExecutor,
        extensions=[
            # (The operation cache's extension, parse and validate, is added below, first.)
            lambda: QueryLimits(max_depth=settings.max_query_depth,
                                max_aliases=settings.max_aliases,
                                max_cost=settings.max_query_cost, lengths=lengths),
            # After QueryLimits: it spends the cost QueryLimits computed.
            *([lambda: RateLimit(limiter=limiter)] if limiter is not None else []),
            OperationPolicy,
        ],
    )
    # Parsed (within the token limit) and validated once per distinct document.
    operations = OperationCache(schema._schema, http_rules(rules), settings.max_query_tokens)
    schema.operations = operations
    schema.extensions = (lambda: PreparedOperation(cache=operations), *schema.extensions)
    schema.hide_suggestions = not settings.introspection
    # The cost directives as the printed SDL has them (what client tooling reads), kept on
    # the executable schema for every path that checks an operation (app/execution/cost.py).
    attach(schema._schema, schema.as_str())
    all_fields = telemetry is not None and telemetry.all_fields
    install_direct_resolvers(schema, inline_keys=not all_fields)
    install_fallbacks(schema._schema)
    if federate is not None:
        federate(schema)
    if telemetry is not None:
        # Added once the schema exists: the extension precomputes which fields it traces.
        schema.extensions = (*schema.extensions, tracing_factory(telemetry, schema._schema))
    return schema


# The printed schema, checked in for client teams' tooling (codegen, linters, review of a
# change in a pull request): `make schema` writes it, and a test fails when it is stale.
SDL_FILE = Path(__file__).with_name("schema.graphql")


def printed_sdl() -> str:
    """The served schema as SDL, with the @cacheControl hints and every description."""
    return build_schema().as_str() + "\n"
