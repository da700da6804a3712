"""The operation cache: a document's text mapped to its parsed document and its validation
errors, in a bounded LRU, so that a repeated operation is parsed and validated once; per
request only its variables are coerced (by the executor) and its limits checked.

Each prepared document also keeps, per operation, what its query limits found that depends
on nothing else (app/execution/limits.py: depth, aliases, and the cost estimate when no
variable changes it); the limits find it by the document (`prepared_of`), whichever path
got the document from a cache.

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
from weakref import WeakValueDictionary

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules, validate
from graphql.validation import ASTValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

DEFAULT_MAXSIZE = 256


class Prepared:
    """A parsed document, its validation errors (empty: valid), and what the query limits
    and the plan executor worked out for its operations on `schema` once (by the operation
    name the client gave: app/execution/limits.py; by operation: app/execution/executor.py)."""

    __slots__ = ("__weakref__", "document", "errors", "limits", "plans", "schema")

    def __init__(self, document: DocumentNode, errors: list[GraphQLError],
                 schema: GraphQLSchema | None = None) -> None:
        self.document = document
        self.errors = errors
        self.schema = schema
        self.limits: dict[str | None, Any] = {}
        # The plan executor's, per operation node (app/execution/executor.py).
        self.plans: dict[int, Any] = {}


# Each document a cache holds, by its identity, to its Prepared: for the query limits, which
# are handed the document only. Weak: an entry goes with its Prepared, once evicted and no
# request holds it (ids are not reused while it lives).
_BY_DOCUMENT: WeakValueDictionary[int, Prepared] = WeakValueDictionary()


def prepared_of(document: DocumentNode) -> Prepared | None:
    """The Prepared an operation cache holds this very document in; None if none does (a
    document parsed elsewhere)."""
    prepared = _BY_DOCUMENT.get(id(document))
    return prepared if prepared is not None and prepared.document is document else None


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
        prepared = Prepared(document, validate(self.schema, document, self.rules), self.schema)
        _BY_DOCUMENT[id(document)] = prepared
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
