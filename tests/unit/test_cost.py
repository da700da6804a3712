"""The IBM GraphQL Cost Directives specification's estimated and actual costs, computed from
the served SDL's @cost and @listSize, for sample operations worked out by hand by the
specification's rules (objects 1, scalars 0, lists times their size, mutations 10)."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse
from graphql.execution.values import get_variable_values

from app.execution.cost import CostError, CostModel, actual_cost, estimate, model_of
from schema import build_schema

SCHEMA = build_schema()._schema


def _parts(query: str, variables: dict[str, Any] | None = None) -> tuple[Any, ...]:
    document = parse(query)
    operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    coerced = get_variable_values(SCHEMA, operation.variable_definitions or (), variables or {})
    assert not isinstance(coerced, list), coerced
    return operation, fragments, coerced


def estimated(query: str, variables: dict[str, Any] | None = None) -> int:
    return estimate(SCHEMA, *_parts(query, variables))


def actual(query: str, data: Any, variables: dict[str, Any] | None = None) -> int:
    operation, fragments, coerced = _parts(query, variables)
    return actual_cost(SCHEMA, operation, fragments, coerced, data)


@pytest.mark.parametrize(("query", "cost"), [
    # Scalars cost 0, an object 1: a product and its name.
    ('{ product(id: "p1") { id name } }', 1),
    # A list sized by `first`: 10 products, each 1 + 5 reviews x (1 + an author 1).
    ("{ topProducts(first: 10) { reviews(first: 5) { author { name } } } }", 10 * (1 + 5 * 2)),
    # `first` not given (or null): its default, 5 for topProducts.
    ("{ topProducts { id name } }", 5),
    ("query($n: Int) { topProducts(first: $n) { id } }", 5),
    # A list sized by the number of `ids`.
    ('{ products(ids: ["p1", "p2", "p3"]) { id category { name } } }', 3 * (1 + 1)),
    # A connection: `first` sizes its `edges` (sizedFields), the connection itself is 1.
    ('{ category(id: "c1") { products(first: 20) { edges { node { id } } pageInfo '
     '{ hasNextPage } } } }', 1 + (1 + 20 * (1 + 1) + 1)),
    # assumedSize: categories 100.
    ("{ categories { id name } }", 100),
    # @cost(weight: 1) on a Boolean that reads the inventory service.
    ('{ product(id: "p1") { inStock inventory { quantity } } }', 1 + 1 + 1),
    # A mutation costs 10 more; its payload's errors are assumed to be 1.
    ('mutation { cancelOrder(id: "o1") { order { id items { quantity } } errors { code } } }',
     10 + 1 + (1 + 10 * 1) + 1),
    # Skipped and introspection fields cost nothing.
    ('{ __typename a: product(id: "p1") @skip(if: true) { id } '
     "b: categories @include(if: false) { id } }", 0),
    # A fragment costs what its selections cost where it is spread.
    ("{ topProducts(first: 2) { ...P } } fragment P on Product { category { id } }",
     2 * (1 + 1)),
])
def test_estimated_cost_by_the_specification(query: str, cost: int) -> None:
    assert estimated(query) == cost


def test_the_readme_deep_query_estimate() -> None:
    from pathlib import Path
    deep = (Path(__file__).parents[2] / "bench" / "queries" / "deep.graphql").read_text()
    assert estimated(deep) == 1190


def test_the_model_is_read_from_the_served_sdl() -> None:
    model = model_of(SCHEMA)
    assert model.list_sizes["Query.topProducts"].slicing_arguments == ("first",)
    assert model.list_sizes["Category.products"].sized_fields == ("edges",)
    assert model.list_sizes["Query.categories"].assumed_size == 100
    assert model.fields == {"Product.inStock": 1}


def test_require_one_slicing_argument() -> None:
    """Exactly one slicing argument must have a value (the default: requireOneSlicingArgument)."""
    from graphql import build_schema as build

    sdl = """
        directive @listSize(assumedSize: Int, slicingArguments: [String!],
          sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
        type Query { items(first: Int, last: Int): [Item!]!
                       @listSize(slicingArguments: ["first", "last"]) }
        type Item { id: ID! }"""
    schema, model = build(sdl), CostModel.from_sdl(sdl)

    def cost(query: str) -> int:
        operation = parse(query).definitions[0]
        assert isinstance(operation, OperationDefinitionNode)
        return estimate(schema, operation, {}, {}, model)

    assert cost("{ items(last: 4) { id } }") == 4
    for query in ("{ items(first: 3, last: 4) { id } }", "{ items { id } }"):
        with pytest.raises(CostError):
            cost(query)


def test_actual_cost_counts_what_the_response_holds() -> None:
    query = "{ topProducts(first: 10) { inStock reviews(first: 5) { author { name } } } }"
    assert estimated(query) == 10 * (1 + 1 + 5 * 2)
    data = {"topProducts": [
        {"inStock": True, "reviews": [{"author": {"name": "a"}}, {"author": None}]},
        {"inStock": None, "reviews": []},
    ]}
    # 2 products (1 each), one inStock value (1; a null costs nothing), 2 reviews, 1 author.
    assert actual(query, data) == 2 + 1 + 2 + 1
    assert actual(query, None) == 0
    mutation = 'mutation { cancelOrder(id: "o1") { errors { code } } }'
    assert actual(mutation, {"cancelOrder": {"errors": []}}) == 10 + 1


def test_a_federation_routers_entities_are_sized_by_their_representations() -> None:
    """`_entities` (Apollo Federation, not in the printed SDL) counts one entity per
    representation; under a union, the actual cost follows each item's __typename."""
    from graphql import build_schema as build

    sdl = """
        directive @listSize(assumedSize: Int, slicingArguments: [String!],
          sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
        scalar _Any
        union _Entity = Product | User
        type Product { id: ID! reviews(first: Int = 2): [Review!]!
                         @listSize(slicingArguments: ["first"]) }
        type Review { id: ID! }
        type User { id: ID! name: String }
        type Query { _entities(representations: [_Any!]!): [_Entity]! }"""
    schema, model = build(sdl), CostModel.from_sdl(sdl)
    query = ("query($r: [_Any!]!) { _entities(representations: $r) { __typename "
             "... on Product { reviews { id } } ... on User { name } } }")
    operation = parse(query).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    variables = get_variable_values(schema, operation.variable_definitions or (),
                                    {"r": [{"__typename": "Product", "id": "p1"}] * 3})
    assert not isinstance(variables, list)
    # 3 entities x (1 + a product's 2 reviews + a user's name, 0): estimated per fragment.
    assert estimate(schema, operation, {}, variables, model) == 3 * (1 + 2)
    data = {"_entities": [{"__typename": "Product", "reviews": [{"id": "r1"}]},
                          {"__typename": "User", "name": "x"}, None]}
    assert actual_cost(schema, operation, {}, variables, data, model) == 2 + 1
