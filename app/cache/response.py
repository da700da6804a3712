"""The whole-response cache for PUBLIC operations (opt-in: RESPONSE_CACHE=true).

A hit answers without parsing or executing anything. The key is the operation's text hash,
its name and its variables; an entry is stored only for a query whose policy is PUBLIC with a
max-age, without errors and without stale data, for that max-age. It remembers the
generations of the types the operation reads, and the change events that bump those
generations make it a miss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
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

from app.cache.entity import EntityCache
from app.cache.hints import PUBLIC, Policy
from app.cache.invalidation import response_namespace
from app.cache.levels import MemoryLevel
from app.core.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class CachedResponse:
    data: Any
    policy: Policy
    generations: tuple[tuple[str, int], ...]
    stored_at: float


class ResponseCache:
    def __init__(self, schema: GraphQLSchema, entities: EntityCache, max_entries: int,
                 reads: Mapping[str, tuple[str, ...]] | None = None, *,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.now = clock.time  # bound once (read per request)
        self.schema = schema
        # Entity types read along with another (Product.inStock reads Stock): a response
        # that reads the one depends on the other's changes too (`loaders.entities`).
        self.reads = reads or {}
        self.entities = entities
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
        now = self.now()
        entry: CachedResponse | None = self.level.get(key, now)
        if entry is None:
            return None
        if any(self.entities.generation(n) != g for n, g in entry.generations):
            self.level.delete(key)
            return None
        return entry

    def seen(self) -> dict[str, int]:
        """The generations to `put` a response with: taken before it executes."""
        return self.entities.generations()

    def put(self, key: str, document: DocumentNode, data: Any, policy: Policy,
            seen: dict[str, int] | None = None) -> None:
        """Keep `data` for its max-age. `seen` are the generations from before the
        execution (`seen()`): a change that lands while it runs bumps one past them, so the
        entry is stale from the start instead of old data served as current."""
        if policy.scope != PUBLIC or not policy.max_age or policy.max_age <= 0:
            return
        names = [response_namespace(t) for t in sorted(self._types(document))]
        current = self.entities.generation
        generations = tuple((n, seen.get(n, 0) if seen is not None else current(n))
                            for n in names)
        now = self.now()
        age = policy.max_age
        self.level.set(key, CachedResponse(data, policy, generations, now), now + age)

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
