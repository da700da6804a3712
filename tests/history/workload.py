"""A recorded run for the history checker (`tests.history.checker`): two gateway replicas
(separate processes) sharing a private Redis, the six reference services, concurrent
writers and readers, and faults.

Keys and their writers (one writer per key, so its writes are its versions in order):
- `stock:A` of each caller's order product: the caller's `placeOrder` of one unit through a
  replica (retried with its idempotency key until answered), version = units ordered;
- `stock:B` of each caller's cancel product: the caller's `cancelOrder` of one of the orders
  placed for it before the run, version = units released;
- `reviews:C` and `count:C` of each caller's review product: the caller's `addReview`
  (the newest review's body names its version; `reviewCount` counts them);
- `name:N`: a renamer's `PATCH /products/N` at the catalog, the name naming its version;
- `stock:R`: a restocker's `POST /inventory/{sku}/restock` of one unit at the inventory.
After each mutation its caller reads the product back (read-your-writes), on the other
replica `read_back_elsewhere` of the time; readers read the products on their own replica
all along.

The services' change events go to a relay of ours, which forwards the signed bodies as they
are to both replicas, each after a random delay, sometimes twice (so out of order), and
drops a few altogether (a lost event: only the TTL bounds those). Every service's latency is
redrawn every `latency_every_s`; at each of `kills` (seconds into the run) every pub/sub
connection of the private Redis is killed (`CLIENT KILL TYPE pubsub`), at each of `stalls`
Redis is stopped for `stall_ms` (SIGSTOP); with `redis_delay_ms` the replicas reach Redis
through a proxy that delays its replies. What the replicas log about Redis and their
invalidation channel joins the history as incidents.

`run()` returns the history, the bounds the guarantees give for its keys (from the schema's
hints and the staleness table, with the settings the replicas ran with), and anything that
makes the history unusable (`problems`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from app.cache.entity import Staleness
from app.cache.hints import CacheHints
from app.config.settings import Settings
from loaders.entities import STALENESS
from tests.harness import (
    SERVICE_NAMES,
    Gateway,
    RedisServer,
    Services,
    free_port,
    start_gateway,
    start_redis,
    start_services,
)
from tests.history.checker import (
    UNKNOWN,
    Bounds,
    Delivery,
    EventId,
    History,
    Nemesis,
    Op,
    Read,
    Write,
)

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = ("a", "b")
READ = ("query Read($id: ID!) { product(id: $id) { id name reviewCount "
        "inventory { quantity } reviews(first: 1) { body } } }")
PLACE_ORDER = ("mutation Place($input: PlaceOrderInput!) { placeOrder(input: $input) { "
               "order { id } errors { code message } } }")
CANCEL_ORDER = ("mutation Cancel($id: ID!) { cancelOrder(id: $id) { order { id status } "
                "errors { code message } } }")
ADD_REVIEW = ("mutation Review($input: AddReviewInput!) { addReview(input: $input) { "
              "review { id } errors { code message } } }")
PUBSUB_KILL = "kill pub/sub connections"
STALL = "stall redis"


@dataclass
class Config:
    seconds: float = 4.0  # how long the writers and readers run
    callers: int = 3  # gateway writers (each owns an order, a cancel and a review product)
    renamers: int = 2  # direct catalog writers
    restockers: int = 1  # direct inventory writers
    readers: int = 2  # per replica
    cancellable: int = 40  # orders placed per caller before the run, for cancelOrder
    read_think_ms: float = 10.0  # a reader waits up to this between reads
    read_back_elsewhere: float = 0.5  # how often a caller reads its write on the other replica
    # A writer waits up to this between writes: a key stays at each version a while, so
    # that a replica left serving an older one is seen doing so.
    write_think_ms: float = 300.0
    long_pause_rate: float = 0.05  # a writer's wait is a long one this often
    long_pause_ms: float = 3000.0
    latency_ms: float = 30.0  # injected upstream latency: up to this (half fixed, half jitter)
    latency_every_s: float = 0.5
    event_delay_ms: float = 600.0  # each delivery waits up to this
    duplicate_rate: float = 0.2  # deliveries sent twice
    drop_rate: float = 0.05  # events sent to no replica
    kills: tuple[float, ...] = ()  # when to kill every pub/sub connection, in seconds
    stalls: tuple[float, ...] = ()  # when to stop Redis (SIGSTOP) for `stall_ms`, in seconds
    stall_ms: float = 300.0
    redis_delay_ms: float = 0.0  # Redis's replies (not pub/sub messages) wait up to this
    response_cache: bool = True
    cache_hints: str = ""  # CACHE_HINTS of the replicas
    cache_stale: str = ""  # CACHE_STALE of the replicas
    seed: int = 1
    gateway_root: Path | None = None  # run the replicas from this checkout (an earlier one)
    gateway_env: dict[str, str] = field(default_factory=dict)  # more settings of the replicas


@dataclass
class Run:
    history: History
    bounds: Bounds
    problems: list[str] = field(default_factory=list)  # the history cannot be checked
    logs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Roles:
    """The products of each kind of writer, and every product's sku."""

    order: list[str]  # per caller: placeOrder
    cancel: list[str]  # per caller: cancelOrder
    review: list[str]  # per caller: addReview
    rename: list[str]  # per renamer
    restock: list[str]  # per restocker
    sku: dict[str, str]


@dataclass
class Key:
    """A key: what it is, whose it is, and how a value read maps to its version."""

    name: str
    product: str
    entity: EventId  # (type, id, base version): the entity version before the run
    to_version: Callable[[Any], int]
    written: int = 0  # versions attempted so far
    frozen: bool = False  # a write's outcome is unknown: no more writes (versions unknown)


class Recorder:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self.ids)

    def add(self, op: Op) -> None:
        self.ops.append(op)


class Relay:
    """Receives the services' events and forwards each, unchanged and still signed, to the
    replicas: each after its own random delay, some twice, a few to nobody."""

    def __init__(self, config: Config, recorder: Recorder, rng: random.Random) -> None:
        self.config = config
        self.recorder = recorder
        self.rng = rng
        self.targets: dict[str, str] = {}
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.recording = False
        # Before the run, a few deliveries at a time: the setup's burst of events would
        # otherwise take more Redis connections than a replica's pool has.
        self.setup_lanes = asyncio.Semaphore(4)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {"Content-Type": "application/json",
                   "X-Signature": request.headers.get("X-Signature", "")}
        event = orjson.loads(body)
        self.received.append((time.monotonic(), event))
        identity = (event["type"], event["id"], event["version"])
        if self.recording and self.rng.random() < self.config.drop_rate:
            now = time.monotonic()
            self.recorder.add(Nemesis(self.recorder.next_id(), "drop event", now, now,
                                      f"{identity[0]} {identity[1]} v{identity[2]}",
                                      identity))
            return web.Response(status=204)
        delay = self.config.event_delay_ms / 1000 if self.recording else 0.0
        for replica in self.targets:
            self._send(identity, replica, body, headers, self.rng.uniform(0, delay))
            if self.recording and self.rng.random() < self.config.duplicate_rate:
                self._send(identity, replica, body, headers, self.rng.uniform(0, 2 * delay))
        return web.Response(status=204)

    def _send(self, identity: EventId, replica: str, body: bytes, headers: dict[str, str],
              delay: float) -> None:
        task = asyncio.get_running_loop().create_task(
            self._deliver(identity, replica, body, headers, delay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, identity: EventId, replica: str, body: bytes,
                       headers: dict[str, str], delay: float) -> None:
        assert self.session is not None
        await asyncio.sleep(delay)
        if self.recording:
            await self._attempts(identity, replica, body, headers)
        else:
            async with self.setup_lanes:
                await self._attempts(identity, replica, body, headers)

    async def _attempts(self, identity: EventId, replica: str, body: bytes,
                        headers: dict[str, str]) -> None:
        assert self.session is not None
        for _ in range(5):  # at least once: a failed delivery is tried again
            start = time.monotonic()
            status = 0
            try:
                async with self.session.post(self.targets[replica] + "/events", data=body,
                                             headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                pass
            if self.recording:  # (the setup's deliveries are not part of the history)
                self.recorder.add(Delivery(self.recorder.next_id(), identity, replica, start,
                                           time.monotonic(), status))
            if 200 <= status < 300:
                return
            await asyncio.sleep(0.2)

    async def drain(self, within: float) -> None:
        """Wait for the deliveries under way, for at most `within` seconds."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=within)


class DelayProxy:
    """A TCP proxy in front of Redis that delays its replies by a random time per chunk (up
    to `delay_s`, order kept on each connection), but not its pub/sub messages: a slow and
    uneven network between the replicas and Redis, where an invalidation published after a
    read was answered may arrive before the answer. It runs in a thread of its own, so that
    the workload's event loop does not pace it."""

    def __init__(self, port: int, delay_s: float, seed: int) -> None:
        self.target = port
        self.delay_s = delay_s
        self.rng = random.Random(seed)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)

    async def _connection(self, client_r: asyncio.StreamReader,
                          client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.close()
            return
        # A connection that subscribes (its commands say so) carries messages: not delayed.
        state = {"delay": self.delay_s}
        await asyncio.gather(self._pipe(client_r, server_w, state, watch=True),
                             self._pipe(server_r, client_w, state),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    state: dict[str, float], watch: bool = False) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(due - time.monotonic())
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        due = 0.0
        try:
            while data := await reader.read(65536):
                if watch:
                    if b"SUBSCRIBE" in data.upper():
                        state["delay"] = 0.0
                    queue.put_nowait((0.0, data))
                    continue
                # Each chunk waits its own random time, but never overtakes the one before.
                due = max(due, time.monotonic() + self.rng.uniform(0, state["delay"]))
                queue.put_nowait((due, data))
            queue.put_nowait((due, b""))
            await sender
        finally:
            sender.cancel()
            writer.close()  # one side closed (or killed): so is the other

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Workload:
    def __init__(self, config: Config, tmp: Path) -> None:
        self.config = config
        self.tmp = tmp
        self.rng = random.Random(config.seed)
        self.recorder = Recorder()
        self.relay = Relay(config, self.recorder, random.Random(config.seed + 1))
        self.tag = f"h{uuid.uuid4().hex[:6]}"
        self.keys: dict[str, Key] = {}
        self.problems: list[str] = []
        self.redis: RedisServer | None = None
        self.proxy: DelayProxy | None = None
        self.services: Services | None = None
        self.gateways: dict[str, Gateway] = {}
        self.session: aiohttp.ClientSession | None = None
        self.until = 0.0
        self.cancellable: dict[str, list[str]] = {}
        self.roles = Roles([], [], [], [], [], {})

    # -- processes ---------------------------------------------------------------------------
    async def start(self) -> None:
        tmp = self.tmp
        self.redis = await asyncio.to_thread(start_redis, tmp / "redis")
        redis_url = self.redis.url
        if self.config.redis_delay_ms:
            self.proxy = DelayProxy(self.redis.port, self.config.redis_delay_ms / 1000,
                                    self.config.seed + 2)
            self.proxy.start()
            redis_url = f"redis://127.0.0.1:{self.proxy.port}/0"
        relay_app = web.Application()
        relay_app.router.add_post("/events", self.relay.receive)
        self.runner = web.AppRunner(relay_app, access_log=None)
        await self.runner.setup()
        relay_port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", relay_port).start()
        self.services = await asyncio.to_thread(
            start_services, tmp, webhooks=[f"http://127.0.0.1:{relay_port}/events"])
        env = {"REDIS_URL": redis_url, "REDIS_PREFIX": self.tag, "LOG_LEVEL": "warning",
               "RESPONSE_CACHE": str(self.config.response_cache).lower(),
               "CACHE_HINTS": self.config.cache_hints, "CACHE_STALE": self.config.cache_stale,
               **self.config.gateway_env}
        for name in REPLICAS:
            self.gateways[name] = await asyncio.to_thread(
                start_gateway, tmp, self.services, env=env, root=self.config.gateway_root)
            self.relay.targets[name] = self.gateways[name].url
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10),
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=2))
        self.relay.session = self.session

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if getattr(self, "runner", None) is not None:
            await self.runner.cleanup()
        for process in (*self.gateways.values(), self.services, self.proxy, self.redis):
            if process is not None:
                await asyncio.to_thread(process.stop)

    def logs(self) -> dict[str, Path]:
        found = {name: g.process.log_path for name, g in self.gateways.items()}
        if self.services is not None:
            found["services"] = self.services.process.log_path
        return found

    # -- HTTP --------------------------------------------------------------------------------
    async def call(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.request(method, url, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    def service(self, name: str) -> str:
        assert self.services is not None
        return self.services.url(name)

    async def graphql(self, replica: str, query: str, variables: dict[str, Any],
                      user: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
        assert self.session is not None
        headers = {"X-User-Id": user} if user else {}
        async with self.session.post(self.gateways[replica].url + "/graphql", headers=headers,
                                     json={"query": query, "variables": variables}) as resp:
            return await resp.json(content_type=None), dict(resp.headers)

    # -- setup -------------------------------------------------------------------------------
    async def setup(self) -> None:
        """Pick products, top up their stock, place the orders to cancel, and note the value
        and entity version of every key before the run."""
        cfg = self.config
        wanted = 3 * cfg.callers + cfg.renamers + cfg.restockers
        candidates = [f"p{n}" for n in range(1000, 1000 + 40 * wanted)]
        products: dict[str, dict[str, Any]] = {}
        for i in range(0, len(candidates), 100):
            _, got = await self.call("GET", self.service("catalog") + "/products?ids="
                                     + ",".join(candidates[i:i + 100]))
            products.update({p["id"]: p for p in got["items"]})
        reviewed: set[str] = set()
        for i in range(0, len(candidates), 100):
            _, got = await self.call("GET", self.service("reviews") + "/reviews?product_ids="
                                     + ",".join(candidates[i:i + 100]))
            reviewed.update(r["product_id"] for r in got["items"])
        # Review products have no review yet and a count of 0: each review is then a version.
        unreviewed = [p for p in candidates if p in products and p not in reviewed
                      and products[p]["rating_count"] == 0]
        others = [p for p in candidates if p in products and p not in unreviewed]
        if len(unreviewed) < cfg.callers or len(others) < wanted:
            raise RuntimeError("not enough products for the workload")
        review_products = unreviewed[:cfg.callers]
        rest = iter(others)
        order_products = [next(rest) for _ in range(cfg.callers)]
        cancel_products = [next(rest) for _ in range(cfg.callers)]
        rename_products = [next(rest) for _ in range(cfg.renamers)]
        restock_products = [next(rest) for _ in range(cfg.restockers)]
        sku = {p: products[p]["sku"] for p in products}

        # Stock to order from, and to place the orders to cancel with: one restock each.
        for pid in (*order_products, *cancel_products):
            status, _ = await self.call("POST", self.service("inventory")
                                        + f"/inventory/{sku[pid]}/restock", {"quantity": 10_000})
            assert status == 200
        async def place(i: int, pid: str) -> None:
            orders = []
            for n in range(cfg.cancellable):
                status, order = await self.call_orders(self.user(i), pid,
                                                       f"{self.tag}-setup-{i}-{n}")
                assert status == 201, order
                orders.append(order["id"])
            self.cancellable[f"stock:{pid}"] = orders

        await asyncio.gather(*(place(i, pid) for i, pid in enumerate(cancel_products)))
        all_products = [*order_products, *cancel_products, *review_products, *rename_products,
                        *restock_products]
        _, stock = await self.call("POST", self.service("inventory") + "/inventory/query",
                                   {"skus": [sku[p] for p in all_products]})
        quantity = {s["sku"]: s["quantity"] for s in stock["items"]}

        # Entity versions before the run: seeded entities are at 1, each commit adds one.
        for pid in order_products:
            self._key(f"stock:{pid}", pid, ("Stock", sku[pid], 2),
                      counted(quantity[sku[pid]], -1))
        for pid in cancel_products:
            self._key(f"stock:{pid}", pid, ("Stock", sku[pid], 2 + cfg.cancellable),
                      counted(quantity[sku[pid]], 1))
        for pid in restock_products:
            self._key(f"stock:{pid}", pid, ("Stock", sku[pid], 1),
                      counted(quantity[sku[pid]], 1))
        for pid in review_products:
            # The newest review's body names its version; "" is no review (version 0).
            self._key(f"reviews:{pid}", pid, ("Review", pid, 0),
                      numbered(f"{self.tag}:{pid}:", ""))
            self._key(f"count:{pid}", pid, ("Product", pid, 1), counted(0, 1))
        for pid in rename_products:
            self._key(f"name:{pid}", pid, ("Product", pid, 1),
                      numbered(f"{self.tag} {pid} #", products[pid]["name"]))
        self.roles = Roles(order_products, cancel_products, review_products, rename_products,
                           restock_products, sku)
        await self._check_setup_events()

    async def call_orders(self, user: str, pid: str, key: str) -> tuple[int, Any]:
        assert self.session is not None
        async with self.session.post(self.service("orders") + "/orders",
                                     json={"user_id": user,
                                           "items": [{"product_id": pid, "quantity": 1}]},
                                     headers={"Idempotency-Key": key}) as resp:
            return resp.status, await resp.json(content_type=None)

    def _key(self, name: str, product: str, entity: EventId,
             to_version: Callable[[Any], int]) -> None:
        self.keys[name] = Key(name, product, entity, to_version)

    async def _check_setup_events(self, within: float = 10.0) -> None:
        """The run's version arithmetic assumes the setup's commits: wait until the relay has
        the events they sent (each entity at its base version), or say which is not."""
        deadline = time.monotonic() + within
        while True:
            seen: dict[tuple[str, str], int] = {}
            for _, event in self.relay.received:
                entity = (event["type"], event["id"])
                seen[entity] = max(seen.get(entity, 0), event["version"])
            wrong = [f"{key.name}: {kind} {ident} is at version {seen.get((kind, ident), 1)} "
                     f"before the run, not {base}"
                     for key in self.keys.values() for kind, ident, base in [key.entity]
                     if kind != "Review" and seen.get((kind, ident), 1) != base]
            if not wrong or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        self.problems += wrong
        await self.relay.drain(within)

    def user(self, i: int) -> str:
        return f"u{101 + i}"

    # -- the run -----------------------------------------------------------------------------
    async def run(self) -> History:
        cfg = self.config
        self.relay.recording = True
        started = time.monotonic()
        if cfg.redis_delay_ms:
            self.recorder.add(Nemesis(self.recorder.next_id(), "redis replies delayed",
                                      started, started, f"up to {cfg.redis_delay_ms:g} ms"))
        self.until = started + cfg.seconds
        workers: list[Awaitable[None]] = []
        for replica in REPLICAS:
            workers += [self.reader(f"r{replica}{i}", replica) for i in range(cfg.readers)]
        workers += [self.caller(i) for i in range(cfg.callers)]
        workers += [self.renamer(pid) for pid in self.roles.rename]
        workers += [self.restocker(pid) for pid in self.roles.restock]
        workers.append(self.latency())
        workers += [self.kill_pubsub(started + at) for at in cfg.kills]
        workers += [self.stall_redis(started + at) for at in cfg.stalls]
        wall = time.time() - time.monotonic()  # to place the replicas' log lines
        await asyncio.gather(*workers)
        await self.clear_faults()
        await self.relay.drain(2 * cfg.event_delay_ms / 1000 + 5)
        self.incidents(wall, started)
        history = History(self.recorder.ops)
        history.implies = await self.implications()
        return history

    def incidents(self, wall: float, since: float) -> None:
        """What the replicas logged about Redis and the invalidation channel (a lost or
        regained channel, Redis unavailable), placed in the history as incidents."""
        for name, gateway in self.gateways.items():
            for line in gateway.process.log().splitlines():
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                message = str(entry.get("message", ""))
                if entry.get("logger") != "gateway.cache" or entry.get("level") != "warning":
                    continue
                at = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
                at -= wall
                if at >= since:
                    self.recorder.add(Nemesis(self.recorder.next_id(), f"replica {name} logged",
                                              at, at, message))

    def running(self) -> bool:
        return time.monotonic() < self.until

    async def think(self, ms: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, ms) / 1000)

    async def pause(self) -> None:
        """A writer's wait between writes: now and then a long one, so that a key whose last
        event was lost stays unchanged past its TTL (only the staleness bound holds then)."""
        cfg = self.config
        if self.rng.random() < cfg.long_pause_rate:
            await asyncio.sleep(self.rng.uniform(0, cfg.long_pause_ms) / 1000)
        else:
            await self.think(cfg.write_think_ms)

    async def read(self, caller: str, replica: str, pid: str, user: str | None = None) -> None:
        rid = self.recorder.next_id()
        start = time.monotonic()
        try:
            body, headers = await self.graphql(replica, READ, {"id": pid}, user)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            self.recorder.add(Read(rid, caller, replica, start, time.monotonic(), {}, ok=False,
                                   raw={"error": repr(err)}))
            return
        end = time.monotonic()
        product = (body.get("data") or {}).get("product") or {}
        raw: dict[str, Any] = {}
        reviews = product.get("reviews")
        inventory = product.get("inventory")
        fields = {"name": product.get("name"), "count": product.get("reviewCount"),
                  "stock": inventory.get("quantity") if inventory else None,
                  # The newest review's body; "" for none (a failed list is null).
                  "reviews": None if reviews is None else reviews[0]["body"] if reviews else ""}
        for kind, value in fields.items():
            key = self.keys.get(f"{kind}:{pid}")
            if key is None or value is None:
                continue
            raw[key.name] = value
        observed = {k: self.keys[k].to_version(v) for k, v in raw.items()}
        stale = bool(((body.get("extensions") or {}).get("cache") or {}).get("stale"))
        held = float(headers["Age"]) + 1 if "Age" in headers else 0.0
        self.recorder.add(Read(rid, caller, replica, start, end, observed,
                               ok=not body.get("errors"), stale=stale, held=held, raw=raw))

    async def reader(self, name: str, replica: str) -> None:
        products = sorted({k.product for k in self.keys.values()})
        while self.running():
            await self.read(name, replica, self.rng.choice(products))
            await self.think(self.config.read_think_ms)

    async def caller(self, i: int) -> None:
        name = f"w{i}"
        user = self.user(i)
        order_key = self.keys[f"stock:{self.roles.order[i]}"]
        cancel_key = self.keys[f"stock:{self.roles.cancel[i]}"]
        review_pid = self.roles.review[i]
        kinds = ["order", "cancel", "review"]
        while self.running():
            kind = self.rng.choice(kinds)
            replica = self.rng.choice(REPLICAS)
            if kind == "order" and not order_key.frozen:
                await self.place_order(name, user, replica, order_key)
                pid = order_key.product
            elif kind == "cancel" and not cancel_key.frozen and self.cancellable[cancel_key.name]:
                await self.cancel_order(name, user, replica, cancel_key)
                pid = cancel_key.product
            elif kind == "review" and not self.keys[f"reviews:{review_pid}"].frozen:
                await self.add_review(name, user, replica, review_pid)
                pid = review_pid
            else:
                await self.pause()
                continue
            # Read-your-writes: its next read, on either replica.
            elsewhere = self.rng.random() < self.config.read_back_elsewhere
            await self.read(name, REPLICAS[(REPLICAS.index(replica) + elsewhere) % 2], pid,
                            user)
            await self.pause()

    async def mutation(self, replica: str, query: str, variables: dict[str, Any], user: str,
                       field_name: str) -> tuple[bool | None, Any]:
        """True and the payload when done, False when refused, None when unknown."""
        try:
            body, _ = await self.graphql(replica, query, variables, user)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None, None
        payload = (body.get("data") or {}).get(field_name)
        if body.get("errors") or payload is None:
            return None, body
        if payload["errors"]:
            return False, payload
        return True, payload

    def _write(self, key: Key, caller: str, replica: str | None, start: float,
               ok: bool | None, what: str) -> None:
        self.recorder.add(Write(self.recorder.next_id(), caller, key.name, key.written, start,
                                time.monotonic(), ok, replica, what))
        if ok is not True:
            key.frozen = True  # its outcome, or the versions after it, are unknown

    async def place_order(self, caller: str, user: str, replica: str, key: Key) -> None:
        key.written += 1
        idempotency = f"{self.tag}-{caller}-{key.written}"
        variables = {"input": {"items": [{"productId": key.product, "quantity": 1}],
                               "idempotencyKey": idempotency}}
        start = time.monotonic()
        ok: bool | None = None
        for _ in range(5):  # the same key: placed once however often it is sent
            ok, _ = await self.mutation(replica, PLACE_ORDER, variables, user, "placeOrder")
            if ok is not None:
                break
        self._write(key, caller, replica, start, ok, "placeOrder")

    async def cancel_order(self, caller: str, user: str, replica: str, key: Key) -> None:
        key.written += 1
        order_id = self.cancellable[key.name].pop()
        start = time.monotonic()
        ok: bool | None = None
        for _ in range(5):  # cancelling a cancelled order changes nothing
            ok, _ = await self.mutation(replica, CANCEL_ORDER, {"id": order_id}, user,
                                        "cancelOrder")
            if ok is not None:
                break
        self._write(key, caller, replica, start, ok, "cancelOrder")

    async def add_review(self, caller: str, user: str, replica: str, pid: str) -> None:
        reviews, count = self.keys[f"reviews:{pid}"], self.keys[f"count:{pid}"]
        reviews.written += 1
        count.written += 1
        variables = {"input": {"productId": pid, "rating": self.rng.randint(1, 5),
                               "body": f"{self.tag}:{pid}:{reviews.written}"}}
        start = time.monotonic()
        ok, _ = await self.mutation(replica, ADD_REVIEW, variables, user, "addReview")
        # Never retried: a review sent twice is two reviews.
        self._write(reviews, caller, replica, start, ok, "addReview")
        self._write(count, caller, replica, start, ok, "addReview")

    async def renamer(self, pid: str) -> None:
        key = self.keys[f"name:{pid}"]
        while self.running() and not key.frozen:
            key.written += 1
            start = time.monotonic()
            try:
                status, _ = await self.call("PATCH", self.service("catalog") + f"/products/{pid}",
                                            {"name": f"{self.tag} {pid} #{key.written}"})
                ok: bool | None = True if status == 200 else (False if status < 500 else None)
            except (aiohttp.ClientError, TimeoutError):
                ok = None
            self._write(key, "catalog", None, start, ok, "patchName")
            await self.pause()

    async def restocker(self, pid: str) -> None:
        key = self.keys[f"stock:{pid}"]
        sku = self.roles.sku[pid]
        while self.running() and not key.frozen:
            key.written += 1
            start = time.monotonic()
            try:
                status, _ = await self.call("POST", self.service("inventory")
                                            + f"/inventory/{sku}/restock", {"quantity": 1})
                ok: bool | None = True if status == 200 else (False if status < 500 else None)
            except (aiohttp.ClientError, TimeoutError):
                ok = None
            self._write(key, "inventory", None, start, ok, "restock")
            await self.pause()

    # -- faults ------------------------------------------------------------------------------
    async def latency(self) -> None:
        cfg = self.config
        while self.running():
            start = time.monotonic()
            chosen = {}
            for name in SERVICE_NAMES:
                fixed = self.rng.uniform(0, cfg.latency_ms / 2)
                jitter = self.rng.uniform(0, cfg.latency_ms / 2)
                chosen[name] = f"{fixed:.0f}+{jitter:.0f}"
                await self.call("PUT", self.service(name) + "/_faults",
                                {"latency_ms": fixed, "jitter_ms": jitter})
            self.recorder.add(Nemesis(self.recorder.next_id(), "latency ms", start,
                                      time.monotonic(), " ".join(f"{k}={v}" for k, v in
                                                                 chosen.items())))
            await asyncio.sleep(min(cfg.latency_every_s, max(0.0, self.until - time.monotonic())))

    async def clear_faults(self) -> None:
        for name in SERVICE_NAMES:
            await self.call("PUT", self.service(name) + "/_faults",
                            {"latency_ms": 0, "jitter_ms": 0})

    async def kill_pubsub(self, at: float) -> None:
        from redis.asyncio import Redis

        await asyncio.sleep(max(0.0, at - time.monotonic()))
        assert self.redis is not None
        client = Redis(port=self.redis.port)
        try:
            start = time.monotonic()
            killed = await client.client_kill_filter(_type="pubsub")
            self.recorder.add(Nemesis(self.recorder.next_id(), PUBSUB_KILL, start,
                                      time.monotonic(), f"{killed} killed"))
        finally:
            await client.aclose()

    async def stall_redis(self, at: float) -> None:
        """Stop the Redis process for `stall_ms` (SIGSTOP, then SIGCONT): every connection
        hangs, then everything queued meanwhile is answered."""
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        assert self.redis is not None and self.redis.process is not None
        start = time.monotonic()
        self.redis.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(self.config.stall_ms / 1000)
        finally:
            self.redis.process.send_signal(signal.SIGCONT)
        self.recorder.add(Nemesis(self.recorder.next_id(), STALL, start, time.monotonic(),
                                  f"{self.config.stall_ms:g} ms"))

    # -- what the events mean ----------------------------------------------------------------
    async def implications(self) -> dict[EventId, list[tuple[str, int]]]:
        """Each event's versions per key: an entity version past the key's base is the write
        of that rank; a review is the write whose body it has (read at the service)."""
        by_entity: dict[tuple[str, str], list[Key]] = {}
        for key in self.keys.values():
            by_entity.setdefault(key.entity[:2], []).append(key)
        review_rank: dict[str, tuple[Key, int]] = {}
        pids = self.roles.review
        _, got = await self.call("GET", self.service("reviews") + "/reviews?product_ids="
                                 + ",".join(pids))
        for review in got["items"]:
            key = self.keys[f"reviews:{review['product_id']}"]
            rank = key.to_version(review["body"])
            if rank > 0:
                review_rank[review["id"]] = (key, rank)
        implies: dict[EventId, list[tuple[str, int]]] = {}
        for _, event in self.relay.received:
            identity = (event["type"], event["id"], event["version"])
            if event["type"] == "Review" and event["id"] in review_rank:
                key, rank = review_rank[event["id"]]
                implies[identity] = [(key.name, rank)]
                continue
            for key in by_entity.get((event["type"], event["id"]), ()):
                rank = event["version"] - key.entity[2]
                if rank <= 0:
                    continue
                if rank > key.written:
                    self.problems.append(f"{key.name}: event version {event['version']} is "
                                         f"past its {key.written} writes")
                    continue
                implies.setdefault(identity, []).append((key.name, rank))
        return implies

    def bounds(self) -> Bounds:
        """The guarantees' bounds for these keys, from the same hints and staleness table
        as the replicas (with their CACHE_HINTS and CACHE_STALE)."""
        hints = CacheHints((ROOT / "schema" / "schema.graphql").read_text(),
                           self.config.cache_hints)
        stale = dict(STALENESS)
        for entity, v in (orjson.loads(self.config.cache_stale)
                          if self.config.cache_stale else {}).items():
            stale[entity] = Staleness(float(v.get("swr", 0)), float(v.get("sie", 0)))
        # Which cached data a key's value comes from: (the hint's coordinate, entity type).
        source = {"stock": ("Stock", "Stock"), "name": ("Product", "Product"),
                  "count": ("Product", "Product"), "reviews": ("Product.reviews", "Review")}
        staleness, if_error = {}, {}
        for name in self.keys:
            coordinate, entity = source[name.split(":")[0]]
            ttl = float(hints.ttl(coordinate))
            staleness[name] = ttl + stale[entity].swr
            if_error[name] = ttl + stale[entity].sie
        defaults = Settings()
        return Bounds(event_bound=defaults.invalidation_lease_ms / 1000, staleness=staleness,
                      stale_if_error=if_error, slack=defaults.request_deadline_s)


def counted(initial: int, sign: int) -> Callable[[Any], int]:
    """Versions of a count that each write moves by one unit in the direction `sign`."""
    def version(value: Any) -> int:
        if not isinstance(value, int) or sign * (value - initial) < 0:
            return UNKNOWN
        return sign * (value - initial)
    return version


def numbered(prefix: str, initial: str) -> Callable[[Any], int]:
    """Versions of a text each write sets to `prefix` and its version; `initial` is 0."""
    def version(value: Any) -> int:
        if value == initial:
            return 0
        if isinstance(value, str) and value.startswith(prefix) and \
                value[len(prefix):].isdigit():
            return int(value[len(prefix):])
        return UNKNOWN
    return version


async def run(config: Config, tmp: Path) -> Run:
    workload = Workload(config, tmp)
    try:
        await workload.start()
        await workload.setup()
        history = await workload.run()
        return Run(history, workload.bounds(), workload.problems, workload.logs())
    finally:
        await workload.stop()

