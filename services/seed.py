"""Deterministic seed data shared by every reference service (and by tests that need known ids).

Everything derives from ``random.Random(seed)`` so the same (seed, scale) gives the same ids and
values in every process; no clock and no ``hash()`` are involved.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]

# Seeded timestamps lie in [2024-01-01, 2026-01-01) so anything created at run time is newer.
_EPOCH = 1_704_067_200
_SPAN = 2 * 365 * 86_400

_FIRST = ("Ada", "Alan", "Grace", "Linus", "Barbara", "Ken", "Dennis", "Margaret", "Edsger",
          "Frances", "John", "Radia", "Tim", "Donald", "Hedy", "Claude", "Katherine", "Niklaus",
          "Sophie", "Guido", "Yukihiro", "Bjarne", "Anita", "Leslie", "Shafi")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Thompson", "Ritchie",
         "Hamilton", "Dijkstra", "Allen", "McCarthy", "Perlman", "Berners-Lee", "Knuth",
         "Lamarr", "Shannon", "Johnson", "Wirth", "Wilson", "Rossum", "Matsumoto",
         "Stroustrup", "Borg", "Lamport", "Goldwasser")
_CATEGORY_WORDS = ("Books", "Garden", "Kitchen", "Audio", "Cameras", "Toys", "Outdoor", "Office",
                   "Tools", "Games", "Music", "Sports", "Health", "Beauty", "Pets", "Baby",
                   "Travel", "Lighting", "Storage", "Crafts")
_ADJECTIVES = ("Compact", "Deluxe", "Ergonomic", "Rugged", "Silent", "Smart", "Classic",
               "Portable", "Wireless", "Premium", "Eco", "Modular", "Vintage", "Turbo", "Mini")
_NOUNS = ("Lamp", "Kettle", "Backpack", "Speaker", "Notebook", "Chair", "Drill", "Camera",
          "Blender", "Headphones", "Tent", "Mug", "Keyboard", "Bicycle", "Puzzle", "Watch")
_PHRASES = ("Works as described.", "Arrived quickly.", "Great value for the price.",
            "Would buy again.", "Build quality could be better.", "Exceeded my expectations.",
            "Not what I hoped for.", "Solid and reliable.", "The colour is off.",
            "Perfect gift.", "Instructions were unclear.", "Five stars from me.")
WAREHOUSES = ("ams-1", "fra-2", "iad-1", "sfo-3")
_RATING_WEIGHTS = (5, 8, 17, 35, 35)


def iso(ts: float) -> str:
    """ISO-8601 UTC with second precision: every timestamp in the services uses this form, so
    timestamps compare correctly as strings."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def now_iso() -> str:
    return iso(time.time())


def id_num(entity_id: str) -> int:
    """The numeric part of an id such as ``p42``; -1 when there is none."""
    digits = entity_id[1:]
    return int(digits) if digits.isdigit() else -1


@dataclass
class Dataset:
    seed: int
    scale: float
    users: dict[str, Doc] = field(default_factory=dict)
    categories: dict[str, Doc] = field(default_factory=dict)
    products: dict[str, Doc] = field(default_factory=dict)
    reviews: dict[str, Doc] = field(default_factory=dict)
    stock: dict[str, Doc] = field(default_factory=dict)  # by sku
    orders: dict[str, Doc] = field(default_factory=dict)


def _count(base: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(base * scale))


def generate(seed: int = 42, scale: float = 1.0) -> Dataset:
    rng = random.Random(seed)
    ds = Dataset(seed=seed, scale=scale)
    n_users = _count(1000, scale)
    n_cats = _count(50, scale, minimum=5)
    n_products = _count(5000, scale)
    n_reviews = _count(20000, scale)
    n_orders = _count(10000, scale)

    for i in range(1, n_users + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        username = f"{first.lower()}.{last.lower()}{i}"
        ds.users[f"u{i}"] = {
            "id": f"u{i}",
            "name": f"{first} {last}",
            "username": username,
            "email": f"{username}@example.com",
            "tier": "gold" if rng.random() < 0.1 else "standard",
            "created_at": iso(_EPOCH + rng.randrange(_SPAN)),
        }

    for i in range(1, n_cats + 1):
        # The first five are roots; later ones mostly hang below a lower-numbered category.
        parent = f"c{rng.randrange(1, i)}" if i > 5 and rng.random() < 0.6 else None
        word = _CATEGORY_WORDS[(i - 1) % len(_CATEGORY_WORDS)]
        ds.categories[f"c{i}"] = {"id": f"c{i}", "name": f"{word} {i}", "parent_id": parent}

    for i in range(1, n_products + 1):
        adjective, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
        ds.products[f"p{i}"] = {
            "id": f"p{i}",
            "sku": f"SKU-{i:05d}",
            "name": f"{adjective} {noun} {i}",
            "description": f"A {adjective.lower()} {noun.lower()}. {rng.choice(_PHRASES)}",
            "price_cents": rng.randrange(199, 100_000),
            "currency": "USD",
            "category_id": f"c{rng.randrange(1, n_cats + 1)}",
            "weight_grams": rng.randrange(50, 5000),
            "rating_avg": 0.0,
            "rating_count": 0,
            "updated_at": iso(_EPOCH + rng.randrange(_SPAN)),
        }

    # About 5% of products never get a review (the last product always, when there are two).
    product_ids = list(ds.products)
    reviewable = [p for p in product_ids if rng.random() >= 0.05]
    if len(product_ids) >= 2 and product_ids[-1] in reviewable:
        reviewable.remove(product_ids[-1])
    if not reviewable:
        reviewable = product_ids[:1]
    user_ids = list(ds.users)
    # Distinct offsets make review timestamps unique (when the span allows it).
    offsets = rng.sample(range(_SPAN), n_reviews) if n_reviews <= _SPAN else [
        rng.randrange(_SPAN) for _ in range(n_reviews)]
    sums: dict[str, int] = {}
    counts: dict[str, int] = {}
    ratings = rng.choices(range(1, 6), weights=_RATING_WEIGHTS, k=n_reviews)
    for i in range(1, n_reviews + 1):
        pid = rng.choice(reviewable)
        rating = ratings[i - 1]
        ds.reviews[f"r{i}"] = {
            "id": f"r{i}",
            "product_id": pid,
            "author_id": rng.choice(user_ids),
            "rating": rating,
            "body": f"{rng.choice(_PHRASES)} {rng.choice(_PHRASES)}",
            "created_at": iso(_EPOCH + offsets[i - 1]),
        }
        sums[pid] = sums.get(pid, 0) + rating
        counts[pid] = counts.get(pid, 0) + 1
    for pid, count in counts.items():
        product = ds.products[pid]
        product["rating_count"] = count
        product["rating_avg"] = round(sums[pid] / count, 2)

    for product in ds.products.values():
        quantity = 0 if rng.random() < 0.1 else rng.randrange(1, 101)
        ds.stock[product["sku"]] = {
            "sku": product["sku"],
            "quantity": quantity,
            "in_stock": quantity > 0,
            "warehouse": rng.choice(WAREHOUSES),
            "updated_at": product["updated_at"],
        }

    for i in range(1, n_orders + 1):
        roll = rng.random()
        status = "SHIPPED" if roll < 0.4 else "CANCELLED" if roll < 0.5 else "PLACED"
        picks = rng.sample(product_ids, min(len(product_ids), rng.randrange(1, 5)))
        items = []
        for pid in picks:
            product = ds.products[pid]
            items.append({
                "product_id": pid,
                "sku": product["sku"],
                "quantity": rng.randrange(1, 4),
                "unit_price_cents": product["price_cents"],
            })
        ds.orders[f"o{i}"] = {
            "id": f"o{i}",
            "user_id": rng.choice(user_ids),
            "status": status,
            "items": items,
            "total_cents": sum(it["quantity"] * it["unit_price_cents"] for it in items),
            "currency": "USD",
            "created_at": iso(_EPOCH + rng.randrange(_SPAN)),
        }
    return ds
