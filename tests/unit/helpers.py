"""Fakes shared by the unit tests: an upstream that answers when told to; resolvers marked
for the plan executor."""

from __future__ import annotations

import asyncio
from typing import Any

from app.cache.entity import EntityCache, Namespace
from app.cache.hints import CacheHints
from app.execution.executor import DIRECT
from tests.fakeclock import FakeClock

SDL = """
type Query { product(id: ID!): Product  user(id: ID!): User }
type Product { id: ID! name: String }
type User { id: ID! name: String }
"""


class Upstream:
    """A fetch function's fake: records each call's keys, answers from `values`, raises
    `error` when set, and while `hold` is set waits for `release()` (a call in flight)."""

    def __init__(self, **values: Any) -> None:
        self.values: dict[Any, Any] = dict(values)
        self.calls: list[list[Any]] = []
        self.error: Exception | None = None
        self.hold = False
        self._gate = asyncio.Event()

    async def fetch(self, keys: list[Any]) -> list[Any]:
        self.calls.append(list(keys))
        if self.hold:
            await self._gate.wait()
        if self.error is not None:
            raise self.error
        return [self.values.get(k) for k in keys]

    def release(self) -> None:
        self.hold = False
        self._gate.set()


def make_cache(clock: FakeClock) -> EntityCache:
    return EntityCache(CacheHints(SDL), max_entries=1000, clock=clock)


def namespace(cache: EntityCache, name: str = "product", entity: str = "Product", *,
              ttl: float = 10, swr: float = 0, sie: float = 0) -> Namespace:
    cache.track([name])
    return Namespace(name, entity, ttl, swr, sie, private=False)


def direct(fn: Any) -> Any:
    """`fn` marked as schema/direct_resolvers.py marks a resolver: the plan executor takes it."""
    setattr(fn, DIRECT, True)
    return fn
