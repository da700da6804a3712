"""What a service module gets to build its routes: its data, store, events and upstreams."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

import aiohttp

from services.config import Config
from services.events import Emitter
from services.http import Upstream
from services.seed import Dataset
from services.store import Store


@dataclass
class Context:
    name: str
    config: Config
    dataset: Dataset
    store: Store
    emitter: Emitter
    session: aiohttp.ClientSession
    # Locks by key; weak values so a lock disappears once nobody holds or awaits it.
    _locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary)

    def upstream(self, name: str) -> Upstream:
        return Upstream(self.session, self.config.url(name), name)

    def lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock
