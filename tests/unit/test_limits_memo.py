"""The query limits' memo (app/execution/limits.py, `OperationFigures`): what the document
alone decides is worked out once per prepared operation, and everything the variables
change is worked out per request. Each check here is made against a memo that would be
wrong if it were keyed by the document alone, and against the same check of a document
parsed anew each time (which no operation cache holds, so nothing is kept for it)."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import Any

import pytest
from graphql import (
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    parse,
    specified_rules,
)
from graphql import build_schema as build_sdl
from graphql.execution.values import get_variable_values
from hypothesis import HealthCheck, given, settings

import app.execution.limits as limits_module
from app.config.settings import Settings
from app.execution.cost import actual_cost, attach, estimate
from app.execution.limits import Lengths, OperationFigures, check, check_limits
from app.execution.operations import OperationCache, prepared_of
from schema import build_schema
from tests.gateway.querygen import queries

SCHEMA = build_schema()._schema
LIMITS = {"depth": 6, "aliases": 3, "cost": 300}
LENGTHS = Lengths(256, 10_000)

PAGE = ("query($id: ID!) { product(id: $id) { id name reviews(first: 10) { id "
        "author { id name } } } }")
BY_FIRST = "query($n: Int) { topProducts(first: $n) { id category { id } } }"
BY_INCLUDE = ("query($all: Boolean!) { topProducts(first: 3) { id "
              "category @include(if: $all) { id } } }")
BY_SKIPPED_SPREAD = ("query($s: Boolean = false) { topProducts(first: 4) { id ...C @skip(if: $s) } }"
                     " fragment C on Product { category { id } }")
IN_FRAGMENT = ("query($n: Int) { topProducts(first: 2) { ...R } } "
               "fragment R on Product { reviews(first: $n) { id } }")
BY_IDS = "query($ids: [ID!]!) { products(ids: $ids) { id category { id } } }"
IDS_IN_LIST = 'query($a: ID!) { products(ids: ["p1", $a]) { id } }'
AFTER_CURSOR = ("query($c: String) { category(id: \"c1\") { products(first: 3, after: $c) "
                "{ edges { node { id } } } } }")
ALIASES = "{ a: topProducts(first: 1) { id } b: topProducts(first: 1) { id } " \
          "c: topProducts(first: 1) { id } d: topProducts(first: 1) { id } }"
DEEP = ("{ topProducts(first: 1) { reviews(first: 1) { author { reviews(first: 1) { "
        "product { reviews(first: 1) { author { id } } } } } } } }")
TWO = "query A { topProducts(first: 2) { id } } query B($n: Int) { topProducts(first: $n) { id } }"

# (document, operation name, the variables of each request in turn)
CASES: list[tuple[str, str | None, list[dict[str, Any]]]] = [
    (PAGE, None, [{"id": "p1"}, {"id": "p2"}, {"id": "x" * 300}, {}, {"id": "p1"}]),
    (BY_FIRST, None, [{"n": 2}, {"n": 200}, {}, {"n": None}, {"n": "x"}, {"n": 2}]),
    (BY_INCLUDE, None, [{"all": True}, {"all": False}, {"all": True}, {}]),
    (BY_SKIPPED_SPREAD, None, [{}, {"s": True}, {"s": False}, {}]),
    (IN_FRAGMENT, None, [{"n": 1}, {"n": 100}, {"n": 1}]),
    (BY_IDS, None, [{"ids": ["p1"]}, {"ids": ["p1", "p2", "p3"]}, {"ids": []}]),
    (IDS_IN_LIST, None, [{"a": "p2"}, {"a": "p3"}]),
    (AFTER_CURSOR, None, [{}, {"c": "abc"}, {"c": None}]),
    (ALIASES, None, [{}, {}]),
    (DEEP, None, [{}, {}]),
    (TWO, None, [{}, {}]),
    (TWO, "A", [{}, {"n": 3}]),
    (TWO, "B", [{"n": 3}, {"n": 500}, {}]),
    (TWO, "C", [{}, {}]),
]


def _outcome(cost: int | None, error: GraphQLError | None) -> tuple[Any, ...]:
    if error is None:
        return cost, None
    return cost, error.message, error.extensions


def _unmemoized(query: str, name: str | None, variables: dict[str, Any]) -> tuple[Any, ...]:
    document = parse(query)  # a new document: no cache holds it, nothing is kept for it
    assert prepared_of(document) is None
    return _outcome(*check_limits(SCHEMA, document, name, variables, LIMITS, LENGTHS))


@pytest.mark.parametrize(("query", "name", "requests"), CASES)
def test_a_memoized_operation_is_checked_as_one_checked_anew(
        query: str, name: str | None, requests: list[dict[str, Any]]) -> None:
    cache = OperationCache(SCHEMA, specified_rules, None)
    for _ in range(2):  # the second round all from the memo
        for variables in requests:
            document = cache.get(query).document
            memoized = _outcome(*check_limits(SCHEMA, document, name, variables, LIMITS,
                                              LENGTHS))
            assert memoized == _unmemoized(query, name, variables), (query, variables)


def test_the_cases_cover_each_refusal_and_figures_that_the_variables_change() -> None:
    """The comparison above is not vacuous: its cases hold every refusal, and costs that
    differ by their variables only."""
    outcomes = {(q, n, repr(v)): _unmemoized(q, n, v) for q, n, vs in CASES for v in vs}
    codes = {o[2]["code"] for o in outcomes.values() if o[1] is not None}
    measures = {o[2].get("measure") for o in outcomes.values() if o[1] is not None}
    assert codes == {"QUERY_TOO_COMPLEX", "BAD_USER_INPUT", "BAD_REQUEST"}
    assert measures >= {"depth", "aliases", "cost"}
    # (Costs by hand: 2 products x (1 + a category 1); 200 of them are over 300.)
    assert outcomes[(BY_FIRST, None, repr({"n": 2}))] == (4, None)
    assert outcomes[(BY_FIRST, None, repr({"n": 200}))][:2] == (
        400, "The operation's cost is 400, over the limit of 300")
    assert outcomes[(BY_FIRST, None, repr({"n": "x"}))] == (None, None)  # does not coerce


@pytest.mark.parametrize(("query", "first", "second"), [
    (BY_FIRST, ({"n": 2}, 4), ({"n": 7}, 14)),
    (BY_INCLUDE, ({"all": True}, 6), ({"all": False}, 3)),
    (BY_SKIPPED_SPREAD, ({}, 8), ({"s": True}, 4)),
    (IN_FRAGMENT, ({"n": 1}, 2 * (1 + 1)), ({"n": 4}, 2 * (1 + 4))),
    (BY_IDS, ({"ids": ["p1"]}, 2), ({"ids": ["p1", "p2", "p3"]}, 6)),
])
def test_an_estimate_that_reads_a_variable_follows_the_variables(
        query: str, first: tuple[dict[str, Any], int],
        second: tuple[dict[str, Any], int]) -> None:
    cache = OperationCache(SCHEMA, specified_rules, None)
    for variables, cost in (first, second, first, second):
        document = cache.get(query).document
        assert check_limits(SCHEMA, document, None, variables, LIMITS, LENGTHS) == (cost, None)
    figures = cache.get(query).limits[None]
    assert isinstance(figures, OperationFigures) and figures.cost is None  # not kept


@pytest.mark.parametrize("query", [
    'query($f: String = "x") { items(filter: $f) { id } }',
    'query($f: String = "x") { items(filter: "a", where: { name: $f }) { id } }',
    'query($f: ID = "x") { items(filter: "a", ids: ["i1", $f]) { id } }',
])
def test_a_sized_fields_other_arguments_given_a_variable_are_read_each_time(
        query: str) -> None:
    """A sized field's other arguments are coerced too (also a variable inside a list or an
    input object): a variable's null where null is refused raises, for that request only."""
    sdl = """
        directive @listSize(assumedSize: Int, slicingArguments: [String!],
          sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
        input Where { name: String! }
        type Query { items(first: Int = 2, filter: String!, where: Where, ids: [ID!]):
                       [Item!]! @listSize(slicingArguments: ["first"]) }
        type Item { id: ID! }"""
    schema = build_sdl(sdl)
    attach(schema, sdl)
    cache = OperationCache(schema, specified_rules, None)
    assert check_limits(schema, cache.get(query).document, None, {}, LIMITS, LENGTHS) == (
        2, None)
    with pytest.raises(GraphQLError):
        check_limits(schema, cache.get(query).document, None, {"f": None}, LIMITS, LENGTHS)
    assert check_limits(schema, cache.get(query).document, None, {"f": "y"}, LIMITS,
                        LENGTHS) == (2, None)


def test_each_operation_of_a_document_has_its_own_figures() -> None:
    cache = OperationCache(SCHEMA, specified_rules, None)
    for name, variables, cost in (("A", {}, 2), ("B", {"n": 3}, 3), ("A", {"n": 3}, 2),
                                  ("B", {"n": 9}, 9), ("C", {}, None)):
        assert check_limits(SCHEMA, cache.get(TWO).document, name, variables, LIMITS,
                            LENGTHS) == (cost, None)
    assert set(cache.get(TWO).limits) == {"A", "B"}  # (a name no operation has: not kept)


def test_a_broken_list_size_rule_is_kept_and_refused_each_time() -> None:
    sdl = """
        directive @listSize(assumedSize: Int, slicingArguments: [String!],
          sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
        type Query { items(first: Int, last: Int): [Item!]!
                       @listSize(slicingArguments: ["first", "last"]) }
        type Item { id: ID! }"""
    schema = build_sdl(sdl)
    attach(schema, sdl)
    cache = OperationCache(schema, specified_rules, None)
    for query, kept in (("{ items(first: 1, last: 2) { id } }", True),
                        ("query($l: Int) { items(first: 1, last: $l) { id } }", False)):
        outcomes = [_outcome(*check_limits(schema, cache.get(query).document, None,
                                           variables, LIMITS, LENGTHS))
                    for variables in ({}, {"l": 2}, {})]
        expected = (None, "Query.items needs exactly one of its slicing arguments "
                    "(first, last), got 2", {"code": "BAD_USER_INPUT"})
        if kept:
            assert outcomes == [expected] * 3
            assert cache.get(query).limits[None].cost_error is not None
        else:  # the variable decides: absent, one argument; given, two
            assert outcomes == [(1, None), expected, (1, None)]


class _Counting:
    """Counts the instances made of a class (Measurer, Estimator, Planner)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.made = 0
        real = getattr(limits_module, name)

        def make(*args: Any) -> Any:
            self.made += 1
            return real(*args)

        monkeypatch.setattr(limits_module, name, make)


def _data(products: int) -> dict[str, Any]:
    return {"topProducts": [{"id": "p", "category": {"id": "c"}} for _ in range(products)]}


def test_a_repeated_operation_is_measured_once(monkeypatch: pytest.MonkeyPatch) -> None:
    measured, estimated, planned = (_Counting(monkeypatch, name)
                                    for name in ("Measurer", "Estimator", "Planner"))
    cache = OperationCache(SCHEMA, specified_rules, None)
    query = "{ topProducts(first: 3) { id category { id } } }"
    for _ in range(5):
        checked = check(SCHEMA, cache.get(query).document, None, {}, LIMITS, LENGTHS)
        assert (checked.cost, checked.error) == (6, None) and checked.figures is not None
        assert checked.figures.actual(SCHEMA, checked.variables, _data(2)) == 4
    assert (measured.made, estimated.made, planned.made) == (1, 1, 1)

    # With variables the estimate does not read (and another operation name): kept too.
    for variables in ({"id": "p1"}, {"id": "p2"}, {"id": "p3"}):
        cost, error = check_limits(SCHEMA, cache.get(PAGE).document, None, variables, LIMITS,
                                   LENGTHS)
        assert (cost, error) == (1 + 10 * 2, None)
    assert (measured.made, estimated.made) == (2, 2)

    # Where the variables change the estimate and the plan, they are made per request;
    # depth and aliases are not.
    for n in (1, 2, 3):
        checked = check(SCHEMA, cache.get(BY_INCLUDE).document, None, {"all": n != 2},
                        LIMITS, LENGTHS)
        assert checked.figures is not None
        data = _data(3)
        assert checked.figures.actual(SCHEMA, checked.variables, data) == (
            6 if n != 2 else 3)  # (the data holds the categories either way)
    assert (measured.made, estimated.made, planned.made) == (3, 5, 4)

    # A document no operation cache holds: nothing kept.
    for _ in range(2):
        check_limits(SCHEMA, parse(query), None, {}, LIMITS, LENGTHS)
    assert estimated.made == 7


@pytest.mark.parametrize(("query", "requests"), [
    (BY_INCLUDE, [{"all": True}, {"all": False}]),
    (BY_SKIPPED_SPREAD, [{}, {"s": True}]),
    (BY_FIRST, [{"n": 2}, {"n": 5}]),
    ("{ topProducts(first: 3) { id category { id } } }", [{}, {}]),
])
def test_the_actual_cost_is_the_unmemoized_one(query: str,
                                               requests: list[dict[str, Any]]) -> None:
    cache = OperationCache(SCHEMA, specified_rules, None)
    document = parse(query)
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    for variables in requests * 2:
        checked = check(SCHEMA, cache.get(query).document, None, variables, LIMITS, LENGTHS)
        assert checked.figures is not None
        coerced = get_variable_values(SCHEMA, operation.variable_definitions or (), variables)
        assert not isinstance(coerced, list)
        for data in (_data(3), _data(0), None):
            assert checked.figures.actual(SCHEMA, checked.variables, data) == actual_cost(
                SCHEMA, operation, fragments, coerced, data)
        assert checked.cost == estimate(SCHEMA, operation, fragments, coerced)


def _refusals(schema: Any, query: str, variables: dict[str, Any]) -> tuple[Any, ...]:
    context = SimpleNamespace(cost=0, cost_measured=False, cost_actual=None)
    result = asyncio.run(schema.execute(query, variable_values=variables,
                                        context_value=context))
    assert result.data is None and result.errors
    return context.cost, [(e.message, e.extensions) for e in result.errors]


def test_over_http_the_limits_and_the_charge_follow_each_requests_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the schema's extensions (the operation cache's, then QueryLimits): the cost
    charged (`context.cost`) and the refusal are each request's own."""
    estimated = _Counting(monkeypatch, "Estimator")
    schema = build_schema(settings=Settings(max_query_cost=0))
    for n in (2, 7, 2):
        assert _refusals(schema, BY_FIRST, {"n": n}) == (2 * n, [(
            f"The operation's cost is {2 * n}, over the limit of 0",
            {"code": "QUERY_TOO_COMPLEX", "measure": "cost", "limit": 0,
             "actual": 2 * n})])
    assert estimated.made == 3
    static = "{ topProducts(first: 3) { id category { id } } }"
    for _ in range(3):
        assert _refusals(schema, static, {})[0] == 6
    assert estimated.made == 4


def test_a_pages_cursor_variable_leaves_the_estimate_kept() -> None:
    """`after: $c` is a nullable argument given a variable itself: coercing it reads
    nothing that could change the size or raise, so the estimate is still kept (and
    the same as worked out anew: above)."""
    cache = OperationCache(SCHEMA, specified_rules, None)
    for variables in ({}, {"c": "abc"}, {"c": None}):
        assert check_limits(SCHEMA, cache.get(AFTER_CURSOR).document, None, variables, LIMITS,
                            LENGTHS) == (1 + 1 + 3 * (1 + 1), None)
    assert cache.get(AFTER_CURSOR).limits[None].cost == 1 + 1 + 3 * (1 + 1)


def test_an_argument_kept_under_a_slicing_arguments_name_is_read_each_time() -> None:
    """An argument whose `out_name` is a slicing argument's name is what `slicing_size`
    reads under that name: given a variable, the estimate follows it."""
    sdl = """
        directive @listSize(assumedSize: Int, slicingArguments: [String!],
          sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
        type Query { items(count: Int): [Item!]! @listSize(slicingArguments: ["first"],
                                                           requireOneSlicingArgument: false) }
        type Item { id: ID! }"""
    schema = build_sdl(sdl)
    attach(schema, sdl)
    assert schema.query_type is not None
    schema.query_type.fields["items"].args["count"].out_name = "first"
    cache = OperationCache(schema, specified_rules, None)
    query = "query($n: Int) { items(count: $n) { id } }"
    for n in (2, 5, 2):
        assert check_limits(schema, cache.get(query).document, None, {"n": n}, LIMITS,
                            LENGTHS) == (n, None)


def _other(value: Any) -> Any:
    """Another value of a variable's type: what a memo keyed by the document would miss."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, list):
        return value * 3
    return value


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(drawn=queries(SCHEMA))
def test_drawn_documents_are_checked_with_the_memo_as_without_it(
        drawn: tuple[str, dict[str, Any]]) -> None:
    """The differential test's documents (tests/gateway/querygen.py: aliases, fragments,
    @skip/@include with literals and variables, sized fields given variables), each checked
    from one operation cache with its variables, other variables, then its own again."""
    drawn_query, variables = drawn
    others = {name: _other(value) for name, value in variables.items()}
    cache = OperationCache(SCHEMA, specified_rules, None)
    # Also with every @skip/@include given a literal: most drawn documents have one given a
    # variable, which alone makes their estimate one the variables change.
    literal = re.sub(r"@(skip|include)\(if: \$v\d+\)",
                     lambda m: f"@{m[1]}(if: {'true' if m[1] == 'include' else 'false'})",
                     drawn_query)
    for query in (drawn_query, literal):
        for inputs in (variables, others, {}, variables):
            memoized = _outcome(*check_limits(SCHEMA, cache.get(query).document, None,
                                              inputs, LIMITS, LENGTHS))
            assert memoized == _unmemoized(query, None, inputs), (query, inputs)
