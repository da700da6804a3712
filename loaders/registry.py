"""Per-request DataLoaders built from the declarations in `loaders.declarations`.

A `Loaders` lives for one GraphQL request: it batches and dedupes every lookup made while
the request executes, and is dropped with it, so one caller never sees another's data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Hashable, Mapping
from functools import partial
from typing import Any

from aiodataloader import DataLoader
from opentelemetry import trace

from app.cache.entity import EntityCache, Fetch, Namespace
from app.cache.hints import RequestPolicy
from app.errors import BadUserInput, UpstreamError
from app.telemetry.metrics import LOADER_BATCH_SIZE
from app.upstream import ScopedClient, UpstreamClient
from loaders.spec import BatchSpec, Item, ListSpec

Spec = BatchSpec | ListSpec


class LockstepLoader(DataLoader[Any, Any]):
    """A DataLoader whose cache hits keep pace with its misses.

    A hit resolves at once, so the fields under a cached entity would otherwise run ahead of
    their siblings and send their own lookups in a batch of their own. Here a hit made while
    this loader has a batch queued or in flight resolves together with that batch, and the
    next level's lookups of hits and misses are queued in the same tick and batched together.
    """

    def __init__(self, fetch: Any, **kwargs: Any) -> None:
        # The batch function is this class's method, not a partial of a bound method kept on
        # the instance: such a partial is a cycle, freed only by the cycle collector.
        super().__init__(None, **kwargs)
        self._fetch = fetch
        self._in_flight = 0
        self._waiters: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]] = []

    def load(self, key: Any) -> asyncio.Future[Any]:
        future = super().load(key)
        if future.done() and (self._queue or self._in_flight):
            waiter = self.loop.create_future()
            self._waiters.append((waiter, future))
            return waiter
        return future

    async def batch_load_fn(self, keys: list[Any]) -> list[Any]:  # type: ignore[override]
        self._in_flight += 1
        try:
            return await self._fetch(keys)
        finally:
            self._in_flight -= 1
            # Set just before aiodataloader sets this batch's own futures, in the same tick:
            # the waiting fields wake together with the batch's.
            waiters, self._waiters = self._waiters, []
            for waiter, cached in waiters:
                if not waiter.done():
                    if cached.exception() is not None:
                        waiter.set_exception(cached.exception())  # type: ignore[arg-type]
                    else:
                        waiter.set_result(cached.result())


class Loaders:
    def __init__(
        self,
        client: ScopedClient | UpstreamClient,
        fanout_concurrency: int,
        cache: EntityCache | None = None,
        namespaces: Mapping[str, Namespace] | None = None,
        viewer: str | None = None,
        policy: RequestPolicy | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._client = client
        self._tracer = tracer or trace.get_tracer("gateway")
        self._deadline = client.scope.deadline if isinstance(client, ScopedClient) else None
        self._fanout = fanout_concurrency
        self._cache = cache
        self._namespaces = namespaces or {}
        self._viewer = viewer
        self._policy = policy
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

    def release(self) -> None:
        """Drop what this request loaded once its response is built. Each loader and this
        object reference each other, so without this the request's upstream data would
        live until the cycle collector's next full pass, not until the request ends."""
        for loader in self._loaders.values():
            loader.clear_all()
        self._loaders.clear()

    # -- construction -----------------------------------------------------------------------
    def _loader(self, spec: Spec) -> DataLoader[Any, Any]:
        loader = self._loaders.get(spec.name)
        if loader is None:
            if isinstance(spec, BatchSpec):
                fetch = partial(self._batch, spec)
                loader = LockstepLoader(partial(self._cached, spec, fetch),
                                        max_batch_size=spec.limit)
            else:
                fetch = partial(self._fan_out, spec, asyncio.Semaphore(self._fanout))
                loader = LockstepLoader(partial(self._cached, spec, fetch))
            self._loaders[spec.name] = loader
        return loader

    async def _cached(self, spec: Spec, fetch: Fetch, keys: list[Any]) -> list[Any]:
        """One batch: a span (in a recorded trace) around the lookup. The batch runs in the
        context of the resolver whose lookup started it, so its span is that resolver's
        child, and the upstream calls it makes are its own children."""
        LOADER_BATCH_SIZE.labels(spec.name).observe(len(keys))
        if not trace.get_current_span().is_recording():
            return await self._lookup(spec, fetch, keys)
        with self._tracer.start_as_current_span(
            f"{spec.name} batch",
            attributes={"graphql.dataloader.name": spec.name,
                        "graphql.dataloader.batch.size": len(keys)},
        ):
            return await self._lookup(spec, fetch, keys)

    async def _lookup(self, spec: Spec, fetch: Fetch, keys: list[Any]) -> list[Any]:
        """The entity cache first; the upstream for what it lacks."""
        namespace = self._namespaces.get(spec.name)
        if self._cache is None or namespace is None:
            trace.get_current_span().set_attribute("gateway.cache.misses", len(keys))
            values = await fetch(keys)
        else:
            # read_through notes its hits and misses on the batch's span.
            values = await self._cache.read_through(
                namespace, keys, fetch, viewer=self._viewer, policy=self._policy,
                deadline=self._deadline,
                service=spec.service,
            )
        if isinstance(spec, ListSpec) and spec.primes is not None:
            # Listed items fill the by-id loader, cached listings as much as fresh ones.
            for body in values:
                if isinstance(body, dict):
                    self._prime_from(spec.primes, body.get("items", ()))
        return values

    async def _batch(self, spec: BatchSpec, keys: list[Any]) -> list[Any]:
        # Ids travel comma-separated: an empty id, or one with a comma, names nothing and must
        # not make the upstream refuse its whole batch.
        valid = [k for k in keys if isinstance(k, str) and k and "," not in k]
        if not valid:
            return [[] if spec.many else None for _ in keys]
        if spec.method == "GET":
            body = await self._client.request(
                spec.service, "GET", spec.path, params={spec.param: ",".join(valid)},
                check=spec.check,
            )
        else:
            body = await self._client.request(
                spec.service, spec.method, spec.path, json={spec.param: valid},
                check=spec.check, idempotent=True,  # a read that sends its keys in a POST body
            )
        items: list[Item] = body["items"]
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
            try:
                async with semaphore:
                    body = await self._client.request(spec.service, "GET", path, params=params,
                                                      route=spec.route, check=spec.check)
            except UpstreamError as err:
                if err.status == 400 and spec.bad_request_field is not None:
                    raise BadUserInput(
                        f"`{spec.bad_request_field}` is not valid for this list",
                        field=spec.bad_request_field,
                    ) from err
                raise
            return body

        # return_exceptions: one failed listing fails only the fields that asked for it.
        return list(await asyncio.gather(*(one(k) for k in keys), return_exceptions=True))

    def _prime_from(self, spec: BatchSpec, items: Any) -> None:
        loader = self._loader(spec)
        for item in items:
            loader.prime(item[spec.key_field], item)


def namespaces(cache: EntityCache, specs: tuple[Spec, ...]) -> dict[str, Namespace]:
    """The cache namespace of every declared loader that has a cache hint with a TTL."""
    out = {}
    for spec in specs:
        if spec.cache is not None:
            namespace = cache.namespace(spec.name, spec.entity, spec.cache)
            if namespace.ttl > 0:
                out[spec.name] = namespace
    return out
