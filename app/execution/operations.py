"""The operation cache: a document's text mapped to its parsed document and its validation
errors, in a bounded LRU, so that a repeated operation is parsed and validated once; per
request only its variables are coerced (by the executor) and its limits checked.

Both depend only on the text, the schema and the rules, all fixed when the cache is built:
the rules come from settings (introspection off, string lengths, the token limit), never
from the caller (auth, rate limits and the variables' checks run per request, after it).
A document that does not parse is not kept: its error is raised anew each time.

Over HTTP it is one Strawberry extension, `PreparedOperation`, in place of Strawberry's
MaxTokensLimiter, ParserCache, ValidationCache and AddValidationRules (four extensions, and
their hooks, per request; and ValidationCache hashed the whole document on every request).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules, validate
from graphql.validation import ASTValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

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


class PreparedOperation(SchemaExtension):
    """Strawberry's parse and validate steps from an `OperationCache`."""

    def __init__(self, *, cache: OperationCache) -> None:
        self.cache = cache
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


def http_rules(rules: Sequence[type[ASTValidationRule]]) -> tuple[Any, ...]:
    """The rules Strawberry validates an HTTP operation with, plus `rules`, in its order."""
    return (*specified_rules, *rules, MaybeNullValidationRule, OneOfInputValidationRule)
