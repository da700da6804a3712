"""The executing operation's static cache policy, noted on the request context once per
operation (no per-field hook): the response's Cache-Control starts from it."""

from __future__ import annotations

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

from app.core.observer import NULL_OBSERVER
from app.execution.context import RequestContext


class OperationPolicy(SchemaExtension):
    """Notes the executing operation's static cache policy on the request context: one call
    per operation, no per-field hook."""

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context
        context = ctx.context
        getattr(context, "observer", NULL_OBSERVER).operation_started(ctx.operation_name)
        if isinstance(context, RequestContext):
            context.operation_name = ctx.operation_name
        # (Not for an operation already refused by the limits: its walk could be costly.)
        if isinstance(context, RequestContext) and ctx.graphql_document is not None \
                and ctx.result is None:
            context.document = ctx.graphql_document
            context.operation_policy = context.hints.operation_policy(
                ctx.graphql_document, ctx.operation_name)
        yield
