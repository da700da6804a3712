"""The operation cache: a document's text mapped to its parsed document and its validation
errors, in a bounded LRU, so that a repeated operation is parsed and validated once; per
request only its variables are coerced (by the executor) and its limits checked.

Both depend only on the text, the schema and the rules, all fixed when the cache is built:
the rules come from settings (introspection off, string lengths, the token limit), never
from the caller (auth, rate limits and the variables' checks run per request, after it).
A document that does not parse is not kept: its error is raised anew each time.

Over HTTP it is part of one Strawberry extension, `GatewayOperation`, in place of
Strawberry's MaxTokensLimiter, ParserCache, ValidationCache and AddValidationRules (four
extensions, and their hooks, per request; and ValidationCache hashed the whole document on
every request) and of the gateway's own QueryLimits, RateLimit and OperationPolicy.
The subscriptions' hub (app/execution/subscriptions.py) keeps one of its own, with its rules.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules, validate
from graphql.validation import ASTValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from app.execution.limits import QueryLimits
from app.execution.policy import note_policy
from app.security.ratelimit import RateLimiter, charge

DEFAULT_MAXSIZE = 256


class Prepared:
    """A parsed document and its validation errors (empty: valid)."""

    __slots__ = ("document", "errors")

    def __init__(self, document: DocumentNode, errors: list[GraphQLError]) -> None:
        self.document = document
        self.errors = errors


class OperationCache:
    def __init__(self, schema: GraphQLSchema, rules: Sequence[type[ASTValidationRule]],
                 max_tokens: int | None, maxsize: int = DEFAULT_MAXSIZE) -> None:
        self.schema = schema
        self.rules = tuple(rules)
        self.max_tokens = max_tokens
        self.maxsize = maxsize
        self._entries: OrderedDict[str, Prepared] = OrderedDict()

    def get(self, query: str) -> Prepared:
        """The prepared document; a GraphQLError when it does not parse (or is over the
        token limit)."""
        entries = self._entries
        prepared = entries.get(query)
        if prepared is not None:
            entries.move_to_end(query)
            return prepared
        document = parse(query, max_tokens=self.max_tokens)
        prepared = Prepared(document, validate(self.schema, document, self.rules))
        entries[query] = prepared
        if len(entries) > self.maxsize:
            entries.popitem(last=False)
        return prepared

    def __len__(self) -> int:
        return len(self._entries)


class GatewayOperation(SchemaExtension):
    """The gateway's steps of an operation over HTTP, as one Strawberry extension (each
    extension and hook costs Strawberry's runner a few microseconds per request): parse and
    validate from the operation cache; then, before it executes, its limits (depth, aliases,
    cost, string lengths: `QueryLimits`), the rate limit's charge (`RateLimitedOperation`)
    and its static cache policy (`note_policy`), in that order."""

    def __init__(self, *, cache: OperationCache, limits: QueryLimits) -> None:
        self.cache = cache
        self.limits = limits
        self._errors: list[GraphQLError] | None = None

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.graphql_document is None:
            # (A parse error raised here reaches the client as from Strawberry's own parse,
            # as with Strawberry's ParserCache.)
            prepared = self.cache.get(ec.query)  # type: ignore[arg-type]  # (checked before)
            ec.graphql_document = prepared.document
            self._errors = prepared.errors
        yield

    def on_validate(self) -> Iterator[None]:
        if self._errors is not None:
            # A copy: a request's error list is its own (errors are classified in place,
            # the same way each time).
            self.execution_context.pre_execution_errors = list(self._errors)
        yield

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        self.limits.check(ec)
        note_policy(ec)
        yield


class RateLimitedOperation(GatewayOperation):
    """`GatewayOperation` with the rate limit's charge, between the limits (which compute
    the cost it spends) and the policy."""

    def __init__(self, *, cache: OperationCache, limits: QueryLimits,
                 limiter: RateLimiter) -> None:
        super().__init__(cache=cache, limits=limits)
        self.limiter = limiter

    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        ec = self.execution_context
        self.limits.check(ec)
        await charge(self.limiter, ec)
        note_policy(ec)
        yield


def http_rules(rules: Sequence[type[ASTValidationRule]]) -> tuple[Any, ...]:
    """The rules Strawberry validates an HTTP operation with, plus `rules`, in its order."""
    return (*specified_rules, *rules, MaybeNullValidationRule, OneOfInputValidationRule)
