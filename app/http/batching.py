"""Operation batching: a JSON array of operations in one POST to /graphql (Apollo Client's
BatchHttpLink), answered with an array of results in the same order.

The view (`app/http/view.py`) runs each operation through the same pipeline as a request of
its own (persisted queries, the response cache, limits, its own rate-limit charge, errors,
its cache policy), each with its own `RequestContext`, sharing the request's loaders (so the
lookups of operations that run together batch together: one upstream call per service per
level for the whole batch), its deadline, its caller and its trace. This module holds what is
particular to a batch: the checks of its shape, the order operations run in, and what the
one HTTP answer says for all of them (Cache-Control, rate-limit headers, the request's
outcome).

Order: operations run in request order, except that consecutive queries run together
(concurrently); a mutation runs alone, once everything before it has answered, and what
follows starts once it has. So a query after a mutation reads its write, one before does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, reduce
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError, OperationType, parse
from graphql.utilities import get_operation_ast
from starlette.responses import Response
from strawberry.types import ExecutionResult

from app.cache.hints import NO_STORE, Policy, RequestPolicy
from app.core.errors import HTTPRefusal, refusal_extensions
from app.execution.context import RequestContext
from app.security.ratelimit import Decision
from app.telemetry.requests import DEBUG_HEADER

SETTING = "BATCH_MAX_OPERATIONS"
# A request's fields that are the operation's own: a batch's operation starts them afresh.
# Everything else (loaders, deadline, caller, trace) is the request's, shared by the batch.
FIELDS = ("policy", "document", "operation_policy", "operation_name", "cost", "cost_measured",
          "cost_actual", "deprecated",
          "rate_limit",
          "outcome", "resolver_hooks", "batch", "batch_gate", "incremental")


def check(body: list[Any], limit: int) -> None:
    """Refuse a malformed batch, before anything runs: batching off, empty, over the limit,
    or an item that is not an object (a bad field of an object is that operation's error)."""
    if limit == 0:
        raise HTTPRefusal(400, "Batches are not accepted here: send one operation per "
                          f"request ({SETTING} is 0)", "BATCHING_DISABLED")
    if not body:
        raise HTTPRefusal(400, "A batch must hold at least one operation", "BAD_REQUEST")
    if len(body) > limit:
        raise HTTPRefusal(400, f"The batch holds {len(body)} operations, over the limit of "
                          f"{limit}", "BATCH_TOO_LARGE",
                          extensions={"limit": limit, "actual": len(body)})
    if not all(isinstance(item, dict) for item in body):
        raise HTTPRefusal(400, "Each operation of a batch must be a JSON object",
                          "BAD_REQUEST")


def shape_error(query: Any, variables: Any, operation_name: Any,
                extensions: Any) -> str | None:
    """What is wrong with an operation's fields (as a single request would be told)."""
    if not isinstance(query, str | None):
        return "The GraphQL operation's `query` must be a string or null, if provided."
    if not isinstance(variables, dict | None):
        return "The GraphQL operation's `variables` must be an object or null, if provided."
    if not isinstance(operation_name, str | None):
        return "`operationName` must be a string or null"
    if not isinstance(extensions, dict | None):
        return "The GraphQL operation's `extensions` must be an object or null, if provided."
    return None


@lru_cache(maxsize=256)
def is_mutation(query: str, operation_name: str | None, max_tokens: int) -> bool:
    """Whether the operation a document and name select is a mutation; a document that does
    not parse or select one is not (it fails in its own slot, whenever it runs)."""
    try:
        document = parse(query, no_location=True, max_tokens=max_tokens)
    except GraphQLError:
        return False
    operation = get_operation_ast(document, operation_name)
    return operation is not None and operation.operation == OperationType.MUTATION


class Gate:
    """Holds the operations that run together at the start of their execution until each of
    them has reached it or ended (refused before it ran, answered from the response cache):
    what they awaited before (a rate-limit charge or a persisted query in Redis) takes each
    its own time, and without the gate their first lookups would leave in batches of their
    own. From there they stay in step: each level's lookups are answered by one batch."""

    def __init__(self, members: int) -> None:
        self._missing = members
        self._open = asyncio.Event()

    def member(self) -> Member:
        return Member(self)

    def _arrived(self) -> None:
        self._missing -= 1
        if self._missing <= 0:
            self._open.set()


class Member:
    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self._arrived = False

    def arrive(self) -> None:
        """This operation is at the gate, or will never be (it ended): counted once."""
        if not self._arrived:
            self._arrived = True
            self._gate._arrived()

    async def __call__(self) -> None:
        """Wait at the gate (RequestContext.batch_gate, awaited by the executor)."""
        self.arrive()
        await self._gate._open.wait()


async def run_in_order(mutations: Sequence[bool],
                       run: Callable[[int, Member | None], Awaitable[ExecutionResult]]
                       ) -> list[ExecutionResult]:
    """`run(i, member)` for every operation, in request order: consecutive non-mutations
    together (each a member of their gate), each mutation alone between what precedes and
    what follows it."""
    results: list[ExecutionResult] = []
    i = 0
    while i < len(mutations):
        j = i + 1
        if not mutations[i]:
            while j < len(mutations) and not mutations[j]:
                j += 1
        gate = Gate(j - i) if j - i > 1 else None
        results += await asyncio.gather(*(run(k, gate.member() if gate else None)
                                          for k in range(i, j)))
        i = j
    return results


def failed(error: HTTPException) -> ExecutionResult:
    """An operation refused before it ran (its fields, its persisted query, its type): its
    own error, with the code a request of its own would have had, in its own slot; the
    others run."""
    extensions = refusal_extensions(error)
    retry_after = (getattr(error, "headers", None) or {}).get("Retry-After")
    if retry_after is not None:
        extensions["retryAfter"] = int(retry_after)
    return ExecutionResult(data=None, errors=[GraphQLError(error.reason,
                                                           extensions=extensions)])


@dataclass
class Operation:
    context: RequestContext
    sub_response: Response  # its own headers and status, as if it were a request
    result: ExecutionResult | None = None

    def policy(self) -> Policy:
        """Its contribution to the batch's Cache-Control: its policy as a response of its
        own, less the age of an answer from the response cache."""
        assert self.result is not None
        policy = self.context.response_policy(bool(self.result.errors))
        age = self.sub_response.headers.get("Age")
        if age is not None and policy.max_age is not None:
            policy = Policy(policy.max_age - int(age), policy.scope)
        return policy


@dataclass
class Batch:
    context: RequestContext  # the request's: its loaders, deadline, caller and trace
    operations: list[Operation]

    def operation(self, context: RequestContext, sub_response: Response,
                  first: bool) -> Operation:
        fresh = RequestContext(policy=RequestPolicy(), **{
            name: getattr(context, name) for name in context.__dataclass_fields__
            if name not in FIELDS})
        # The request's waterfall (one trace for the batch) goes with the first result.
        fresh.debug = context.debug and first
        operation = Operation(fresh, sub_response)
        self.operations.append(operation)
        return operation

    def of(self, result: ExecutionResult) -> Operation:
        return next(op for op in self.operations if op.result is result)

    def settled(self) -> None:
        """Every operation has run: stale data served to the shared loaders is reported by
        every operation (the loaders cannot tell whose lookup it answered)."""
        if self.context.policy.stale:
            for op in self.operations:
                op.context.policy.stale = True

    def finish(self, response: Response) -> None:
        """What the one HTTP answer says for every operation: the most restrictive
        Cache-Control of theirs (the smallest max-age, private if any is, no-store if any
        is), the rate limit as the last charge left it, 200 (each result has its errors);
        and, for the access log and metrics, the request's outcome."""
        policies = [op.policy() for op in self.operations]
        if self.context.debug or any(not p.max_age or p.max_age <= 0 for p in policies):
            policy = NO_STORE
        else:
            policy = reduce(Policy.merge, policies)
        response.headers["Cache-Control"] = policy.header()
        response.headers["Vary"] = f"Accept, {DEBUG_HEADER}" if self.context.debug \
            else "Accept"
        for header in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            if header in response.headers:
                del response.headers[header]
        decisions = [op.context.rate_limit for op in self.operations
                     if op.context.rate_limit is not None]
        if decisions:
            last: Decision = min(decisions, key=lambda d: d.remaining)
            response.headers.update({k: v for k, v in last.headers().items()
                                     if k != "Retry-After"})
        for header in ("Deprecation", "Sunset"):  # an operation used a deprecated field
            found = next((op.sub_response.headers[header] for op in self.operations
                          if header in op.sub_response.headers), None)
            if found is not None:
                response.headers[header] = found
        outcomes = [op.context.outcome for op in self.operations]
        self.context.outcome = (
            "ok" if all(o == "ok" for o in outcomes)
            else "refused" if all(o == "refused" for o in outcomes)
            else "error" if "error" in outcomes else "partial")
        self.context.error_codes = frozenset().union(
            *(op.context.error_codes for op in self.operations))
        self.context.batch = [(op.context.operation_name, op.context.outcome)
                              for op in self.operations]
