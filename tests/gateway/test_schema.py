"""The served graph honours the public contract `../shared/contract/schema.graphql`."""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLObjectType,
    GraphQLSchema,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
)

from schema import SDL_FILE, printed_sdl
from schema import build_schema as build_gateway_schema

CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "contract" / "schema.graphql"


@pytest.fixture(scope="module")
def contract() -> GraphQLSchema:
    return build_schema(CONTRACT.read_text())


@pytest.fixture(scope="module")
def served() -> GraphQLSchema:
    # The printed SDL, parsed back: what a client's tooling sees.
    return build_schema(build_gateway_schema().as_str())


PENDING: list[str] = []
PENDING_BREAKING: list[str] = []
# What the served graph adds to the contract, each optional (no client's query changes
# meaning), with the issue that added it: for the contract's owners to take up.
EXTENSIONS = [  # issue 17: addReview may be retried safely
    "OPTIONAL_INPUT_FIELD_ADDED: An optional field AddReviewInput.idempotencyKey was added.",
]


def test_every_contract_type_field_and_argument_is_served(contract: GraphQLSchema, served: GraphQLSchema) -> None:
    missing: list[str] = []
    for name, ctype in contract.type_map.items():
        if name.startswith("__"):
            continue
        stype = served.type_map.get(name)
        if stype is None:
            missing.append(f"type {name}")
            continue
        assert type(stype) is type(ctype), f"{name} is a {type(stype).__name__}"
        if isinstance(ctype, GraphQLEnumType):
            assert isinstance(stype, GraphQLEnumType)  # (checked above: narrows for mypy)
            assert set(ctype.values) <= set(stype.values), name
        if isinstance(ctype, GraphQLObjectType | GraphQLInputObjectType):
            assert isinstance(stype, GraphQLObjectType | GraphQLInputObjectType)
            for fname, cfield in ctype.fields.items():
                sfield = stype.fields.get(fname)
                if sfield is None:
                    missing.append(f"field {name}.{fname}")
                    continue
                assert str(sfield.type) == str(cfield.type), f"{name}.{fname}: {sfield.type}"
                for aname, carg in getattr(cfield, "args", {}).items():
                    sarg = sfield.args.get(aname)
                    if sarg is None:
                        missing.append(f"argument {name}.{fname}({aname})")
                        continue
                    assert str(sarg.type) == str(carg.type), f"{name}.{fname}({aname})"
                    assert sarg.default_value == carg.default_value, f"{name}.{fname}({aname})"
    # The contract grew on 2026-12-02; what it added and is not served yet is listed here with
    # the issue that serves it, and must leave this list when it lands.
    assert missing == PENDING, missing


def test_no_extra_required_arguments(contract: GraphQLSchema, served: GraphQLSchema) -> None:
    # A required argument the contract lacks would break every client query of that field.
    for name, ctype in contract.type_map.items():
        if isinstance(ctype, GraphQLObjectType) and not name.startswith("__") \
                and f"type {name}" not in PENDING:
            stype = served.type_map[name]
            assert isinstance(stype, GraphQLObjectType), name
            for fname, cfield in ctype.fields.items():
                for aname, sarg in stype.fields[fname].args.items():
                    if aname not in cfield.args:
                        assert sarg.default_value is not None or "!" not in str(sarg.type)


def _hints(schema: GraphQLSchema) -> dict[str, list[str]]:
    from graphql import print_ast

    hints: dict[str, list[str]] = {}
    for name, t in schema.type_map.items():
        node = getattr(t, "ast_node", None)
        if node is None or name.startswith("__"):
            continue
        # (@cacheControl only: @cost, @listSize and @deprecated are the served graph's own.)
        hints[name] = [print_ast(d) for d in node.directives or ()
                       if d.name.value == "cacheControl"]
        for fname, f in getattr(t, "fields", {}).items():
            if f.ast_node is not None:
                hints[f"{name}.{fname}"] = [print_ast(d) for d in f.ast_node.directives or ()
                                            if d.name.value == "cacheControl"]
    return hints


def test_cache_hints_are_the_contracts_defaults(contract: GraphQLSchema, served: GraphQLSchema) -> None:
    expected = {k: v for k, v in _hints(contract).items() if v}
    got = _hints(served)
    assert {k: got.get(k) for k in expected} == expected
    assert {k for k, v in got.items() if v} == set(expected)


def test_the_checked_in_sdl_is_the_served_schema() -> None:
    assert SDL_FILE.read_text() == printed_sdl(), "stale: run `make schema`"
    assert "@cacheControl(maxAge:" in SDL_FILE.read_text()


def test_the_served_schema_breaks_no_client_of_the_contract(contract: GraphQLSchema, served: GraphQLSchema) -> None:
    """graphql-core's own finder: nothing removed, retyped or newly required."""
    breaking = [f"{c.type.name}: {c.description}" for c in find_breaking_changes(contract, served)]
    assert breaking == PENDING_BREAKING, "\n".join(breaking)
    dangerous = [f"{c.type.name}: {c.description}"
                 for c in find_dangerous_changes(contract, served)]
    assert dangerous == EXTENSIONS, "\n".join(dangerous)
    # The finder does see a break in these schemas: drop a field the contract has.
    narrowed = build_schema(printed_sdl().replace("  topProducts(", "  _gone(", 1))
    assert any("Query.topProducts was removed" in c.description
               for c in find_breaking_changes(contract, narrowed))
