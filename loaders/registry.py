"""Per-request DataLoaders built from the declarations in `loaders.declarations`.

A `Loaders` lives for one GraphQL request: it batches and dedupes every lookup made while
the request executes, and is dropped with it, so one caller never sees another's data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable
from functools import partial
from typing import Any

from aiodataloader import DataLoader

from app.upstream import UpstreamClient
from loaders.spec import BatchSpec, Item, ListSpec

Spec = BatchSpec | ListSpec


class Loaders:
    def __init__(self, client: UpstreamClient, fanout_concurrency: int) -> None:
        self._client = client
        self._fanout = fanout_concurrency
        self._loaders: dict[str, DataLoader[Any, Any]] = {}

    # -- the API resolvers use ---------------------------------------------------------------
    def load(self, spec: Spec, key: Hashable) -> Awaitable[Any]:
        return self._loader(spec).load(key)

    def load_many(self, spec: Spec, keys: list[Any]) -> Awaitable[list[Any]]:
        return self._loader(spec).load_many(keys)

    def prime(self, spec: BatchSpec, key: Hashable, value: Any) -> None:
        """Make `value` what this request reads for `key` (a write it just made)."""
        self._loader(spec).clear(key).prime(key, value)

    def clear(self, spec: Spec, key: Hashable | None = None) -> None:
        """Forget what this request read, so the next read goes upstream again."""
        loader = self._loaders.get(spec.name)
        if loader is None:
            return
        if key is None:
            loader.clear_all()
        else:
            loader.clear(key)

    # -- construction -----------------------------------------------------------------------
    def _loader(self, spec: Spec) -> DataLoader[Any, Any]:
        loader = self._loaders.get(spec.name)
        if loader is None:
            if isinstance(spec, BatchSpec):
                loader = DataLoader(partial(self._batch, spec), max_batch_size=spec.limit)
            else:
                semaphore = asyncio.Semaphore(self._fanout)
                loader = DataLoader(partial(self._fan_out, spec, semaphore))
            self._loaders[spec.name] = loader
        return loader

    async def _batch(self, spec: BatchSpec, keys: list[Any]) -> list[Any]:
        if spec.method == "GET":
            body = await self._client.request(
                spec.service, "GET", spec.path, params={spec.param: ",".join(keys)}
            )
        else:
            body = await self._client.request(
                spec.service, spec.method, spec.path, json={spec.param: keys}
            )
        items: list[Item] = body["items"]
        self._prime_from(spec.primes, items)
        if not spec.many:
            found = {item[spec.key_field]: item for item in items}
            # Missing ids are simply absent upstream: they become None, never a shifted list.
            return [found.get(k) for k in keys]
        groups: dict[Any, list[Item]] = {k: [] for k in keys}
        for item in items:
            group = groups.get(item[spec.key_field])
            if group is not None:
                group.append(item)
        if spec.sort is not None:
            for group in groups.values():
                group.sort(key=spec.sort, reverse=True)
        return [groups[k] for k in keys]

    async def _fan_out(
        self, spec: ListSpec, semaphore: asyncio.Semaphore, keys: list[Any]
    ) -> list[Any]:
        async def one(key: Any) -> Any:
            path, params = spec.request(key)
            async with semaphore:
                body = await self._client.request(spec.service, "GET", path, params=params)
            self._prime_from(spec.primes, body.get("items", ()))
            return body

        # return_exceptions: one failed listing fails only the fields that asked for it.
        return list(await asyncio.gather(*(one(k) for k in keys), return_exceptions=True))

    def _prime_from(self, spec: BatchSpec | None, items: Any) -> None:
        if spec is None:
            return
        loader = self._loader(spec)
        for item in items:
            loader.prime(item[spec.key_field], item)
