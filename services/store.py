"""Entity versions, idempotency records, id counters and changed documents, in memory and,
with DATA_DIR, in one SQLite file per service.

Services keep their working data in their own dicts and indexes; the store records what changed
so a restart can seed and then overlay it. ``commit`` writes one SQLite transaction before the
caller answers or emits an event.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    type TEXT NOT NULL, id TEXT NOT NULL, doc BLOB NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (type, id));
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (scope, key));
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass
class Change:
    """One changed entity: ``created`` starts its version at 1, otherwise the version grows."""

    type: str
    id: str
    doc: dict[str, Any]
    created: bool = False


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self._versions: dict[tuple[str, str], int] = {}
        self._idem: dict[tuple[str, str], Any] = {}
        self._counters: dict[str, int] = {}
        self._docs: dict[str, dict[str, dict[str, Any]]] = {}
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.executescript(_SCHEMA)
            # WAL with synchronous=NORMAL keeps commits cheap and still survives a crash of
            # the process (only a power loss could drop the last commits).
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._load()

    def _load(self) -> None:
        assert self._db is not None
        for type_, id_, doc, version in self._db.execute(
            "SELECT type, id, doc, version FROM docs"
        ):
            self._docs.setdefault(type_, {})[id_] = orjson.loads(doc)
            self._versions[(type_, id_)] = version
        for scope, key, value in self._db.execute("SELECT scope, key, value FROM idempotency"):
            self._idem[(scope, key)] = orjson.loads(value)
        for name, value in self._db.execute("SELECT name, value FROM counters"):
            self._counters[name] = value

    def stored(self, type_: str) -> dict[str, dict[str, Any]]:
        """Documents of a type persisted by earlier runs (to overlay on the seed at start)."""
        return self._docs.pop(type_, {})

    def version(self, type_: str, id_: str) -> int:
        return self._versions.get((type_, id_), 1)  # seeded entities start at version 1

    def idempotency(self, scope: str, key: str) -> Any:
        return self._idem.get((scope, key))

    def counter(self, name: str, default: int) -> int:
        return self._counters.get(name, default)

    def commit(
        self,
        changes: Iterable[Change] = (),
        idempotency: Iterable[tuple[str, str, Any]] = (),
        counters: dict[str, int] | None = None,
    ) -> list[int]:
        """Persist a set of changes atomically; returns the new version of each change."""
        changes = list(changes)
        idempotency = list(idempotency)
        versions = [1 if c.created else self.version(c.type, c.id) + 1 for c in changes]
        if self._db is not None:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO docs (type, id, doc, version) VALUES (?, ?, ?, ?)",
                    [(c.type, c.id, orjson.dumps(c.doc), v) for c, v in zip(changes, versions,
                                                                             strict=True)],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO idempotency (scope, key, value) VALUES (?, ?, ?)",
                    [(s, k, orjson.dumps(v)) for s, k, v in idempotency],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)",
                    list((counters or {}).items()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        for change, version in zip(changes, versions, strict=True):
            self._versions[(change.type, change.id)] = version
        for scope, key, value in idempotency:
            self._idem[(scope, key)] = value
        self._counters.update(counters or {})
        return versions

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
