"""The operation cache (app/execution/operations.py): a repeated document is parsed and
validated once, the cache stays bounded, and what it keeps depends on the settings the
schema was built with, never on an earlier request."""

from __future__ import annotations

import asyncio

from app.config.settings import Settings
from app.execution.operations import OperationCache
from schema import build_schema

INTROSPECTION = "{ __schema { queryType { name } } }"


def test_a_repeated_document_is_parsed_once_and_the_cache_is_bounded() -> None:
    schema = build_schema()
    cache = OperationCache(schema._schema, (), max_tokens=1000, maxsize=2)
    first = cache.get("{ __typename }")
    assert cache.get("{ __typename }") is first and not first.errors
    cache.get("{ a: __typename }")
    cache.get("{ b: __typename }")  # the least recently used, the first, goes
    assert len(cache) == 2 and cache.get("{ __typename }") is not first


def test_a_document_that_does_not_parse_is_refused_each_time_and_not_kept() -> None:
    schema = build_schema()
    for _ in range(2):
        result = asyncio.run(schema.execute("{ __typename "))
        assert result.errors
        assert (result.errors[0].extensions or {})["code"] == "GRAPHQL_PARSE_FAILED"
    assert len(schema.operations) == 0


def test_validation_follows_the_settings_the_schema_was_built_with() -> None:
    open_schema = build_schema(settings=Settings(introspection=True))
    closed = build_schema(settings=Settings(introspection=False))
    for _ in range(2):  # the second from the cache
        assert asyncio.run(open_schema.execute(INTROSPECTION)).errors is None
        refused = asyncio.run(closed.execute(INTROSPECTION))
        assert refused.errors and refused.data is None


def test_each_request_gets_its_own_list_of_validation_errors() -> None:
    schema = build_schema()
    first = asyncio.run(schema.execute("{ nope }"))
    second = asyncio.run(schema.execute("{ nope }"))
    assert first.errors and second.errors
    assert [e.message for e in first.errors] == [e.message for e in second.errors]
    assert first.errors is not second.errors
