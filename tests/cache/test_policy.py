"""Cache hints and the response's Cache-Control, by Apollo Server's rules."""

from __future__ import annotations

import subprocess
import sys

import pytest
from graphql import parse

from app.cache.hints import CacheHints, Policy
from app.config.settings import SettingsError
from schema import build_schema
from services.seed import Dataset
from tests.cache.conftest import CacheStack, Query
from tests.harness import ROOT

SDL = build_schema().as_str()


@pytest.fixture(scope="module")
def hints() -> CacheHints:
    return CacheHints(SDL)


def policy(hints: CacheHints, document: str) -> Policy:
    return hints.operation_policy(parse(document), None)


@pytest.mark.parametrize(("document", "expected"), [
    # A root field without a hint takes its type's: Product @cacheControl(maxAge: 300).
    ('{ product(id: "p1") { id name } }', Policy(300, "PUBLIC")),
    # A field's own hint beats its type's: topProducts is 60.
    ("{ topProducts { id } }", Policy(60, "PUBLIC")),
    # Scalar fields inherit; the smallest maxAge wins: inStock is 5.
    ('{ product(id: "p1") { id inStock } }', Policy(5, "PUBLIC")),
    # inheritMaxAge: Money takes its parent's 300, so price adds no constraint.
    ('{ product(id: "p1") { price { amount } } }', Policy(300, "PUBLIC")),
    # An object field without any hint defaults to 0: OrderItem.product has none, but
    # Product's type hint applies; OrderConnection (no hint) under orders is 0.
    ('{ me { orders { edges { node { id } } } } }', Policy(0, "PRIVATE")),
    # PRIVATE anywhere makes the response private.
    ('{ user(id: "u1") { id email } }', Policy(300, "PRIVATE")),
    ("{ me { id } }", Policy(60, "PRIVATE")),
    # A nested object's type hint: Review 60 under Product 300.
    ('{ product(id: "p1") { reviews { id author { name } } } }', Policy(60, "PUBLIC")),
    # Fragments count like fields.
    ('query { product(id: "p1") { ...F } } fragment F on Product { inStock }',
     Policy(5, "PUBLIC")),
    ("{ categories { id name } }", Policy(3600, "PUBLIC")),
])
def test_operation_policy(hints: CacheHints, document: str, expected: Policy) -> None:
    assert policy(hints, document) == expected


def test_mutations_are_never_cached(hints: CacheHints) -> None:
    doc = 'mutation { cancelOrder(id: "o1") { errors { code } } }'
    assert policy(hints, doc).header() == "no-store"


def test_overrides_by_coordinate() -> None:
    hints = CacheHints(SDL, '{"Product": {"maxAge": 30}, "Product.inStock": {"maxAge": 2}, '
                            '"Stock": {"scope": "PRIVATE"}}')
    assert policy(hints, '{ product(id: "p1") { id } }') == Policy(30, "PUBLIC")
    assert policy(hints, '{ product(id: "p1") { inStock } }') == Policy(2, "PUBLIC")
    assert policy(hints, '{ product(id: "p1") { inventory { sku } } }') == Policy(5, "PRIVATE")
    assert hints.ttl("Product") == 30 and hints.ttl("Stock") == 5


@pytest.mark.parametrize("raw", ['{"Nope": {"maxAge": 1}}', '{"Product.nope": {"maxAge": 1}}',
                                 '{"Product": {"maxAge": -1}}', '{"Product": {"scope": "X"}}'])
def test_bad_overrides_are_refused(raw: str) -> None:
    with pytest.raises(SettingsError):
        CacheHints(SDL, raw)


def test_a_bad_override_stops_the_gateway_with_a_clear_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"CACHE_HINTS": '{"Product.nope": {"maxAge": 1}}', "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "CACHE_HINTS" in proc.stderr and "Traceback" not in proc.stderr


async def test_cache_control_headers(query: Query, cstack: CacheStack, dataset: Dataset) -> None:
    gw = cstack.memory
    cases = [
        ('{ product(id: "p3100") { id name } }', None, "max-age=300, public"),
        ('{ product(id: "p3100") { id inStock } }', None, "max-age=5, public"),
        ("{ me { id } }", "u40", "max-age=60, private"),
        # An error anywhere: nothing may be cached.
        ('{ category(id: "c1") { products(after: "bad") { edges { cursor } } } }', None,
         "no-store"),
    ]
    for document, user, expected in cases:
        status, headers, _ = await query(gw, document, user=user)
        assert status == 200 and headers["Cache-Control"] == expected, document
    _, headers, _ = await query(gw, 'mutation { cancelOrder(id: "o-none") { errors { code } } }',
                                user="u40")
    assert headers["Cache-Control"] == "no-store"


async def test_a_resolver_lowers_its_hint_at_run_time(
    query: Query, cstack: CacheStack, dataset: Dataset
) -> None:
    low = next(p["id"] for p in dataset.products.values()
               if 0 < dataset.stock[p["sku"]]["quantity"] <= 5 and int(p["id"][1:]) < 4000)
    sold_out = next(p["id"] for p in dataset.products.values()
                    if dataset.stock[p["sku"]]["quantity"] == 0 and int(p["id"][1:]) < 4000)
    plenty = next(p["id"] for p in dataset.products.values()
                  if dataset.stock[p["sku"]]["quantity"] > 50 and int(p["id"][1:]) < 4000)
    doc = 'query($id: ID!) { product(id: $id) { inventory { quantity } } }'
    _, headers, _ = await query(cstack.memory, doc, {"id": low})
    assert headers["Cache-Control"] == "max-age=1, public"
    for pid in (plenty, sold_out):  # nothing left cannot sell out any faster
        _, headers, _ = await query(cstack.memory, doc, {"id": pid})
        assert headers["Cache-Control"] == "max-age=5, public"
