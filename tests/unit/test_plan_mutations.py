"""A mutation's payloads through the plan executor (app/execution/executor.py): the root
fields one after the other, in document order, and each payload answered as graphql-core's
executor answers it, also where the gateway's schema cannot fail (a null propagated past a
payload, a nullable mutation field)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from graphql import (
    ExecutionResult,
    GraphQLArgument,
    GraphQLField,
    GraphQLInt,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    execute,
    parse,
)

from app.execution.executor import GatewayExecutor, PlanExecutor
from tests.unit.helpers import direct


def schema(written: list[int]) -> GraphQLSchema:
    def boom(source: Any, info: Any) -> Any:
        raise ValueError(f"boom {source['n']}")

    async def later(source: Any, info: Any) -> Any:
        await asyncio.sleep(0)
        return {"n": source["n"] * 10}

    child = GraphQLObjectType("Child", lambda: {
        "n": GraphQLField(GraphQLNonNull(GraphQLInt), resolve=direct(lambda s, i: s["n"])),
        "bad": GraphQLField(GraphQLNonNull(GraphQLInt), resolve=direct(boom)),
    })
    payload = GraphQLObjectType("Payload", lambda: {
        "n": GraphQLField(GraphQLNonNull(GraphQLInt), resolve=direct(lambda s, i: s["n"])),
        "boom": GraphQLField(GraphQLNonNull(GraphQLInt), resolve=direct(boom)),
        "child": GraphQLField(child, resolve=direct(later)),
        "kids": GraphQLField(GraphQLNonNull(child),
                             resolve=direct(later)),
    })

    async def write(source: Any, info: Any, n: int) -> Any:
        # The first fields take longest: run at once, they would finish last.
        await asyncio.sleep(0.001 * (5 - n))
        written.append(n)
        return {"n": n}

    mutation = GraphQLObjectType("Mutation", {
        "write": GraphQLField(GraphQLNonNull(payload), {"n": GraphQLArgument(GraphQLInt)},
                              resolve=write),
        "maybe": GraphQLField(payload, {"n": GraphQLArgument(GraphQLInt)}, resolve=write),
    })
    query = GraphQLObjectType("Query", {"n": GraphQLField(GraphQLInt)})
    return GraphQLSchema(query, mutation)


async def run(executor: type[GatewayExecutor], document: str) -> tuple[Any, list[int]]:
    written: list[int] = []
    result = execute(schema(written), parse(document), executor_class=executor)
    if asyncio.iscoroutine(result):
        result = await result
    assert isinstance(result, ExecutionResult)
    errors = sorted((e.message, tuple(e.path or ())) for e in result.errors or [])
    return (result.data, errors), written


@pytest.mark.parametrize("document", [
    # In document order, each payload's fields (a null under a nullable child).
    "mutation { a: write(n: 1) { n child { n } } b: write(n: 2) { n child { n bad } } "
    "c: write(n: 3) { boom2: n } }",
    # A null propagated past a (non-null) payload: the data is null, what follows not run.
    "mutation { a: write(n: 1) { n } b: write(n: 2) { n boom } c: write(n: 3) { n } }",
    "mutation { a: write(n: 1) { n kids { bad } } b: write(n: 2) { n } }",
    # Past a nullable mutation field: that field is null, and the next one runs.
    "mutation { a: maybe(n: 1) { n boom } b: write(n: 2) { n child { n } } }",
    "mutation { a: maybe(n: 1) { child { bad } kids { n } } b: maybe(n: 2) { n } }",
])
async def test_plan_answers_mutations_as_graphql_core(document: str) -> None:
    planned, planned_writes = await run(PlanExecutor, document)
    core, core_writes = await run(GatewayExecutor, document)
    assert planned == core
    assert planned_writes == core_writes == sorted(planned_writes)


async def test_payloads_are_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    original = PlanExecutor._payload

    def spy(self: PlanExecutor, *args: Any) -> Any:
        calls.append(args[2])  # the response key
        return original(self, *args)

    monkeypatch.setattr(PlanExecutor, "_payload", spy)
    (data, errors), written = await run(
        PlanExecutor, "mutation { a: write(n: 1) { n } b: maybe(n: 2) { child { n } } }")
    assert data == {"a": {"n": 1}, "b": {"child": {"n": 20}}} and not errors
    assert calls == ["a", "b"] and written == [1, 2]
