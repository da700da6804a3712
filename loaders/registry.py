"""Per-request DataLoaders built from the declarations in `loaders.declarations`.

A `Loaders` lives for one GraphQL request: it batches and dedupes every lookup made while
the request executes, and is dropped with it, so one caller never sees another's data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from functools import partial
from typing import Any

from aiodataloader import DataLoader

from app.cache.entity import MISSING, EntityCache, Fetch, Namespace
from app.cache.hints import RequestPolicy
from app.cache.invalidation import Change
from app.core.observer import NULL_OBSERVER, Observer
from app.upstream.client import ScopedClient, UpstreamClient
from loaders.declarations import BY_NAME
from loaders.entities import ENTITIES, EVICTIONS
from loaders.spec import BatchSpec, Item, ListSpec
from loaders.then import Then

Spec = BatchSpec | ListSpec


class LockstepLoader(DataLoader[Any, Any]):
    """A DataLoader whose cache hits keep pace with its misses. (Under the plan executor a
    value the request already resolved is read without it, `Loaders.get`: this matters for
    graphql-core's executor and for resolvers that await `load` themselves.)

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

    def holds(self, key: Any) -> bool:
        """Whether this request asked this loader for `key` (or primed it) already: then
        the loader's answer, pending, a value or an error, is the request's."""
        return key in self._cache

    def keys(self) -> set[Any]:
        """Every key asked for or primed in this request."""
        return set(self._cache)

    def settled(self, key: Any) -> Any:
        """The value this loader resolved for `key`, else MISSING (pending or failed)."""
        future = self._cache.get(key)
        if future is None or not future.done() or future.cancelled() or future.exception():
            return MISSING
        return future.result()

    def load(self, key: Any) -> asyncio.Future[Any]:
        future = super().load(key)
        if future.done() and (self._queue or self._in_flight):
            waiter = self.loop.create_future()
            self._waiters.append((waiter, future))
            return waiter
        return future

    async def batch_load_fn(self, keys: list[Any]) -> list[Any]:
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
                    error = cached.exception()
                    if error is not None:
                        waiter.set_exception(error)
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
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self._client = client
        self._observer = observer
        self._deadline = client.scope.deadline if isinstance(client, ScopedClient) else None
        self._fanout = fanout_concurrency
        self._cache = cache
        self._namespaces = namespaces or {}
        self._viewer = viewer
        self._policy = policy
        self._loaders: dict[str, LockstepLoader] = {}
        # Values read from the entity cache's memory level without a loader (see `get`).
        self._known: dict[str, dict[Hashable, Any]] = {}
        self._hits: dict[str, int] = {}  # of them, per entity: counted once, at release
        # Set by the plan executor, which completes a whole level before it starts the next:
        # only then may a lookup answer at hand (see `_ready`).
        self.by_level = False

    # -- the API resolvers use ---------------------------------------------------------------
    def load(self, spec: Spec, key: Hashable) -> asyncio.Future[Any]:
        loader = self._loader(spec)
        self._adopt(spec, loader, key)
        return loader.load(key)

    def get(self, spec: Spec, key: Hashable) -> Any:
        """`key`'s value when it is at hand (read earlier in this request, or fresh in this
        process's entity cache), else an awaitable of it, as `load`.

        A warm deep query makes hundreds of lookups: answered at hand, each costs a few dict
        reads instead of a future, a batch and a wake-up. Resolvers return what this gives
        and the executors accept a value or an awaitable alike."""
        value = self._ready(spec, key)
        return self.load(spec, key) if value is MISSING else value

    def then(self, spec: Spec, key: Hashable, fn: Callable[[Any], Any]) -> Any:
        """`fn` of `key`'s value: applied now when the value is at hand (see `get`), else
        a `Then` that applies it once the lookup completes."""
        value = self._ready(spec, key)
        return Then(self.load(spec, key), fn) if value is MISSING else fn(value)

    def load_many(self, spec: Spec, keys: list[Any]) -> Awaitable[list[Any]]:
        loader = self._loader(spec)
        for key in keys:
            self._adopt(spec, loader, key)
        return loader.load_many(keys)

    def prime(self, spec: BatchSpec, key: Hashable, value: Any) -> None:
        """Make `value` what this request reads for `key` (a write it just made)."""
        self._known.get(spec.name, {}).pop(key, None)
        self._loader(spec).clear(key).prime(key, value)

    def _clear(self, name: str, key: Hashable | None) -> None:
        """Forget what this request read, so the next read goes upstream again."""
        known = self._known.get(name)
        if known is not None:
            if key is None:
                known.clear()
            else:
                known.pop(key, None)
        loader = self._loaders.get(name)
        if loader is None:
            return
        if key is None:
            loader.clear_all()
        else:
            loader.clear(key)

    def written(self, changes: Sequence[Change]) -> None:
        """This request wrote these entities (type, id, the item if known): forget what it
        read that they make stale (`loaders.entities`' table, as every replica's cache
        does), and read each written item as it now is."""
        for entity_type, entity_id, item in changes:
            rule = EVICTIONS.get(entity_type)
            if rule is None:
                continue
            keys, whole = rule.keys(entity_id, item)
            for name, key in keys:
                self._clear(name, key)
            for name in whole:
                self._clear(name, None)
            if item is not None and rule.own is not None:
                spec = BY_NAME[rule.own]
                assert isinstance(spec, BatchSpec)
                self.prime(spec, entity_id, item)

    def read_keys(self) -> dict[str, set[Hashable]]:
        """The keys this request read (or was handed by a listing), per loader: what its
        answer depends on, for the response cache (`app.cache.response`)."""
        out: dict[str, set[Hashable]] = {}
        for name, loader in self._loaders.items():
            out[name] = loader.keys()
        for name, known in self._known.items():
            out.setdefault(name, set()).update(known)
        return out

    def release(self) -> None:
        """Drop what this request loaded, once its answer is sent (app/http/view.py), and
        count its lookups answered at hand as cache hits. Each loader and this object
        reference each other, so without this the request's upstream data would live until
        the cycle collector's next full pass, not until the request ends."""
        for loader in self._loaders.values():
            loader.clear_all()
        self._loaders.clear()
        self._known.clear()
        hits, self._hits = self._hits, {}
        for entity, n in hits.items():
            self._observer.hits_at_hand(entity, n)

    @property
    def hits_at_hand(self) -> int:
        """Lookups answered at hand from the entity cache so far: they have no batch span,
        so the operation's span carries their number (app/telemetry/extension.py)."""
        return sum(self._hits.values())

    # -- values at hand ---------------------------------------------------------------------
    # One key reads one value in a request: its loader's answer once the loader holds the
    # key, else what `_known` holds; a key enters `_known` only while its loader does not
    # hold it, and moves into the loader (`_adopt`) before the loader is asked for it.
    def _ready(self, spec: Spec, key: Hashable) -> Any:
        """`key`'s value if it is at hand, else MISSING: what this request's loader resolved
        already, else what the request read without its loader, else a fresh entry of the
        entity cache's memory level.

        Only under the plan executor, which issues a whole level's lookups before it
        completes any of them: graphql-core's executor would run the fields under a value at
        hand at once, and their lookups would leave in a batch of their own, before their
        siblings' (see LockstepLoader)."""
        if not self.by_level:
            return MISSING
        loader = self._loaders.get(spec.name)
        if loader is not None and loader.holds(key):
            return loader.settled(key)  # MISSING while pending, or failed: the loader says
        known = self._known.get(spec.name)
        if known is not None:
            value = known.get(key, MISSING)
            if value is not MISSING:
                return value
        namespace = self._namespaces.get(spec.name)
        if self._cache is None or namespace is None:
            return MISSING
        value = self._cache.peek(namespace, key, self._viewer, self._cache.now())
        if value is MISSING:
            return MISSING
        if known is None:
            known = self._known[spec.name] = {}
        known[key] = value
        self._hits[namespace.entity] = self._hits.get(namespace.entity, 0) + 1
        if isinstance(spec, ListSpec) and spec.primes is not None and isinstance(value, dict):
            self._prime_from(spec.primes, value.get("items", ()))  # as `_lookup` does
        return value

    def _adopt(self, spec: Spec, loader: LockstepLoader, key: Hashable) -> None:
        """Hand `key`'s value read without the loader to the loader, before it is asked."""
        known = self._known.get(spec.name)
        if known is not None and key in known and not loader.holds(key):
            loader.prime(key, known.pop(key))

    def _prime_from(self, spec: BatchSpec, items: Any) -> None:
        """Listed items are what this request reads for their ids, unless it read them."""
        loader = self._loaders.get(spec.name)
        known = self._known.get(spec.name)
        if known is None:
            known = self._known[spec.name] = {}
        for item in items:
            key = item[spec.key_field]
            if key not in known and (loader is None or not loader.holds(key)):
                known[key] = item

    # -- construction -----------------------------------------------------------------------
    def _loader(self, spec: Spec) -> LockstepLoader:
        loader = self._loaders.get(spec.name)
        if loader is None:
            if isinstance(spec, BatchSpec):
                fetch = partial(fetch_batch, self._client, spec)
                loader = LockstepLoader(partial(self._cached, spec, fetch),
                                        max_batch_size=spec.limit)
            else:
                fetch = partial(self._fan_out, spec, asyncio.Semaphore(self._fanout))
                loader = LockstepLoader(partial(self._cached, spec, fetch))
            self._loaders[spec.name] = loader
        return loader

    async def _cached(self, spec: Spec, fetch: Fetch, keys: list[Any]) -> list[Any]:
        """One batch, reported to the observer (telemetry: a span that is the child of the
        resolver whose lookup started the batch, and the parent of its upstream calls)."""
        with self._observer.batch(spec.name, len(keys)):
            return await self._lookup(spec, fetch, keys)

    async def _lookup(self, spec: Spec, fetch: Fetch, keys: list[Any]) -> list[Any]:
        """The entity cache first; the upstream for what it lacks."""
        namespace = self._namespaces.get(spec.name)
        if self._cache is None or namespace is None:
            self._observer.cache_bypassed(len(keys))
            values = await fetch(keys)
        else:
            # read_through reports its hits and misses to the cache's observer.
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

    async def _fan_out(
        self, spec: ListSpec, semaphore: asyncio.Semaphore, keys: list[Any]
    ) -> list[Any]:
        async def one(key: Any) -> Any:
            path, params = spec.request(key)
            async with semaphore:
                return await self._client.request(
                    spec.service, "GET", path, params=params, route=spec.route,
                    check=spec.check, client_input=spec.bad_request_field)

        # return_exceptions: one failed listing fails only the fields that asked for it.
        return list(await asyncio.gather(*(one(k) for k in keys), return_exceptions=True))


async def fetch_batch(client: ScopedClient | UpstreamClient, spec: BatchSpec,
                      keys: list[Any]) -> list[Any]:
    """One call to `spec`'s batch endpoint for `keys`: their values in the keys' order (None
    for an id the upstream does not have; a list per key for a foreign-key lookup)."""
    # Ids travel comma-separated: an empty id, or one with a comma, names nothing and must
    # not make the upstream refuse its whole batch.
    valid = [k for k in keys if isinstance(k, str) and k and "," not in k]
    if not valid:
        return [[] if spec.many else None for _ in keys]
    if spec.method == "GET":
        body = await client.request(
            spec.service, "GET", spec.path, params={spec.param: ",".join(valid)},
            check=spec.check,
        )
    else:
        body = await client.request(
            spec.service, spec.method, spec.path, json={spec.param: valid},
            check=spec.check, read=True,  # a read that sends its keys in a POST body
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


def item_reader(client: UpstreamClient) -> Callable[[str, str], Awaitable[Item | None]]:
    """Reads a changed item for the invalidator, by its entity's `fetch` declaration
    (`loaders.entities`); an UpstreamError is the invalidator's to handle."""

    async def read(entity_type: str, entity_id: str) -> Item | None:
        spec = ENTITIES[entity_type].fetch
        if spec is None:
            return None
        item: Item | None = (await fetch_batch(client, spec, [entity_id]))[0]
        return item

    return read


def namespaces(cache: EntityCache, specs: tuple[Spec, ...]) -> dict[str, Namespace]:
    """The cache namespace of every declared loader that has a cache hint with a TTL."""
    out = {}
    for spec in specs:
        if spec.cache is not None:
            namespace = cache.namespace(spec.name, spec.entity, spec.cache)
            if namespace.ttl > 0:
                out[spec.name] = namespace
    return out
