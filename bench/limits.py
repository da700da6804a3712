"""What the query limits cost per request (app/execution/limits.py), with their memo and
without it, in one process: the check before execution (lengths, variables, depth, aliases,
the estimate) and the actual cost after it, for the product page (with a response of 10
reviews) and the deep query (a full response, as bench/cost.py's). Without the memo: the
same document, parsed once but held by no operation cache, so nothing is kept for it.

    python -m bench.limits
"""

from __future__ import annotations

import timeit
from pathlib import Path
from typing import Any

from graphql import parse

from app.execution.limits import Lengths, check
from bench.cost import deep_response
from schema import build_schema

HERE = Path(__file__).parent
LIMITS = {"depth": 15, "aliases": 30, "cost": 5000}
LENGTHS = Lengths(256, 10_000)


def page_response() -> dict[str, Any]:
    return {"product": {
        "id": "p1", "name": "n", "description": "d", "price": {"amount": 1, "currency": "EUR"},
        "weightGrams": 3, "inventory": {"quantity": 1, "inStock": True, "warehouse": "w"},
        "category": {"id": "c", "name": "n"}, "averageRating": 4.0, "reviewCount": 3,
        "reviews": [{"id": "r", "rating": 5, "body": "b", "createdAt": "x",
                     "author": {"id": "u", "name": "n", "username": "u"}}
                    for _ in range(10)]}}


def per_request(schema: Any, query: str, variables: dict[str, Any], data: Any,
                rounds: int = 5, number: int = 2000) -> tuple[float, float]:
    """Microseconds of the limits' work per request: with the memo, and without it."""
    graphql_schema = schema._schema
    loose = parse(query)  # held by no operation cache

    def limits(document: Any) -> int:
        checked = check(graphql_schema, document, None, variables, LIMITS, LENGTHS)
        assert checked.figures is not None, checked.error
        return checked.figures.actual(graphql_schema, checked.variables, data)

    assert limits(schema.operations.get(query).document) == limits(loose)
    memo = min(timeit.repeat(lambda: limits(schema.operations.get(query).document),
                             number=number, repeat=rounds))
    anew = min(timeit.repeat(lambda: limits(loose), number=number, repeat=rounds))
    return memo / number * 1e6, anew / number * 1e6


def main() -> None:
    schema = build_schema()
    print("| query | limits per request, memo (us) | without (us) | ratio |")
    print("|---|---|---|---|")
    for label, file, variables, data in (
            ("product page", "product_page.graphql", {"id": "p1"}, page_response()),
            ("deep", "deep.graphql", {}, deep_response())):
        memo, anew = per_request(schema, (HERE / "queries" / file).read_text(), variables,
                                 data)
        print(f"| {label} | {memo:.1f} | {anew:.1f} | {memo / anew:.2f} |")


if __name__ == "__main__":
    main()
