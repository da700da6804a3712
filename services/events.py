"""Signed change events, delivered in the background to every EVENT_WEBHOOKS URL.

At least once: a failed delivery is retried with backoff a few times, then logged and dropped.
Delivery never delays the response of the write that caused it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging

import aiohttp
import orjson

from services.seed import now_iso

log = logging.getLogger("services.events")

BACKOFF_S = (0.1, 0.3, 1.0, 3.0)  # waits between the attempts


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Emitter:
    def __init__(
        self, session: aiohttp.ClientSession | None, urls: list[str], secret: str
    ) -> None:
        self.session = session
        self.urls = urls
        self.secret = secret
        self.tasks: set[asyncio.Task[None]] = set()

    def emit(self, type_: str, id_: str, op: str, version: int) -> None:
        if not self.urls or self.session is None:
            return
        body = orjson.dumps(
            {"type": type_, "id": id_, "op": op, "version": version, "at": now_iso()})
        headers = {"Content-Type": "application/json", "X-Signature": sign(self.secret, body)}
        for url in self.urls:
            task = asyncio.get_running_loop().create_task(self._deliver(url, body, headers))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _deliver(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        assert self.session is not None
        problem = ""
        for attempt in range(len(BACKOFF_S) + 1):
            if attempt:
                await asyncio.sleep(BACKOFF_S[attempt - 1])
            try:
                async with self.session.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
                ) as resp:
                    await resp.read()
                    if resp.status < 300:
                        return
                    problem = f"status {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as err:
                problem = repr(err)
        log.warning("dropping event %s for %s after retries: %s", body.decode(), url, problem)

    async def close(self, grace_s: float = 0.5) -> None:
        """Give in-flight deliveries a moment, then cancel what is left."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=grace_s)
        for task in list(self.tasks):
            task.cancel()
