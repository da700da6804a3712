"""Plans kept per operation (app/execution/executor.py, `OperationPlan`): the first request
of an operation from the operation cache keeps what the plan worked out (its grouped fields,
whether it plans, each selection's subfields and plan); the next requests of it reuse that,
and still answer by their own variables. An operation whose directives read a variable is
planned per request, and a document from no operation cache is never kept."""

from __future__ import annotations

import asyncio
from typing import Any

from graphql import (
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLField,
    GraphQLInt,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    execute,
    parse,
    specified_rules,
)

from app.execution.executor import GatewayExecutor, OperationPlan, PlanExecutor
from app.execution.operations import OperationCache
from tests.unit.helpers import direct


async def later(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


CHILD: GraphQLObjectType = GraphQLObjectType("Child", lambda: {
    "n": GraphQLField(GraphQLNonNull(GraphQLInt), resolve=direct(lambda s, i: s["n"])),
    "twice": GraphQLField(GraphQLNonNull(GraphQLInt),
                          resolve=direct(lambda s, i: later(s["n"] * 2))),
    "child": GraphQLField(CHILD, resolve=direct(lambda s, i: later({"n": s["n"] + 1}))),
    "odd": GraphQLField(GraphQLNonNull(GraphQLBoolean),
                        resolve=direct(lambda s, i: s["n"] % 2 == 1)),
})
SCHEMA = GraphQLSchema(GraphQLObjectType("Query", {
    "item": GraphQLField(CHILD, {"n": GraphQLArgument(GraphQLInt)},
                         resolve=direct(lambda s, i, n=1: later({"n": n}))),
    "items": GraphQLField(GraphQLList(CHILD), {"n": GraphQLArgument(GraphQLInt)},
                          resolve=direct(lambda s, i, n=3: later([{"n": k}
                                                                  for k in range(n)]))),
    # Not marked direct: an operation that selects it is left to graphql-core.
    "plain": GraphQLField(GraphQLInt, resolve=lambda s, i: 7),
}))


class Counting(PlanExecutor):
    """Counts the selections it collects: a kept plan collects none."""

    collected = 0

    def collect_subfields(self, return_type: Any, field_details_list: Any) -> Any:
        Counting.collected += 1
        return super().collect_subfields(return_type, field_details_list)


def cache() -> OperationCache:
    return OperationCache(SCHEMA, specified_rules, None)


async def run(document: Any, variables: dict[str, Any] | None = None,
              name: str | None = None, executor: type = Counting) -> Any:
    result = execute(SCHEMA, document, variable_values=variables, operation_name=name,
                     executor_class=executor)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return result


async def both(document: Any, variables: dict[str, Any] | None = None,
               name: str | None = None) -> Any:
    """The plan's answer, checked against graphql-core's own executor."""
    plan = await run(document, variables, name)
    core = await run(document, variables, name, GatewayExecutor)
    assert plan.formatted == core.formatted
    return plan.formatted


QUERY = """query Q($n: Int, $m: Int) {
  item(n: $n) { n twice child { n twice child { n } } }
  items(n: $m) { n odd child { twice } }
}"""


async def test_the_second_request_runs_the_kept_plan_with_its_own_variables() -> None:
    operations = cache()
    prepared = operations.get(QUERY)
    Counting.collected = 0
    first = await both(prepared.document, {"n": 1, "m": 2})
    assert Counting.collected > 0
    (kept,) = prepared.plans.values()
    assert isinstance(kept, OperationPlan) and kept.plannable
    Counting.collected = 0
    second = await both(prepared.document, {"n": 5, "m": 4})
    # Nothing collected again, and the same plan object kept.
    assert Counting.collected == 0
    assert list(prepared.plans.values()) == [kept]
    assert first["data"]["item"] == {"n": 1, "twice": 2,
                                     "child": {"n": 2, "twice": 4, "child": {"n": 3}}}
    assert second["data"]["item"] == {"n": 5, "twice": 10,
                                      "child": {"n": 6, "twice": 12, "child": {"n": 7}}}
    assert [i["n"] for i in second["data"]["items"]] == [0, 1, 2, 3]
    assert [i["odd"] for i in second["data"]["items"]] == [False, True, False, True]


async def test_concurrent_requests_of_a_new_operation_answer_alike() -> None:
    prepared = cache().get(QUERY)
    answers = await asyncio.gather(*(run(prepared.document, {"n": k, "m": k})
                                     for k in range(8)))
    for k, answer in enumerate(answers):
        assert answer.errors is None
        assert answer.data["item"]["twice"] == 2 * k
        assert len(answer.data["items"]) == k


async def test_an_operation_whose_directives_read_variables_is_planned_per_request() -> None:
    query = """query Q($with: Boolean!, $n: Int) {
      item(n: $n) { n ...F child @include(if: $with) { n } }
    }
    fragment F on Child { twice @skip(if: $with) }"""
    prepared = cache().get(query)
    shapes = []
    for flag in (True, False, True, False):
        answer = await both(prepared.document, {"with": flag, "n": 3})
        shapes.append(sorted(answer["data"]["item"]))
    assert shapes == [["child", "n"], ["n", "twice"]] * 2
    assert list(prepared.plans.values()) == [False]  # nothing kept: per request


async def test_literal_directives_are_kept_with_the_plan() -> None:
    query = "{ item(n: 2) { n twice @skip(if: true) child @include(if: true) { n } } }"
    prepared = cache().get(query)
    for _ in range(2):
        answer = await both(prepared.document)
        assert answer["data"] == {"item": {"n": 2, "child": {"n": 3}}}
    (kept,) = prepared.plans.values()
    assert isinstance(kept, OperationPlan)


async def test_each_operation_of_a_document_keeps_its_own_plan() -> None:
    query = "query A { item(n: 4) { n } } query B { items(n: 2) { twice } }"
    prepared = cache().get(query)
    for _ in range(2):
        assert (await both(prepared.document, name="A"))["data"] == {"item": {"n": 4}}
        assert (await both(prepared.document, name="B"))["data"] == {
            "items": [{"twice": 0}, {"twice": 2}]}
    kept = list(prepared.plans.values())
    assert len(kept) == 2 and all(isinstance(plan, OperationPlan) for plan in kept)
    assert kept[0] is not kept[1]


async def test_an_operation_the_plan_does_not_take_is_kept_as_such() -> None:
    prepared = cache().get("{ plain item(n: 1) { n } }")
    for _ in range(2):
        assert (await both(prepared.document))["data"] == {"plain": 7, "item": {"n": 1}}
    (kept,) = prepared.plans.values()
    assert isinstance(kept, OperationPlan) and not kept.plannable


async def test_a_document_from_no_operation_cache_is_not_kept() -> None:
    document = parse(QUERY)
    Counting.collected = 0
    await both(document, {"n": 1, "m": 1})
    first = Counting.collected
    Counting.collected = 0
    await both(document, {"n": 1, "m": 1})
    assert first > 0 and Counting.collected == first  # collected anew each time


async def test_a_fragment_on_an_interface_reads_each_types_argument_defaults() -> None:
    # One field node of the fragment is a field of two object types whose argument's
    # default differs: each type's own default (found by the review of the kept plans; it
    # predates them, and the gateway's schema has no interface today).
    named = GraphQLInterfaceType("Named", lambda: {
        "label": GraphQLField(GraphQLString, {"upper": GraphQLArgument(GraphQLBoolean)})})

    def kind(name: str, upper: bool) -> GraphQLObjectType:
        return GraphQLObjectType(name, lambda: {"label": GraphQLField(
            GraphQLString, {"upper": GraphQLArgument(GraphQLBoolean, default_value=upper)},
            resolve=direct(lambda s, i, upper: s.upper() if upper else s))},
            interfaces=[named])

    loud, quiet = kind("Loud", True), kind("Quiet", False)
    schema = GraphQLSchema(GraphQLObjectType("Query", {
        "loud": GraphQLField(loud, resolve=direct(lambda s, i: later("one"))),
        "quiet": GraphQLField(quiet, resolve=direct(lambda s, i: later("two"))),
    }), types=[loud, quiet])
    prepared = OperationCache(schema, specified_rules, None).get(
        "{ loud { ...L } quiet { ...L } } fragment L on Named { label }")
    for executor in (PlanExecutor, PlanExecutor, GatewayExecutor):
        result: Any = execute(schema, prepared.document, executor_class=executor)
        answer = await result if asyncio.iscoroutine(result) else result
        assert answer.formatted == {"data": {"loud": {"label": "ONE"},
                                             "quiet": {"label": "two"}}}
