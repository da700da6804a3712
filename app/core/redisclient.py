"""The one place a Redis client is built, and the few things that differ on a Redis Cluster.

REDIS_URL alone chooses (`connect`):
- `redis://host:port/db` (`rediss://` with TLS): one Redis, a plain `redis.asyncio.Redis`.
- `redis+cluster://host:port` (`rediss+cluster://`): a Redis Cluster, a
  `redis.asyncio.cluster.RedisCluster` that discovers every node from the ones named (any
  one is enough; several, separated by commas, let a gateway start while one is down).

The process's one client is handed to its guard (`app.core.redisguard`), through which every
operation goes; users ask this module, not the client's type, for what differs:
- Scripts and multi-key commands must keep their keys in one hash slot on a cluster. Keys a
  script uses together share a hash tag (`tagged`); `mget_groups` and `eval_groups` run one
  command per group, pipelined (on a cluster, one round trip per node, the nodes in
  parallel). On one Redis there is one group and one command, as before.
- Pub/sub (`publish_command`, `channel_pubsub`). On a cluster it is sharded pub/sub
  (SPUBLISH, SSUBSCRIBE, Redis 7): the channel lives in one slot, so every subscriber and
  every publisher meet on that slot's master. Classic PUBLISH would be broadcast to every
  node, but a subscriber on a node that fails would miss messages the others get, unnoticed;
  with sharded pub/sub the channel's master failing cuts every subscriber and every
  publisher at once: all of them know, and all subscribe again on the replica that takes
  over. (Redis 7.0 lets a script SPUBLISH, and answers PING in order on a connection
  subscribed to a shard channel, which the invalidation lease relies on.)
- Health (`ping`, `drop_idle_connections`): on a cluster, every master of the slot map.
- Failover. The cluster client refreshes its slot map and retries a command once when its
  node is gone or the cluster is mid-failover (CLUSTER_RETRIES): that covers the first
  command after a failover finished. It does not wait out a failover in progress
  (seconds, cluster-node-timeout and the election): the guard sees the failures (redis-py's
  errors, and RuntimeError or AttributeError from a cluster client that closes its
  connections under commands in flight, as it does on CLUSTERDOWN) and every part uses its
  fallback meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis._parsers import AsyncCommandsParser
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

Client = Redis | RedisCluster
SINGLE_SCHEMES = ("redis://", "rediss://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
CLUSTER_RETRIES = 1


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def is_cluster_client(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def url_problem(url: str) -> str | None:
    """What is wrong with a REDIS_URL, or None."""
    if not url.startswith(SINGLE_SCHEMES + CLUSTER_SCHEMES):
        return f"REDIS_URL must be a redis://, rediss://, redis+cluster:// or " \
               f"rediss+cluster:// URL, got {url!r}"
    if is_cluster(url):
        try:
            seeds = _cluster_seeds(url)[1]
        except ValueError as err:
            return f"REDIS_URL: {err}"
        if not seeds:
            return f"REDIS_URL names no cluster node: {url!r}"
    return None


def connect(url: str, *, socket_timeout: float | None = None,
            connect_timeout: float | None = None) -> Client:
    """The client for `url`: one Redis or a cluster (see the module's docstring). Nothing
    is connected yet: the first command connects (a cluster's, discovers the nodes)."""
    if not is_cluster(url):
        return Redis.from_url(url, socket_timeout=socket_timeout,
                              socket_connect_timeout=connect_timeout)
    first, seeds = _cluster_seeds(url)
    return _Cluster.from_url(
        first, startup_nodes=[ClusterNode(host, port) for host, port in seeds[1:]],
        socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), CLUSTER_RETRIES),
        # A MOVED reply patches that slot only: with the default (every fifth MOVED), the
        # client closes every connection, including those of commands in flight.
        reinitialize_steps=0,
    )


class _Cluster(RedisCluster):
    """Two changes to redis-py 8.1's cluster client.

    It decides where a command goes before it loads the slot map: a command issued while
    the map is not loaded (the first ones, or the first after an error asked for a reload)
    goes to a random node, meets MOVED, and concurrent ones then fail with RuntimeError or
    AttributeError as connections are closed under them (24 concurrent first commands: 5
    to 10 failed). Loading the map first avoids it.

    Each load of the map also reloads the command table (COMMAND: about 40 ms of parsing
    here, against 5 ms for the map), which would make every reload after a failover cost
    nearly the guard's whole timeout (REDIS_TIMEOUT_MS, 100 ms): it is loaded once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands_parser = _CommandsOnce()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


class _CommandsOnce(AsyncCommandsParser):
    async def initialize(self, node: ClusterNode | None = None) -> None:
        if not self.commands:
            await super().initialize(node)
        elif node is not None:
            self.node = node  # the node it asks for a command's keys, when it must


async def prepare(client: Client, scripts: Sequence[AsyncScript]) -> None:
    """Make the client ready before it serves: a cluster's slot map and command table, and
    `scripts` loaded (on a cluster, on every master, which also connects to each). A first
    operation would otherwise spend that out of its timeout: on a cluster some tens of
    milliseconds, and a script's first run three round trips (NOSCRIPT, SCRIPT LOAD on
    every master, the script again). A script lost later (a restart, a promoted replica) is
    loaded again where it is missing."""
    if isinstance(client, RedisCluster):
        await client.initialize()
    for script in scripts:
        await client.script_load(script.script)


def _cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A redis:// URL for redis-py (the first node, with the credentials, TLS and options)
    and every node named, as (host, port)."""
    scheme, rest = url.split("://", 1)
    credentials, at, location = rest.rpartition("@")
    hosts, slash, tail = location.partition("/")
    if tail.split("?", 1)[0] not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    seeds = []
    for node in filter(None, hosts.split(",")):
        host, colon, port = node.rpartition(":")
        if not colon or not port.isdigit():
            raise ValueError(f"cluster node {node!r} is not host:port")
        seeds.append((host, int(port)))
    if not seeds:
        return url, []
    base = scheme.replace("+cluster", "")
    first = f"{base}://{credentials}{at}{seeds[0][0]}:{seeds[0][1]}{slash}{tail}"
    return first, seeds


# -- keys ------------------------------------------------------------------------------------
def tagged(tag: str, name: str) -> str:
    """`name` in the hash slot of `tag`: keys with one tag can share a script or a command."""
    return f"{{{tag}}}{name}"


def slot_tags(count: int) -> list[str]:
    """`count` hash tags whose slots split the cluster's 16384 evenly: tag i hashes into
    the i-th of `count` equal ranges. A cluster's masters own ranges of slots, so each
    master takes a share of the tags in proportion to its slots. Found by trying short
    names in order (a few hundred tries), so every process finds the same ones."""
    width = REDIS_CLUSTER_HASH_SLOTS // count
    tags: list[str | None] = [None] * count
    missing = count
    candidate = 0
    while missing:
        tag = f"s{candidate}"
        bucket = key_slot(tag.encode()) // width
        if bucket < count and tags[bucket] is None:
            tags[bucket] = tag
            missing -= 1
        candidate += 1
    return [tag for tag in tags if tag is not None]


# -- commands over groups of keys ------------------------------------------------------------
async def mget_groups(client: Client, groups: Sequence[Sequence[str]]
                      ) -> list[list[bytes | None]]:
    """MGET each group (keys of one slot), in one pipeline."""
    if len(groups) == 1:
        return [cast(list[bytes | None], await client.mget(list(groups[0])))]
    async with client.pipeline(transaction=False) as pipe:
        for keys in groups:
            # execute_command: a cluster pipeline refuses .mget, which may span slots.
            pipe.execute_command("MGET", *keys)
        return [list(values) for values in await pipe.execute()]


async def eval_groups(client: Client, script: AsyncScript,
                      calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Run `script` once per (keys, args), the keys of each call in one slot, pipelined."""
    if len(calls) == 1:
        keys, args = calls[0]
        return [await script(keys=list(keys), args=list(args))]
    if isinstance(client, Redis):
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await script(keys=list(keys), args=list(args), client=pipe)
            return list(await pipe.execute())
    return await _eval_cluster(client, script, calls, reload=True)


async def _eval_cluster(client: RedisCluster, script: AsyncScript,
                        calls: Sequence[tuple[Sequence[str], Sequence[Any]]],
                        reload: bool) -> list[Any]:
    # A cluster pipeline neither accepts script objects nor loads scripts: EVALSHA, and on a
    # node that does not know the script yet (new, or a replica just promoted), load it on
    # every master and run again.
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
    if any(isinstance(r, NoScriptError) for r in results) and reload:
        await client.script_load(script.script)
        return await _eval_cluster(client, script, calls, reload=False)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return list(results)


# -- pub/sub ---------------------------------------------------------------------------------
def publish_command(client: Client) -> str:
    """The command that publishes on the invalidation channel: PUBLISH, or on a cluster the
    sharded SPUBLISH (see the module's docstring)."""
    return "SPUBLISH" if isinstance(client, RedisCluster) else "PUBLISH"


def channel_pubsub(client: Client) -> Any:
    """A subscription connection with what `app.cache.subscription.follow` uses:
    `subscribe(channel)`, `ping(token)`, `get_message(timeout)` (a message's type is
    "message", a pong's "pong") and `aclose()`."""
    if isinstance(client, RedisCluster):
        return ShardedPubSub(client)
    return client.pubsub()


class ShardedPubSub:
    """A shard channel's subscription on a cluster: SSUBSCRIBE, and the PINGs, on one
    connection of its own to the master of the channel's slot, so a pong follows every
    message published before its ping, as on one Redis. redis-py's cluster pub/sub is not
    used: it pings through another connection than the shard channel's, and moves a
    subscription to a slot's new master on its own, which would hide the messages lost
    meanwhile from the lease. Here a lost connection, or the slot taken from the node (a
    `sunsubscribe` from the server), raises; the caller subscribes again, on the slot map
    read anew."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._node: Redis | None = None
        self._pubsub: Any = None

    async def subscribe(self, channel: str) -> None:
        # The slot map now: after a failover the channel's slot has a new master, which a
        # map read before it would not name.
        await self.cluster.initialize()
        await self.cluster.nodes_manager.initialize()
        node = self.cluster.get_node_from_key(channel)
        if node is None:
            raise RedisConnectionError(f"no node serves {channel!r}")
        kwargs = {k: v for k, v in node.connection_kwargs.items()
                  if k not in ("retry", "event_dispatcher")}
        # No retry: a connection that drops must be noticed, not silently reopened to an
        # address that may no longer serve the slot.
        pool = ConnectionPool(connection_class=node.connection_class,
                              retry=Retry(NoBackoff(), 0), **kwargs)
        self._node = Redis(connection_pool=pool)
        self._pubsub = self._node.pubsub()
        await self._pubsub.ssubscribe(channel)

    async def ping(self, token: bytes) -> None:
        await self._pubsub.ping(token)

    async def get_message(self, timeout: float) -> Any:  # noqa: ASYNC109 (the PubSub API)
        message = await self._pubsub.get_message(timeout=timeout)
        if message is None:
            return None
        kind = message.get("type")
        if kind == "smessage":
            return {**message, "type": "message"}
        if kind == "sunsubscribe":  # the slot left this node (a failover, a migration)
            raise RedisConnectionError(f"{message.get('channel')!r} unsubscribed by the server")
        return message

    async def aclose(self) -> None:
        try:
            if self._pubsub is not None:
                await self._pubsub.aclose()
        finally:
            if self._node is not None:
                await self._node.aclose()
                await self._node.connection_pool.disconnect()


# -- health ----------------------------------------------------------------------------------
async def ping(client: Client) -> bool:
    """Whether Redis answers: one Redis's PING; on a cluster, a PING to every master of the
    slot map (a master that fails is in it until a replica has taken its slots over; the
    client reloads the map after a failed command), so that a cluster with a slot unserved
    is not called up."""
    if isinstance(client, RedisCluster):
        return bool(await client.ping(target_nodes=RedisCluster.PRIMARIES))
    return bool(await client.ping())


async def drop_idle_connections(client: Client) -> None:
    """Close the idle pooled connections (those of every node of a cluster): after an
    outage they may lead to a Redis that was restarted, and would fail the first operation
    that takes them. The next operations open new ones."""
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():
            await node.disconnect_free_connections()
        return
    pool = getattr(client, "connection_pool", None)  # None: a stand-in of the unit tests
    if pool is not None:
        await pool.disconnect(inuse_connections=False)
