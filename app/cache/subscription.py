"""The invalidation channel as a lease: a replica trusts what it cached only while it knows
it has heard every invalidation published until a moment ago.

Every replica pings through its pub/sub connection every `lease/4`. Redis answers a ping in
order with the messages on that connection, so a pong for a ping sent at `t` proves every
invalidation published before `t` has been received and applied. The lease then runs until
`t + lease`. When pongs stop (a dropped connection, a stalled Redis, a stalled replica), the
lease lapses and the replica reads around its cache (`EntityCache` bypasses both levels)
until a new pong arrives; before trusting the cache again it flushes its memory level and
reloads the namespace generations, since invalidations may have been lost meanwhile.

Every replica also keeps itself in a set of members in Redis, for twice the lease, before each
ping. A writer waits for an acknowledgement from every other live member up to `lease`: a
replica that has not acknowledged by then has lost its lease, and reads nothing cached that
the write changed (even one whose connection Redis dropped, which the publication does not
count).
Hence the bound stated in the README: once an eviction reaches one replica, no replica
serves what it evicted after `lease` (plus the network).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.core.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("gateway.cache")


class Lease:
    """Until when this replica may trust its cache (see the module's doc)."""

    def __init__(self, seconds: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.seconds = seconds
        self._now = clock.monotonic
        self._until = float("-inf")  # nothing heard yet: not trusted

    def valid(self) -> bool:
        return self._now() < self._until

    def lapsed(self) -> bool:
        """Held once, and no longer (not the state before the first pong)."""
        return self._until != float("-inf") and not self.valid()

    def heard(self, sent_at: float) -> None:
        """A pong arrived for a ping sent at `sent_at` (this clock's monotonic time)."""
        self._until = max(self._until, sent_at + self.seconds)

    def lost(self) -> None:
        """The connection broke: what was received on it proves nothing any more."""
        self._until = float("-inf")


async def follow(pubsub_factory: Callable[[], Any], channel: str,
                 handle: Callable[[bytes], Awaitable[None]], lease: Lease,
                 regained: Callable[[], Awaitable[None]], beat: Callable[[], Awaitable[None]],
                 clock: Clock = SYSTEM_CLOCK, retry_s: float = 1.0) -> None:
    """Receive `channel`'s messages for as long as the process lives, keeping `lease`; call
    `regained` before the lease is trusted again after it lapsed (a flush), and `beat`
    before each ping (this replica's membership, which writers wait for: it must outlast
    the lease the ping may grant)."""
    interval = lease.seconds / 4
    down = False  # said so in the log: logged once per transition
    while True:
        pubsub = pubsub_factory()
        try:
            await pubsub.subscribe(channel)
            sent: dict[bytes, float] = {}
            sequence = 0
            next_ping = clock.monotonic()
            while True:
                now = clock.monotonic()
                if now >= next_ping:
                    await beat()
                    now = clock.monotonic()
                    sequence += 1
                    token = str(sequence).encode()
                    sent[token] = now
                    await pubsub.ping(token)
                    next_ping = now + interval
                message = await pubsub.get_message(timeout=interval)
                if not down and lease.lapsed():
                    log.warning("invalidation channel silent past the lease: reading "
                                "around the cache until it answers")
                    down = True
                if message is None:
                    continue
                kind = message.get("type")
                if kind == "message":
                    await handle(message["data"])
                elif kind == "pong":
                    at = sent.pop(message["data"], None)
                    if at is None:
                        continue
                    for older in [t for t in sent if sent[t] < at]:
                        del sent[older]  # answered in order: those pongs were lost with a reset
                    if not lease.valid():
                        await regained()
                        if down:
                            log.warning("invalidation channel back: the in-process cache "
                                        "was flushed and is trusted again")
                            down = False
                    lease.heard(at)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            lease.lost()
            if not down:
                log.warning("invalidation channel lost (%s): reading around the cache "
                            "until it is back", err)
                down = True
            await clock.sleep(retry_s)
        finally:
            try:
                await pubsub.aclose()
            except Exception:  # already broken: nothing to close cleanly
                pass
