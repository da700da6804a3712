"""A loader's value and what to make of it, without a coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any


class Then:
    """A loader's future and what to make of its value, without a coroutine.

    A resolver that needs one lookup and a little work on its result (slice a list, read a
    flag) returns `Then(future, fn)` instead of being `async`: on lists of hundreds of items
    that saves a coroutine and a Task per call. (`Loaders.then` makes one, or applies `fn`
    at once when the value is at hand.) It is awaitable, so graphql-core's executor
    awaits it like any other; this executor awaits the future and applies `fn` inline.
    """

    __slots__ = ("fn", "future")

    def __init__(self, future: asyncio.Future[Any], fn: Callable[[Any], Any]) -> None:
        self.future = future
        self.fn = fn

    def __await__(self) -> Generator[Any, None, Any]:
        value = yield from self.future.__await__()
        return self.fn(value)
