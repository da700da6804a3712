"""Seed data and settings: pure functions, no processes."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from services.config import DEFAULT_SECRET, parse
from services.seed import Dataset, generate


def test_generate_is_deterministic(seed_data: Dataset) -> None:
    again = generate(42, 1.0)
    assert again == seed_data
    assert generate(43, 1.0).users != seed_data.users


def test_counts_at_scale_one(seed_data: Dataset) -> None:
    assert len(seed_data.users) == 1000
    assert len(seed_data.categories) == 50
    assert len(seed_data.products) == 5000
    assert len(seed_data.reviews) == 20000
    assert len(seed_data.orders) == 10000
    assert len(seed_data.stock) == 5000
    assert {p["sku"] for p in seed_data.products.values()} == set(seed_data.stock)
    assert "u1" in seed_data.users and "p5000" in seed_data.products


def test_small_scale_minimums() -> None:
    ds = generate(7, 0.0001)
    assert len(ds.users) == 1 and len(ds.products) == 1 and len(ds.orders) == 1
    assert len(ds.categories) == 5
    bigger = generate(7, 2)
    assert len(bigger.products) == 10000 and len(bigger.categories) == 100


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    generate(1, 1.0)
    assert time.perf_counter() - start < 1.0


def test_rating_aggregates_match_reviews(seed_data: Dataset) -> None:
    ratings: dict[str, list[int]] = defaultdict(list)
    for review in seed_data.reviews.values():
        ratings[review["product_id"]].append(review["rating"])
    unreviewed = 0
    for pid, product in seed_data.products.items():
        mine = ratings.get(pid, [])
        assert product["rating_count"] == len(mine)
        expected = round(sum(mine) / len(mine), 2) if mine else 0.0
        assert product["rating_avg"] == expected
        unreviewed += not mine
    assert 0.02 * 5000 < unreviewed < 0.1 * 5000


def test_value_rules(seed_data: Dataset) -> None:
    users = seed_data.users.values()
    assert len({u["username"] for u in users}) == len(seed_data.users)
    gold = sum(u["tier"] == "gold" for u in users)
    assert 50 < gold < 150 and all(u["tier"] in ("gold", "standard") for u in users)
    assert all(u["created_at"].endswith("Z") for u in users)
    cats = seed_data.categories
    assert all(c["parent_id"] is None for c in list(cats.values())[:5])
    for c in cats.values():
        if c["parent_id"] is not None:
            assert int(c["parent_id"][1:]) < int(c["id"][1:])
    assert any(c["parent_id"] for c in cats.values())
    assert seed_data.products["p42"]["sku"] == "SKU-00042"
    zero = sum(s["quantity"] == 0 for s in seed_data.stock.values())
    assert 300 < zero < 700
    assert all(s["in_stock"] == (s["quantity"] > 0) for s in seed_data.stock.values())
    statuses = [o["status"] for o in seed_data.orders.values()]
    assert 3500 < statuses.count("SHIPPED") < 4500
    assert 700 < statuses.count("CANCELLED") < 1300
    for order in list(seed_data.orders.values())[:200]:
        assert 1 <= len(order["items"]) <= 4
        for item in order["items"]:
            product = seed_data.products[item["product_id"]]
            assert item["sku"] == product["sku"]
            assert item["unit_price_cents"] == product["price_cents"]
        assert order["total_cents"] == sum(
            i["quantity"] * i["unit_price_cents"] for i in order["items"])
    created = [r["created_at"] for r in seed_data.reviews.values()]
    assert len(set(created)) == len(created)
    assert all(1 <= r["rating"] <= 5 for r in seed_data.reviews.values())


def test_config_env_then_flags() -> None:
    env = {"USERS_PORT": "9101", "SEED": "7", "SCALE": "0.5", "EVENT_WEBHOOKS": "http://a,http://b",
           "FAULT_LATENCY_MS": "5", "CATALOG_FAULT_LATENCY_MS": "9", "ONLY": "users,catalog",
           "CATALOG_URL": "http://elsewhere:1"}
    config = parse(["--seed", "8", "--users-port", "9201"], env)
    assert config.ports["users"] == 9201 and config.ports["orders"] == 8004
    assert config.seed == 8 and config.scale == 0.5
    assert config.event_webhooks == ["http://a", "http://b"]
    assert config.event_secret == DEFAULT_SECRET
    assert config.faults["users"].latency_ms == 5 and config.faults["catalog"].latency_ms == 9
    assert config.only == ("users", "catalog")
    assert config.url("catalog") == "http://elsewhere:1"
    assert config.url("users") == "http://127.0.0.1:9201"
    assert parse(["--fault-rate-limit-rps", "3"], {}).faults["orders"].rate_limit_rps == 3
    assert parse([], {}).ports == {"users": 8001, "catalog": 8002, "inventory": 8003,
                                   "orders": 8004, "reviews": 8005, "recommendations": 8006,
                                   "auth": 8007}


@pytest.mark.parametrize("env", [{"EVENT_SECRET": "short"}, {"FAULT_ERROR_RATE": "2"},
                                 {"ONLY": "users,nope"}, {"FAULT_LATENCY_MS": "x"}])
def test_config_rejects_bad_settings(env: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        parse([], env)
