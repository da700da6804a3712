"""The entity cache: what loaders read before they go upstream.

`read_through` answers a batch of keys from the cache and fetches only the misses, with:
- TTLs from the schema's cache hints (a namespace is declared with a schema coordinate);
- stale-while-revalidate (a value up to `swr` seconds past its TTL is served, and refreshed
  in the background, once) and stale-if-error (a value up to `sie` seconds past its TTL is
  served when the upstream fails, and the response says so);
- request coalescing: concurrent misses of one key, across requests, cost one upstream call;
- invalidation that a fetch in flight cannot undo (see `app.cache.levels`), per key or per
  namespace (a namespace generation in every key, for lists whose members are not known).
PRIVATE namespaces are keyed per viewer. A cache that is down costs a miss, never an error.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.cache.hints import PRIVATE, CacheHints, RequestPolicy
from app.cache.levels import Epochs, MemoryLevel, RedisLevel, stored_value
from app.cache.subscription import Lease
from app.cache.versions import EventVersions
from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.observer import NULL_OBSERVER, Observer
from app.core.redisguard import RedisGuard
from app.upstream.failures import NO_VERDICT, UpstreamError, upstream_failure
from app.upstream.resilience import Deadline

log = logging.getLogger("gateway.cache")
FORMAT = 2  # bump when the stored format changes: old entries are then never read
# Evicted keys held while Redis is down, at most; past it, every namespace's generation is
# bumped when Redis is back instead (everything cached before is then unreachable).
MAX_HELD_KEYS = 10_000
Fetch = Callable[[list[Any]], Awaitable[list[Any]]]
MISSING: Any = object()  # `peek`'s answer when it has no fresh value
Event = Mapping[str, Any]  # a service's change event: type, id, op, version


@dataclass(frozen=True)
class Namespace:
    """A kind of cached data: one loader's results."""

    name: str  # the loader's name
    entity: str  # the GraphQL type, for metrics
    ttl: float
    swr: float
    sie: float
    private: bool


@dataclass(frozen=True)
class Staleness:
    swr: float = 0.0
    sie: float = 0.0



def _key_text(key: Hashable) -> str:
    return key if isinstance(key, str) else orjson.dumps(key).decode()


class EntityCache:
    def __init__(self, hints: CacheHints, *, max_entries: int, redis: RedisGuard | None = None,
                 staleness: dict[str, Staleness] | None = None, prefix: str = "gw",
                 schema_tag: str = "", observer: Observer = NULL_OBSERVER,
                 version_ttl_s: float = 3600.0, lease_s: float = 1.0,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.hints = hints
        self.observer = observer
        self.clock = clock
        self.now = clock.time  # bound once: a deep query reads the cache hundreds of times
        # Per entity type (defaults: `loaders.entities`); none for a type not named.
        self.staleness = dict(staleness or {})
        self.l1 = MemoryLevel(max_entries)
        # Versioned keys: a new format or schema never reads entries written for the old.
        key_prefix = f"{prefix}:{FORMAT}:{schema_tag}:"
        self.replica = uuid.uuid4().hex[:12]
        self.l2 = (RedisLevel(redis, key_prefix, "invalidate", self.replica, clock=clock)
                   if redis is not None else None)
        # With Redis, cached data is trusted only while the invalidation channel is known to
        # be heard (app/cache/subscription.py); without it, every eviction is local.
        self.lease = Lease(lease_s, clock) if self.l2 is not None else None
        self._generations: dict[str, int] = {}
        self._epoch = 0
        self._invalidated: OrderedDict[str, int] = OrderedDict()  # full key -> epoch
        self._forgotten = 0  # the newest epoch dropped from `_invalidated`
        self._flushed = 0  # the epoch of the last flush: everything before it is unknown
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        # The latest event version per entity, without Redis (with it, Redis holds them).
        self.versions = EventVersions(version_ttl_s, max_entries, clock)
        self._background: set[asyncio.Task[Any]] = set()
        # Evictions Redis has not heard of (it was down when they were made), by sequence:
        # (full keys, tombstone ms, namespaces). While any is held this replica reads
        # around its cache; they are sent once Redis is back (`_send_held`).
        self._held: dict[int, tuple[list[str], int, list[str]]] = {}
        self._held_keys = 0
        self._held_everything = False  # past MAX_HELD_KEYS: the keys were dropped
        self._sequence = 0
        self._sending: asyncio.Task[None] | None = None
        # Who hears the change events applied, once their evictions are done here (the
        # subscription hub): on every replica, from the eviction's own message.
        self._on_events: Callable[[list[Event]], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self.l2 is not None:
            self._raise(await self.l2.generations(sorted(self._generations)))
            self.l2.redis.when_up(self._send_soon)
            self.l2.listen(self._on_message, self._lease(), self._regained,
                           beating=self._send_soon)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self.l2 is not None:
            await self.l2.close()

    def _lease(self) -> Lease:
        assert self.lease is not None
        return self.lease

    def trusted(self) -> bool:
        """Whether cached data may be read now: no invalidation can have been missed, and
        none of this replica's own is unknown to Redis (which holds the values the others
        may have cached before it)."""
        return (self.lease is None or self.lease.valid()) and not self._held

    async def _regained(self) -> None:
        """The invalidation channel is heard again after a lapse: what was missed meanwhile
        is unknown, so forget everything held here and take Redis's generations."""
        assert self.l2 is not None
        generations = await self.l2.load_generations(sorted(self._generations))
        self._flush()
        self._raise(generations)
        self._send_soon()

    def _raise(self, generations: dict[str, int]) -> None:
        """Take these generations where they are newer: a generation never goes back (one
        this replica used while its own bumps could not reach Redis stays used)."""
        for name, value in generations.items():
            if value > self._generations.get(name, 0):
                self._generations[name] = value

    def _flush(self) -> None:
        self._epoch += 1
        self.l1.clear()
        self._inflight.clear()  # a read from now on starts its own fetch
        self._flushed = self._epoch  # fetches started before store nothing (`_fetch_and_store`)

    def track(self, names: Sequence[str]) -> None:
        """Namespaces whose generations are shared (loaded from Redis at start)."""
        for name in names:
            self._generations.setdefault(name, 0)

    def namespace(self, name: str, entity: str, coordinate: str) -> Namespace:
        stale = self.staleness.get(entity, Staleness())
        self._generations.setdefault(name, 0)
        return Namespace(name, entity, float(self.hints.ttl(coordinate)), stale.swr, stale.sie,
                         self.hints.scope(coordinate) == PRIVATE)

    def generation(self, name: str) -> int:
        return self._generations.get(name, 0)

    def generations(self) -> dict[str, int]:
        """Every namespace's generation now: what a response computed from here on read."""
        return dict(self._generations)

    def _full(self, ns: Namespace, key: Hashable, viewer: str | None) -> str:
        return self.full_key(ns, key, viewer, self._generations.get(ns.name, 0))

    @staticmethod
    def full_key(ns: Namespace, key: Hashable, viewer: str | None, generation: int) -> str:
        """`key`'s name in the cache, under `ns` at `generation`."""
        owner = f"{viewer or '-'}:" if ns.private else ""
        return f"{ns.name}:{generation}:{owner}{_key_text(key)}"

    @property
    def epoch(self) -> int:
        """How many evictions this process has applied: a read that starts now and
        `changed_since` this epoch later tells whether what it read was evicted meanwhile."""
        return self._epoch

    def _evicted_since(self, full_key: str, epoch: int) -> bool:
        return (self._invalidated.get(full_key, -1) > epoch or self._flushed > epoch
                or self._forgotten > epoch)

    def changed_since(self, full_keys: Iterable[str], epoch: int) -> bool:
        """Whether any of these keys was evicted after `epoch` (or may have been: the
        record of old evictions is bounded, and one past it counts as a change)."""
        if epoch < self._forgotten or epoch < self._flushed:
            return True
        invalidated = self._invalidated
        return any(invalidated.get(fk, -1) > epoch for fk in full_keys)

    # -- reading -----------------------------------------------------------------------------
    def peek(self, ns: Namespace, key: Hashable, viewer: str | None, now: float) -> Any:
        """`key`'s value if this process holds it fresh, else MISSING: what `read_through`
        would answer from L1 without waiting, read without a future or a batch. Stale,
        uncached and Redis-only values are left to `read_through` (revalidation, coalescing,
        stale-if-error)."""
        if ns.ttl <= 0 or (ns.private and viewer is None) or not self.trusted():
            return MISSING
        entry = self.l1.get(self._full(ns, key, viewer), now)
        if entry is None or now >= entry[0]:
            return MISSING
        return entry[1]

    async def read_through(self, ns: Namespace, keys: Sequence[Any], fetch: Fetch, *,
                           viewer: str | None = None, policy: RequestPolicy | None = None,
                           deadline: Deadline | None = None, service: str = "",
                           ) -> list[Any]:
        """`keys`' values: from the cache, else from `fetch` (which is the caller's: it
        carries the caller's deadline). A key another request is already fetching is
        waited for, but only until the caller's own `deadline` (named for `service`)."""
        if ns.ttl <= 0 or (ns.private and viewer is None) or not self.trusted():
            self.observer.cache_bypassed(len(keys))
            return await fetch(list(keys))
        now = self.now()
        full = [self._full(ns, k, viewer) for k in keys]
        results: list[Any] = [None] * len(keys)
        stale: dict[int, Any] = {}  # index -> value usable if the upstream fails
        refresh: list[int] = []
        missing: list[int] = []
        for i, fk in enumerate(full):
            entry = self.l1.get(fk, now)
            if entry is None:
                missing.append(i)
                continue
            self._classify(ns, i, entry, now, results, stale, refresh, missing)
        epoch: Epochs = {}
        if missing and self.l2 is not None:
            before = self._epoch
            values, epoch = await self.l2.read([full[i] for i in missing])
            still = []
            for i, raw in zip(missing, values, strict=True):
                raw = stored_value(raw)
                if raw is None or self._evicted_since(full[i], before):
                    # An eviction that landed while Redis answered may be of what it
                    # answered: fetched anew rather than kept in memory as current.
                    still.append(i)
                    continue
                entry = orjson.loads(raw)
                self.l1.set(full[i], entry, entry[0] + max(ns.swr, ns.sie))
                self._classify(ns, i, entry, now, results, stale, refresh, still)
            missing = still
        # `missing` includes the entries kept only as stale-if-error fallbacks.
        hits = len(keys) - len(missing) - len(refresh)
        self.observer.cache_read(ns.entity, hits, len(missing), len(refresh))
        if refresh:
            self._revalidate(ns, [keys[i] for i in refresh], [full[i] for i in refresh], fetch)
        if missing:
            await self._fill(ns, keys, full, missing, results, stale, fetch, epoch, policy,
                             deadline, service)
        return results

    def _classify(self, ns: Namespace, i: int, entry: list[Any], now: float,
                  results: list[Any], stale: dict[int, Any], refresh: list[int],
                  missing: list[int]) -> None:
        fresh_until, value = entry
        if now < fresh_until:
            results[i] = value
        elif now < fresh_until + ns.swr:
            results[i] = value
            refresh.append(i)
        else:
            if now < fresh_until + ns.sie:
                stale[i] = value
            missing.append(i)

    async def _fill(self, ns: Namespace, keys: Sequence[Any], full: list[str],
                    missing: list[int], results: list[Any], stale: dict[int, Any],
                    fetch: Fetch, epoch: Epochs, policy: RequestPolicy | None,
                    deadline: Deadline | None, service: str) -> None:
        # Each missing key's future: another request's fetch in flight, or one of ours.
        futures: dict[int, asyncio.Future[Any]] = {}
        mine: list[int] = []
        loop = asyncio.get_running_loop()
        for i in missing:
            pending = self._inflight.get(full[i])
            if pending is None:
                pending = self._inflight[full[i]] = loop.create_future()
                mine.append(i)
            futures[i] = pending
        if mine:
            started = self._epoch
            try:
                await self._fetch_and_store(ns, [keys[i] for i in mine],
                                            [full[i] for i in mine],
                                            [futures[i] for i in mine], fetch, epoch, started)
            finally:
                for i in mine:
                    self._done(full[i], futures[i])
        own = set(mine)
        again: list[int] = []  # borrowed fetches that failed for their own request's reasons
        for i in missing:
            try:
                if i in own or deadline is None:
                    results[i] = await futures[i]
                else:
                    # Another request's fetch: wait for it no longer than our own deadline.
                    results[i] = await self.clock.wait_for(asyncio.shield(futures[i]),
                                                           max(0.0, deadline.remaining()))
            except TimeoutError:
                self._failed(ns, i, upstream_failure("deadline", service), results, stale,
                             policy)
            except Exception as err:
                if i not in own and isinstance(err, UpstreamError) and err.failure in NO_VERDICT:
                    again.append(i)  # its deadline or an open breaker, not necessarily ours
                    continue
                self._failed(ns, i, err, results, stale, policy)
        if again:
            try:
                values = await fetch([keys[i] for i in again])
            except Exception as err:
                values = [err] * len(again)
            for i, value in zip(again, values, strict=True):
                if isinstance(value, Exception):
                    self._failed(ns, i, value, results, stale, policy)
                else:
                    results[i] = value

    def _failed(self, ns: Namespace, i: int, err: Exception, results: list[Any],
                stale: dict[int, Any], policy: RequestPolicy | None) -> None:
        if i not in stale:
            results[i] = err  # aiodataloader fails just this key's field
            return
        results[i] = stale[i]
        self.observer.stale_served(ns.entity)
        if policy is not None:
            policy.stale = True

    def _done(self, fk: str, future: asyncio.Future[Any]) -> None:
        """The fetch behind `future` ended: later reads of `fk` no longer join it (unless an
        invalidation already made them start a fetch of their own, which stays)."""
        if self._inflight.get(fk) is future:
            del self._inflight[fk]

    async def _fetch_and_store(self, ns: Namespace, keys: list[Any], full: list[str],
                               futures: list[asyncio.Future[Any]], fetch: Fetch, epoch: Epochs,
                               started: int) -> None:
        """Fetch `keys` and settle their `futures`; store the values unless their key was
        invalidated after `started` (the epoch when the fetch was decided on)."""
        try:
            values = await fetch(keys)
        except Exception as err:
            for future in futures:
                if not future.done():
                    future.set_exception(err)
                    future.exception()  # retrieved here: the waiters decide what to do
            return
        now = self.now()
        writes: list[tuple[str, bytes, int]] = []
        hard = ns.ttl + max(ns.swr, ns.sie)
        for fk, value, future in zip(full, values, futures, strict=True):
            if not future.done():
                if isinstance(value, Exception):
                    future.set_exception(value)
                    future.exception()
                    continue
                future.set_result(value)
            if value is None or isinstance(value, Exception):
                continue  # absent ids are not cached: they may be created any moment
            if self._evicted_since(fk, started):
                continue  # invalidated while we fetched: our value may predate the change
            entry = [now + ns.ttl, value]
            self.l1.set(fk, entry, now + hard)
            writes.append((fk, orjson.dumps(entry), int(hard * 1000)))
        if self.l2 is not None and writes:
            await self.l2.write(writes, epoch)

    def _revalidate(self, ns: Namespace, keys: list[Any], full: list[str], fetch: Fetch) -> None:
        todo = [(k, fk) for k, fk in zip(keys, full, strict=True) if fk not in self._inflight]
        if not todo:
            return
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in todo]
        for (_, fk), future in zip(todo, futures, strict=True):
            self._inflight[fk] = future
        started = self._epoch

        async def refresh() -> None:
            try:
                epoch: Epochs = {}
                if self.l2 is not None:
                    epoch = await self.l2.epochs([fk for _, fk in todo])
                await self._fetch_and_store(ns, [k for k, _ in todo], [fk for _, fk in todo],
                                            futures, fetch, epoch, started)
            finally:
                for (_, fk), future in zip(todo, futures, strict=True):
                    self._done(fk, future)

        task = asyncio.create_task(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- invalidation ------------------------------------------------------------------------
    def on_events(self, callback: Callable[[list[Event]], None]) -> None:
        """Hand every change event whose eviction is applied to `callback`, on every replica
        (`invalidate`'s `events`): after the eviction, in the order the replica applies them,
        from the invalidation channel's own message, so a reader called back reads what the
        event changed, not what it evicted. An event whose eviction is held (Redis down) is
        not handed on: its service delivers it again."""
        self._on_events = callback

    def _hand_on(self, events: Sequence[Event]) -> None:
        if not events or self._on_events is None:
            return
        try:
            self._on_events(list(events))
        except Exception:  # a listener's bug must not undo or stall an eviction
            log.exception("change event listener failed")

    async def invalidate(self, keys: Sequence[tuple[Namespace, Hashable]] = (),
                         namespaces: Sequence[str] = (), *, wait_for_replicas: bool = False,
                         deadline: Deadline | None = None, events: Sequence[Event] = ()) -> bool:
        """Evict keys and whole namespaces here, in Redis and, through it, on every replica;
        True once Redis (and so every replica) has it.

        With `wait_for_replicas` (a write the caller will see the result of), return only
        once every other replica has evicted too, or after the lease, when one that has not
        no longer trusts its cache: otherwise the caller's next read, sent to another
        replica, could beat the pub/sub message there.

        When Redis is down the eviction is held and sent once it is back; meanwhile this
        replica reads around its cache, and a caller `wait_for_replicas` waits for it until
        `deadline` (False: it was not sent by then). A change event answered False is
        redelivered by its service.

        `events`, the change events this eviction applies, travel in its message: every
        replica hands them on (`on_events`) once it has applied the eviction; this one
        once it was shared. Held, they are not handed on anywhere.
        """
        full = [self._full(ns, key, None) for ns, key in keys]
        self._forget(full)
        for ns, _ in keys:
            self.observer.evicted(ns.entity)
        for name in namespaces:
            self._generations[name] = self._generations.get(name, 0) + 1
        if self.l2 is None:
            self._hand_on(events)
            return True
        longest = max((ns.ttl + max(ns.swr, ns.sie) for ns, _ in keys), default=60)
        self._sequence += 1
        sequence = self._sequence
        if not self._held:
            try:
                await self._share(full, int(longest * 1000),
                                  {n: self._generations[n] for n in namespaces},
                                  wait_for_replicas, events)
            except Exception:  # Redis down or failing: the guard has logged it
                pass
            else:
                self._hand_on(events)
                return True
        self._hold(sequence, full, int(longest * 1000), list(namespaces))
        if wait_for_replicas:
            return await self._wait_sent(sequence, deadline)
        self._send_soon()
        return False

    async def _share(self, full: list[str], tombstone_ms: int, floors: dict[str, int],
                     wait_for_replicas: bool, events: Sequence[Event] = ()) -> None:
        """Tombstone `full` in Redis, raise the namespaces' generations to at least their
        floors, and publish the eviction (with the change `events` it applies); raises when
        Redis is down or fails."""
        assert self.l2 is not None
        if full:
            await self.l2.invalidate(full, tombstone_ms)
        generations: dict[str, int] = {}
        if floors:
            generations = await self.l2.bump(floors)
            self._raise(generations)
        ack = f"ack:{uuid.uuid4().hex}" if wait_for_replicas else None
        message: dict[str, Any] = {"from": self.replica, "keys": full,
                                   "generations": generations, "ack": ack}
        if events:
            message["events"] = list(events)
        await self.l2.publish(orjson.dumps(message), ack, self._lease().seconds)

    def _hold(self, sequence: int, full: list[str], tombstone_ms: int,
              namespaces: list[str]) -> None:
        if not self._held:
            log.warning("evictions held: redis is unreachable; reading around the cache "
                        "until they are sent")
        if self._held_everything or self._held_keys + len(full) > MAX_HELD_KEYS:
            self._held_everything = True  # every generation is bumped instead
            full = []
        self._held_keys += len(full)
        self._held[sequence] = (full, tombstone_ms, namespaces)
        self.observer.evictions_held(len(self._held))

    def _send_soon(self) -> asyncio.Task[None] | None:
        """Start sending the held evictions if Redis is up and none is being sent; the task
        that sends them, if any."""
        if self._sending is not None and not self._sending.done():
            return self._sending
        if not self._held or self.l2 is None or not self.l2.redis.up:
            return None
        self._sending = asyncio.get_running_loop().create_task(self._send_held())
        return self._sending

    async def _send_held(self) -> None:
        """Send every held eviction as one: tombstones, generations above any this replica
        used meanwhile (or all of them, past MAX_HELD_KEYS), one message, acknowledged by
        the other replicas. Then flush here, as after a lapse of the lease."""
        sequences = list(self._held)
        everything = self._held_everything
        tombstones: dict[str, int] = {}
        names: set[str] = set(self._generations) if everything else set()
        for sequence in sequences:
            full, ms, namespaces = self._held[sequence]
            for fk in full:
                tombstones[fk] = max(tombstones.get(fk, 0), ms)
            names.update(namespaces)
        try:
            await self._share(list(tombstones), max(tombstones.values(), default=1),
                              {n: self._generations.get(n, 0) + 1 for n in names}, True)
        except Exception:  # still down: the next beat or recovery tries again
            return
        for sequence in sequences:
            full, _, _ = self._held.pop(sequence)
            self._held_keys -= len(full)
        if not self._held:
            self._held_everything = False
        self._flush()
        self.observer.evictions_held(len(self._held))
        # Said once per outage: when nothing held is left (more may have come meanwhile).
        log.log(logging.INFO if self._held else logging.WARNING,
                "held evictions sent: %d evictions, %d keys%s%s", len(sequences),
                len(tombstones), ", every namespace" if everything else "",
                "" if self._held else "; the cache is trusted again")

    async def _wait_sent(self, sequence: int, deadline: Deadline | None) -> bool:
        """Wait until the held eviction `sequence` was sent, at most until `deadline` (or a
        lease without one)."""
        assert self.l2 is not None
        until = deadline.at if deadline is not None else (
            self.clock.monotonic() + self._lease().seconds)
        while sequence in self._held:
            left = until - self.clock.monotonic()
            if left <= 0:
                return False
            sending = self._send_soon()
            if sending is not None:
                try:
                    await self.clock.wait_for(asyncio.shield(sending), left)
                except TimeoutError:
                    return False
            else:  # Redis down: try again when its guard probes it
                await self.clock.sleep(min(left, max(self.l2.redis.retry_in(), 0.01)))
        return True

    def _forget(self, full: Sequence[str]) -> None:
        self._epoch += 1
        for fk in full:
            self.l1.delete(fk)
            # A fetch in flight may have read the data before the change: a read after the
            # change must not join it, but start its own (its waiters still get its answer).
            self._inflight.pop(fk, None)
            self._invalidated[fk] = self._epoch
            self._invalidated.move_to_end(fk)
        while len(self._invalidated) > self.l1.max_entries:
            _, self._forgotten = self._invalidated.popitem(last=False)

    def _on_message(self, raw: bytes) -> str | None:
        """Apply another replica's invalidation; returns the key to acknowledge it on."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if message.get("from") == self.replica:
            return None
        self._forget(message.get("keys", ()))
        self._raise(message.get("generations", {}))
        events = message.get("events")
        if isinstance(events, list):
            self._hand_on([e for e in events if isinstance(e, dict)])
        ack: str | None = message.get("ack")
        return ack

    async def latest_version(self, field: str) -> int:
        """The latest change-event version recorded for an entity (-1: none, or forgotten):
        shared through Redis when configured, else this replica's memory."""
        if self.l2 is not None:
            latest = await self.l2.latest_version(field)
            if latest is not None:
                return latest
        return self.versions.latest(field)

    async def record_version(self, field: str, version: int) -> bool:
        """Record an applied event's version; False when an equal or newer one was already."""
        if self.l2 is not None:
            recorded = await self.l2.record_version(field, version,
                                                    int(self.versions.ttl_s * 1000))
            if recorded is not None:
                return recorded
        return self.versions.record(field, version)
