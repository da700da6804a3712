"""The query limits' memo (app/execution/limits.py): a repeated operation is measured once,
unless its cost depends on its variables, whose figures then follow each request's."""

from __future__ import annotations

from graphql import parse

from app.execution.limits import Lengths, MeasureMemo, check_limits
from schema import build_schema

LIMITS = {"depth": 20, "aliases": 30, "cost": 1000}
FIXED = "query { topProducts(first: 10) { id reviews(first: 5) { id } } }"
BY_VARIABLE = "query($n: Int) { topProducts(first: $n) { id } }"


def cost(document: object, variables: dict[str, object], memo: MeasureMemo) -> int | None:
    schema = build_schema()._schema
    figures, error = check_limits(schema, document, None, variables,  # type: ignore[arg-type]
                                  LIMITS, Lengths(256, 10_000), memo)
    assert error is None
    return figures


def test_an_operation_whose_cost_has_no_variable_is_measured_once() -> None:
    memo = MeasureMemo()
    document = parse(FIXED)
    assert cost(document, {}, memo) == cost(document, {}, memo) == 1 + 10 * (1 + 1 + 5 * 1)
    assert len(memo._entries) == 1 and next(iter(memo._entries.values()))[1] is not None


def test_a_cost_that_depends_on_the_variables_follows_each_request() -> None:
    memo = MeasureMemo()
    document = parse(BY_VARIABLE)
    assert cost(document, {"n": 3}, memo) == 1 + 3 * 1
    assert cost(document, {"n": 50}, memo) == 1 + 50 * 1
    assert next(iter(memo._entries.values()))[1] is None  # nothing kept for it
