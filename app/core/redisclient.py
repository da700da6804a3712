"""The one place a Redis client is built, and the few things that differ on a Redis Cluster.

REDIS_URL alone chooses (`connect`):
- `redis://host:port/db` (`rediss://` with TLS): one Redis, a plain `redis.asyncio.Redis`.
- `redis+cluster://host:port` (`rediss+cluster://`): a Redis Cluster, a
  `redis.asyncio.cluster.RedisCluster` that discovers every node from the ones named (any
  one is enough; several, separated by commas, let a gateway start while one is down).

Users ask this module, not the client's type, for what differs:
- Scripts and multi-key commands must keep their keys in one hash slot on a cluster. Keys a
  script uses together share a hash tag (`tagged`); `mget_groups` and `eval_groups` run one
  command per group, pipelined (on a cluster, one round trip per node, the nodes in
  parallel). On one Redis there is one group and one command, as before.
- Pub/sub (`publish`, `subscription`). On a cluster it is sharded pub/sub (SPUBLISH,
  SSUBSCRIBE, Redis 7): the channel lives in one slot, so every subscriber and every
  publisher meet on that slot's master. Classic PUBLISH would do too (a cluster broadcasts
  it to every node), but its answer counts only the subscribers of the node it reached,
  while the entity cache's writers wait for exactly that count of acknowledgements; and a
  subscriber on a node that fails would miss messages the others get. With sharded
  pub/sub the count is every subscriber, and the channel's master failing cuts every
  subscriber and every publisher at once: all of them know, and all reconnect to the
  replica that takes over.
- Failover. The cluster client refreshes its slot map and retries a command once when its
  node is gone or the cluster is mid-failover (CLUSTER_RETRIES): that covers the first
  command after a failover finished. It does not wait out a failover in progress
  (seconds, cluster-node-timeout and the election); callers meet the error and use their
  fallbacks meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

Client = Redis | RedisCluster
# What a failing Redis may raise: redis-py's errors, a cluster client's
# RedisClusterException (not one of them: a slot not covered mid-failover), and, from a
# cluster client that closes its connections under commands in flight (as it does on
# CLUSTERDOWN, during a failover), RuntimeError or AttributeError. Callers whose fallback
# must hold whatever Redis does catch them all.
ERRORS = (Exception,)
SINGLE_SCHEMES = ("redis://", "rediss://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
CLUSTER_RETRIES = 1


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


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
    """redis-py 8.1's cluster client decides where a command goes before it loads the slot
    map: a command issued while the map is not loaded (the first ones, or the first after
    an error asked for a reload) goes to a random node, meets MOVED, and concurrent ones
    then fail with RuntimeError or AttributeError as connections are closed under them
    (24 concurrent first commands: 5 to 10 failed). Loading the map first avoids it."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


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
async def publish(client: Client, channel: str, message: bytes) -> int:
    """Publish `message`; returns how many subscribers received it."""
    if isinstance(client, RedisCluster):
        return int(await client.spublish(channel, message))
    return int(await client.publish(channel, message))


@asynccontextmanager
async def subscription(client: Client, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
    """Subscribed to `channel`: yields the messages' data as they come. Raises (a
    redis-py error) when the subscription is lost; the caller decides when to subscribe
    again. On a cluster, a subscription lost to a failover or a slot moved raises too."""
    if isinstance(client, RedisCluster):
        async with _sharded(client, channel) as messages:
            yield messages
        return
    # A pool of its own: the subscription's connection never returns to the commands' pool,
    # where it would take the place of another connection in the order they are reused.
    pool = client.connection_pool
    own = ConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs)
    pubsub = Redis(connection_pool=own).pubsub()
    try:
        await pubsub.subscribe(channel)
        yield (message["data"] async for message in pubsub.listen()
               if message.get("type") == "message")
    finally:
        await pubsub.aclose()
        await own.disconnect()


@asynccontextmanager
async def _sharded(client: RedisCluster, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
    # The slot map first: after a failover the channel's slot has a new master, which a
    # map read before it would not name.
    await client.initialize()
    await client.nodes_manager.initialize()
    pubsub = client.pubsub()
    try:
        await pubsub.ssubscribe(channel)

        async def messages() -> AsyncIterator[bytes]:
            while True:
                # None waits for the next message (the annotation says float only).
                message = await pubsub.get_sharded_message(timeout=None)  # type: ignore[arg-type]
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "smessage":
                    yield message["data"]
                elif kind == "sunsubscribe":  # the slot moved to another node
                    raise RedisConnectionError(f"{channel} unsubscribed by the server")

        yield messages()
    finally:
        await pubsub.aclose()
