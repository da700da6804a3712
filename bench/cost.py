"""What demand control costs per request (app/execution/cost.py): the estimate of the deep
query before execution, and its actual cost over a full response of the same shape (every
list as long as its `first`: 1,010 objects), in this process. Writes the `Cost` section of
bench/RESULTS.md.

    python -m bench.cost
"""

from __future__ import annotations

import timeit
from pathlib import Path
from typing import Any

import orjson
from graphql import OperationDefinitionNode, parse
from graphql.execution.values import get_variable_values

from app.execution.cost import actual_cost, estimate
from bench.report import replace_section
from schema import build_schema

HERE = Path(__file__).parent


def deep_response() -> dict[str, Any]:
    """A full answer to bench/queries/deep.graphql: every list at its `first`."""
    def product2() -> dict[str, Any]:
        return {"id": "p", "name": "n", "inStock": True,
                "reviews": [{"id": "r", "author": {"id": "u", "name": "n"}} for _ in range(2)]}

    def review() -> dict[str, Any]:
        return {"id": "r", "rating": 5, "body": "b", "author": {
            "id": "u", "username": "x",
            "reviews": [{"id": "r", "rating": 5, "product": product2()} for _ in range(3)]}}

    return {"topProducts": [
        {"id": "p", "name": "n", "price": {"amount": 1, "currency": "EUR"}, "inStock": True,
         "category": {"id": "c", "name": "n"}, "reviews": [review() for _ in range(5)]}
        for _ in range(10)]}


def main() -> None:
    schema = build_schema()._schema
    operation = parse((HERE / "queries" / "deep.graphql").read_text()).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    variables = get_variable_values(schema, operation.variable_definitions or (), {})
    data = deep_response()
    assert estimate(schema, operation, {}, variables) == actual_cost(
        schema, operation, {}, variables, data)
    rounds, number = 5, 200

    def best(fn: Any) -> float:
        return min(timeit.repeat(fn, number=number, repeat=rounds)) / number * 1000

    figures = {
        "estimate (before execution)": best(lambda: estimate(schema, operation, {},
                                                             variables)),
        "actual cost (over the response)": best(
            lambda: actual_cost(schema, operation, {}, variables, data)),
        "orjson.dumps of the same response (for scale)": best(lambda: orjson.dumps(data)),
    }
    rows = "\n".join(f"| {name} | {ms:.3f} |" for name, ms in figures.items())
    body = (f"`python -m bench.cost`: the deep query (estimated and actual cost "
            f"{estimate(schema, operation, {}, variables)}), its full response (1,010 "
            f"objects), best of {rounds} rounds of {number} calls, in one process.\n\n"
            f"| step | ms per request |\n|---|---|\n{rows}\n")
    print(body)
    replace_section(HERE / "RESULTS.md", "Cost", body)


if __name__ == "__main__":
    main()
