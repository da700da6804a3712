"""Declarations of how each entity or list is fetched from an upstream.

A loader is data, not a class: the service, the route, the key, the batch limit and the
entity type it yields. `loaders.registry` turns a declaration into a per-request DataLoader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Item = dict[str, Any]


def newest_first(item: Item) -> tuple[str, str]:
    return (item["created_at"], item["id"])


@dataclass(frozen=True)
class BatchSpec:
    """An upstream batch endpoint: many keys in one call, results matched back by a field."""

    name: str
    service: str
    path: str
    param: str  # the query parameter (GET) or body field (POST) that carries the keys
    limit: int  # the upstream's batch limit: larger batches are split
    key_field: str  # the field of a returned item that equals the key it answers
    entity: str  # the GraphQL type of the items, for cache hints and telemetry
    method: str = "GET"
    many: bool = False  # foreign-key lookup: each key maps to a list of items
    sort: Callable[[Item], Any] | None = None  # order of a `many` list (reverse=True)
    cache: str | None = None  # the schema coordinate whose cache hint sets the TTL

    def check(self, body: Any) -> str | None:
        """What is off-contract in a batch's body, as far as the gateway relies on it."""
        return items_problem(self.key_field, body)


@dataclass(frozen=True)
class ListSpec:
    """An upstream listing with no batch endpoint: one call per key, fanned out."""

    name: str
    service: str
    entity: str
    request: Callable[[Any], tuple[str, Mapping[str, str]]]  # key -> (path, query params)
    primes: BatchSpec | None = None  # a by-id loader to fill with the listed items
    # The argument at fault when the upstream answers 400: the only client-controlled input
    # of a listing is its cursor, so a refusal means the client's cursor, not our bug.
    bad_request_field: str | None = None
    cache: str | None = None  # the schema coordinate whose cache hint sets the TTL
    route: str | None = None  # the path template, for telemetry, when paths carry ids
    envelope: str = "items"  # the body's list field

    def check(self, body: Any) -> str | None:
        """What is off-contract in a listing's body, as far as the gateway relies on it."""
        if self.primes is not None:
            return items_problem(self.primes.key_field, body)
        if not isinstance(body, dict) or not isinstance(body.get(self.envelope), list):
            return f"no `{self.envelope}` list"
        return None


def items_problem(key_field: str, body: Any) -> str | None:
    """What is off-contract in a body of `items`: they must be a list of objects, each with
    its key as a string, or the gateway would match them to the wrong keys."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return "no `items` list"
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get(key_field), str):
            return f"an item without a string `{key_field}`"
    return None
