"""The entity registry: every entity type the gateway knows, declared once.

An entity type is what the services' change events name and what the loaders fetch. Its
declaration here, with the loaders of `loaders.declarations` that fetch it, is all the
gateway knows about it; every table that depends on entity types is derived from them:

- the change events accepted (`EVENT_TYPES`);
- what a change evicts (`EVICTIONS`), from the loaders that hold the type: its by-id loader
  at the entity's id, its foreign-key loaders at the changed item's key (a review's lists by
  product and by author), and the listings that prime its by-id loader whole (their members
  are not tracked);
- the default staleness of its cached values (`STALENESS`);
- what a cached whole response that reads the type also depends on (`READS`);
- the request's loaders a mutation clears after a write (`Loaders.written`, same table).

Adding an entity type, or a dependency between two, is one edit here.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.cache.entity import Staleness
from app.cache.invalidation import Evicts
from loaders import declarations as d
from loaders.spec import BatchSpec, ListSpec


@dataclass(frozen=True)
class Entity:
    name: str  # the GraphQL type, and the `type` of its change events
    staleness: Staleness  # how far past its TTL a cached value may still be served
    # Entity types its fields read besides itself: a cached response that reads this type is
    # stale when one of those changes (Product.inStock reads Stock).
    reads: tuple[str, ...] = ()
    # Loaders keyed by this entity's id, holding other types, that its change makes stale.
    also_evicts: tuple[str, ...] = ()
    # How to read a changed item whose evictions need its fields (a review's product and
    # author): a batch endpoint by id.
    fetch: BatchSpec | None = None


ENTITIES: dict[str, Entity] = {e.name: e for e in (
    Entity("User", Staleness(30, 600)),
    # A product's rating changes when a review is added: its review list may be new too.
    Entity("Product", Staleness(30, 600), reads=("Stock",),
           also_evicts=(d.REVIEWS_BY_PRODUCT.name,)),
    Entity("Category", Staleness(300, 3600)),
    # Stock changes with every order: never serve it past its TTL.
    Entity("Stock", Staleness(0, 0)),
    Entity("Order", Staleness(0, 0)),
    Entity("Review", Staleness(10, 300), fetch=d.REVIEW),
)}

EVENT_TYPES = frozenset(ENTITIES)


def _evicts(entity: Entity) -> Evicts:
    by_id = [s.name for s in d.ALL
             if isinstance(s, BatchSpec) and s.entity == entity.name and not s.many]
    by_field = [(s.name, s.key_field) for s in d.ALL
                if isinstance(s, BatchSpec) and s.entity == entity.name and s.many]
    whole = [s.name for s in d.ALL if isinstance(s, ListSpec) and s.primes is not None
             and s.primes.entity == entity.name]
    return Evicts(by_id=(*by_id, *entity.also_evicts), by_field=tuple(by_field),
                  whole=tuple(whole), own=by_id[0] if by_id else None,
                  needs_item=entity.fetch is not None)


EVICTIONS: dict[str, Evicts] = {name: _evicts(e) for name, e in ENTITIES.items()}
STALENESS: dict[str, Staleness] = {name: e.staleness for name, e in ENTITIES.items()}
READS: dict[str, tuple[str, ...]] = {name: e.reads for name, e in ENTITIES.items()}

