"""The executing operation's static cache policy, noted on the request context once per
operation (no per-field hook): the response's Cache-Control starts from it."""

from __future__ import annotations

from strawberry.types import ExecutionContext

from app.core.observer import NULL_OBSERVER
from app.execution.context import RequestContext


def note_policy(ec: ExecutionContext) -> None:
    """Note the executing operation's name and static cache policy on the request context
    (run before it executes by the operation's extension, app/execution/operations.py)."""
    context = ec.context
    getattr(context, "observer", NULL_OBSERVER).operation_started(ec.operation_name)
    if isinstance(context, RequestContext):
        context.operation_name = ec.operation_name
    # (Not for an operation already refused by the limits: its walk could be costly.)
    if isinstance(context, RequestContext) and ec.graphql_document is not None \
            and ec.result is None:
        context.document = ec.graphql_document
        context.operation_policy = context.hints.operation_policy(
            ec.graphql_document, ec.operation_name)
