"""The whole-response cache for PUBLIC operations (opt-in: RESPONSE_CACHE=true).

A hit answers without parsing or executing anything. The key is the operation's text hash,
its name and its variables; an entry is stored only for a query whose policy is PUBLIC with a
max-age, without errors and without stale data, for that max-age.

An entry depends on what its execution read, as the entity cache names it: the loaders'
keys (product p1, the stock of sku s1, the reviews of product p1) and their namespaces'
generations (bumped by changes to lists whose members are not tracked). A change that evicts
one of those keys, on this replica or, through Redis, on another, makes the entry a miss; a
change to another product does not. What was read without the entity cache (a loader with
no cache hint, or the cache off) falls back to the type: any change of its entity type, or
of a type it reads (`loaders.entities.READS`), makes the entry a miss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
)

from app.cache.entity import EntityCache, Namespace
from app.cache.hints import PUBLIC, Policy
from app.cache.invalidation import response_namespace
from app.cache.levels import MemoryLevel
from app.core.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class CachedResponse:
    data: Any
    policy: Policy
    generations: tuple[tuple[str, int], ...]  # namespaces read, at their generation then
    stored_at: float
    keys: tuple[str, ...] = ()  # the entity cache's keys read: evicted after `epoch`, stale
    epoch: int = 0


@dataclass(frozen=True)
class Seen:
    """What the cache had seen when an execution started (`ResponseCache.seen`)."""

    generations: dict[str, int]
    epoch: int


class ResponseCache:
    def __init__(self, schema: GraphQLSchema, entities: EntityCache, max_entries: int,
                 reads: Mapping[str, tuple[str, ...]] | None = None, *,
                 namespaces: Mapping[str, Namespace] | None = None,
                 loader_entities: Mapping[str, str] | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.now = clock.time  # bound once (read per request)
        self.schema = schema
        # Entity types read along with another (Product.inStock reads Stock): a response
        # that reads the one depends on the other's changes too (`loaders.entities`).
        self.reads = reads or {}
        self.entities = entities
        self.namespaces = namespaces or {}  # the cached loaders' namespaces, by loader
        self.loader_entities = loader_entities or {}  # every loader's entity type
        self.level = MemoryLevel(max_entries)
        self._types = lru_cache(maxsize=512)(self._operation_types)

    @staticmethod
    def key(query: str, operation_name: str | None, variables: Mapping[str, Any] | None
            ) -> str | None:
        digest = hashlib.sha256(query.encode()).hexdigest()
        try:
            encoded = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS).decode()
        except (TypeError, orjson.JSONEncodeError):
            return None  # nested past orjson's depth: not worth caching (nor a 500)
        return f"{digest}:{operation_name or ''}:" + encoded

    def get(self, key: str) -> CachedResponse | None:
        if not self.entities.trusted():
            return None  # an invalidation may have been missed: read around it, as entities
        now = self.now()
        entry: CachedResponse | None = self.level.get(key, now)
        if entry is None:
            return None
        if (any(self.entities.generation(n) != g for n, g in entry.generations)
                or (entry.keys and self.entities.changed_since(entry.keys, entry.epoch))):
            self.level.delete(key)
            return None
        return entry

    def seen(self) -> Seen:
        """What to `put` a response with: taken before it executes."""
        return Seen(self.entities.generations(), self.entities.epoch)

    def put(self, key: str, document: DocumentNode, data: Any, policy: Policy,
            seen: Seen | None = None,
            reads: Mapping[str, Iterable[Hashable]] | None = None) -> None:
        """Keep `data` for its max-age. `seen` is from before the execution (`seen()`): a
        change that lands while it runs is after it, so the entry is stale from the start
        instead of old data served as current. `reads` are the keys each loader read
        (`Loaders.read_keys`); without them the entry depends on every type it reads."""
        if policy.scope != PUBLIC or not policy.max_age or policy.max_age <= 0:
            return
        before = seen.generations if seen is not None else self.entities.generations()
        epoch = seen.epoch if seen is not None else self.entities.epoch
        names: set[str] = set()
        keys: list[str] = []
        if reads is None:
            names.update(response_namespace(t) for t in self._types(document))
        else:
            types: set[str] = set()
            for loader, loaded in reads.items():
                ns = self.namespaces.get(loader)
                if ns is None or ns.private:
                    entity = self.loader_entities.get(loader)
                    if entity is not None:
                        types.add(entity)
                        types.update(self.reads.get(entity, ()))
                    continue
                generation = before.get(ns.name, 0)
                names.add(ns.name)
                keys += [self.entities.full_key(ns, k, None, generation) for k in loaded]
            names.update(response_namespace(t) for t in types)
        generations = tuple((n, before.get(n, 0)) for n in sorted(names))
        now = self.now()
        self.level.set(key, CachedResponse(data, policy, generations, now, tuple(keys), epoch),
                       now + policy.max_age)

    def _operation_types(self, document: DocumentNode) -> frozenset[str]:
        """The object types an operation reads: their changes invalidate its responses."""
        found: set[str] = set()
        fragments = {d.name.value: d for d in document.definitions
                     if isinstance(d, FragmentDefinitionNode)}

        def walk(selection_set: SelectionSetNode, parent: GraphQLObjectType,
                 seen: frozenset[str]) -> None:
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    field_def = parent.fields.get(selection.name.value)
                    if field_def is None:
                        continue
                    named = get_named_type(field_def.type)
                    if isinstance(named, GraphQLObjectType):
                        found.add(named.name)
                        if selection.selection_set is not None:
                            walk(selection.selection_set, named, seen)
                elif isinstance(selection, InlineFragmentNode):
                    walk(selection.selection_set, parent, seen)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in fragments and name not in seen:
                        walk(fragments[name].selection_set, parent, seen | {name})

        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode) and self.schema.query_type:
                walk(definition.selection_set, self.schema.query_type, frozenset())
        for name in list(found):
            found.update(self.reads.get(name, ()))
        return frozenset(found)
