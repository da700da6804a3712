"""Persisted queries and trusted documents.

Automatic persisted queries (Apollo's protocol): a client sends
`extensions.persistedQuery = {"version": 1, "sha256Hash": ...}` instead of the document; the
gateway answers PERSISTED_QUERY_NOT_FOUND the first time, the client sends the document with
its hash once, and from then on the hash alone. Registered documents live in Redis when it is
configured (shared by replicas), else in this process.

Trusted documents: a manifest file (PERSISTED_QUERIES_FILE) holds the operations known at
deploy time, in the format Apollo's `generate-persisted-query-manifest` emits
(`{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "name",
"type", "body"}]}`) or The Guild's (GraphQL Code Generator's client preset and Hive:
`{"<id>": "<document>"}`, the id a sha256 or sha1 of the document, or any id). Clients send
a manifest operation by Apollo's `extensions.persistedQuery.sha256Hash` or by the Guild's
`documentId` (the GraphQL over HTTP persisted-documents appendix, `sha256:<hex>` too). With
PERSISTED_QUERIES_ONLY, only the manifest's operations run: query texts are refused, nothing
is registered, and a hash registered through APQ (by an earlier deploy, or another gateway
sharing the Redis) is not looked up.

While Redis is down (its guard, `app.core.redisguard`), the hashes this process knows (the
manifest's, and those it registered or looked up before) keep working; any other hash can
be neither looked up nor registered, and is refused with 503 PERSISTED_QUERY_UNAVAILABLE
and a Retry-After: registering it in this process only would split the replicas' views.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

from app.config.settings import Settings, SettingsError
from app.core.errors import HTTPRefusal
from app.core.redisguard import RedisGuard

MAX_LOCAL_BYTES = 32_000_000  # the in-process store, by the size of its documents
MAX_DOCUMENT_BYTES = 100_000  # a longer document runs, but is not registered
TTL_S = 30 * 86_400
UNAVAILABLE = "PERSISTED_QUERY_UNAVAILABLE"
_DOWN: Any = object()  # a lookup's answer while Redis is down: neither found nor not


class NotFound(Exception):
    """The hash names no document this gateway knows."""


def sha256(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


APOLLO_FORMAT = "apollo-persisted-query-manifest"
_DIGESTS = {64: hashlib.sha256, 40: hashlib.sha1}
_HEX = frozenset("0123456789abcdef")
# The request's `documentId` (The Guild's clients, GraphQL over HTTP's appendix), moved into
# `extensions` by the view, as Strawberry keeps no other field of the body.
DOCUMENT_ID = "documentId"


def _checked(digest: str, body: str) -> str:
    """The manifest id, checked against its document when it looks like a digest: a
    mismatch means the manifest and the clients' build disagree, a deploy error."""
    bare = digest.removeprefix("sha256:")
    algorithm = hashlib.sha256 if bare != digest else _DIGESTS.get(len(bare))
    if (bare != digest or algorithm is not None) and set(bare.lower()) <= _HEX:
        if algorithm is None or algorithm(body.encode()).hexdigest() != bare.lower():
            raise SettingsError(f"PERSISTED_QUERIES_FILE: {digest!r} is not the "
                                f"{'sha256' if bare != digest else 'digest'} of its document")
        return bare.lower()
    return digest


def load_manifest(path: str) -> dict[str, str]:
    """Every id a client may send for a manifest operation -> its document: the manifest's
    own id, and the sha256 of the document (what Apollo's clients send)."""
    try:
        raw = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as err:
        raise SettingsError(f"PERSISTED_QUERIES_FILE cannot be read: {err}") from None
    if isinstance(raw, dict) and "operations" in raw:
        if raw.get("format") not in (APOLLO_FORMAT, None) or raw.get("version") not in (1, None) \
                or not isinstance(raw["operations"], list):
            raise SettingsError(f"PERSISTED_QUERIES_FILE: not an {APOLLO_FORMAT} version 1")
        pairs = [(op.get("id"), op.get("body")) for op in raw["operations"]
                 if isinstance(op, dict)]
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise SettingsError("PERSISTED_QUERIES_FILE must be a JSON object")
    manifest = {}
    for digest, body in pairs:
        if not isinstance(digest, str) or not isinstance(body, str):
            raise SettingsError(f"PERSISTED_QUERIES_FILE: {digest!r} has no document")
        manifest[_checked(digest, body)] = body
        manifest[sha256(body)] = body
    return manifest


class PersistedQueries:
    def __init__(self, settings: Settings, redis: RedisGuard | None = None) -> None:
        self.only = settings.persisted_queries_only
        self.manifest = (load_manifest(settings.persisted_queries_file)
                         if settings.persisted_queries_file else {})
        self._prefix = f"{settings.redis_prefix}:apq:"
        self._redis = redis
        self._local: OrderedDict[str, str] = OrderedDict()
        self._local_bytes = 0

    async def resolve(self, query: str | None, extensions: dict[str, Any] | None
                      ) -> tuple[str | None, str | None]:
        """The document to run (`query`, or the persisted one its hash names) and the hash
        to register it under once it has proved to be a valid operation (None: nothing to
        register). Raises NotFound for an unknown hash, an HTTPRefusal for a request the
        protocol refuses, or (503) for a hash this process does not know while Redis is
        down."""
        document_id = (extensions or {}).get(DOCUMENT_ID)
        if document_id is not None:
            return self._by_document_id(document_id, query), None
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if self.only and query is not None:
                raise HTTPRefusal(400, "Only persisted operations are accepted: send "
                                  "extensions.persistedQuery with the sha256Hash of one",
                                  "PERSISTED_QUERY_REQUIRED")
            return query, None
        if not isinstance(persisted, dict) or persisted.get("version") != 1 \
                or not isinstance(persisted.get("sha256Hash"), str):
            raise HTTPRefusal(400, "extensions.persistedQuery must be "
                              '{"version": 1, "sha256Hash": "<hex>"}', "BAD_REQUEST")
        digest = persisted["sha256Hash"].lower()
        known = await self._get(digest)
        if known is _DOWN:
            raise self._unavailable(query is not None)
        if query is None:
            if known is None:
                raise NotFound(digest)
            return known, None
        if sha256(query) != digest:
            raise HTTPRefusal(400, "persistedQuery.sha256Hash is not the sha256 of the query",
                              "BAD_REQUEST")
        if known is None and self.only:
            raise HTTPRefusal(400, "Only persisted operations are accepted: this one is "
                              "not, and none may be added", "PERSISTED_QUERY_REQUIRED")
        register = digest if known is None and len(query) <= MAX_DOCUMENT_BYTES else None
        return query, register

    def _by_document_id(self, document_id: Any, query: str | None) -> str:
        """A trusted document sent by its id: the manifest's only (never one registered
        through APQ); with the text too, the text must be that document."""
        if not isinstance(document_id, str) or not document_id:
            raise HTTPRefusal(400, "documentId must be a non-empty string", "BAD_REQUEST")
        known = self.manifest.get(document_id.removeprefix("sha256:").lower()) \
            or self.manifest.get(document_id)
        if known is None:
            raise NotFound(document_id)
        if query is not None and query != known:
            raise HTTPRefusal(400, "The query is not the document its documentId names",
                              "BAD_REQUEST")
        return known

    def in_manifest(self, query: str) -> bool:
        """Whether `query` is one of the manifest's operations (deployed with the gateway,
        not chosen by whoever calls)."""
        return bool(self.manifest) and sha256(query) in self.manifest

    async def register(self, digest: str, query: str) -> None:
        """Keep `query` under its hash: called once it parsed and validated, so that text
        that is not an operation is never stored."""
        await self._put(digest, query)

    def _unavailable(self, registering: bool) -> HTTPRefusal:
        assert self._redis is not None
        what = "registered" if registering else "looked up"
        return HTTPRefusal(
            503, f"Persisted queries cannot be {what} while their shared store is unavailable "
            "(the hashes this gateway already knows still work): retry later, or send the "
            "query without extensions.persistedQuery", UNAVAILABLE,
            headers={"Retry-After": str(max(1, math.ceil(self._redis.retry_in())))})

    async def _get(self, digest: str) -> Any:
        """The document, None when it is not registered, or _DOWN when Redis cannot say."""
        found = self.manifest.get(digest)
        if found is not None or self.only:
            # Trusted documents only: what APQ registered (by an earlier deploy, or another
            # gateway sharing the Redis) is not one of them.
            return found
        found = self._local.get(digest)
        if found is not None or self._redis is None:
            return found
        key = self._prefix + digest
        client = self._redis.client
        raw = await self._redis.run("persisted query", lambda: client.get(key), _DOWN)
        if raw is _DOWN or raw is None:
            return raw
        # Bytes, as the client decodes no responses (redis types it bytes or str).
        query = raw if isinstance(raw, str) else raw.decode()
        self._remember(digest, query)
        return query

    async def _put(self, digest: str, query: str) -> None:
        self._remember(digest, query)
        if self._redis is not None:
            # Should Redis have gone down since the lookup, it is kept here only (a lookup on
            # another replica misses, and the client registers it again there).
            key, client = self._prefix + digest, self._redis.client
            await self._redis.run("persisted query",
                                  lambda: client.set(key, query, ex=TTL_S), None)

    def _remember(self, digest: str, query: str) -> None:
        old = self._local.pop(digest, None)
        self._local_bytes -= len(old) if old is not None else 0
        self._local[digest] = query
        self._local_bytes += len(query)
        while self._local_bytes > MAX_LOCAL_BYTES and self._local:
            _, evicted = self._local.popitem(last=False)
            self._local_bytes -= len(evicted)
