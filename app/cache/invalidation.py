"""What a change evicts: one table for the services' change events and the gateway's own
mutations alike.

An entity's change evicts its cached entity and the lists known to contain it (a review's
lists by product and by author); lists whose members are not tracked (top products, a
category's products, all categories) are evicted whole by a namespace generation. Whole
responses are tagged with the types they read and evicted the same way. Events older than a
version already seen for their entity are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.cache.entity import EntityCache, Namespace
from app.upstream.client import UpstreamClient
from app.upstream.failures import UpstreamError
from loaders.declarations import (
    ALL_CATEGORIES,
    CATEGORY,
    CATEGORY_PRODUCTS,
    ORDER,
    PRODUCT,
    REVIEWS_BY_AUTHOR,
    REVIEWS_BY_PRODUCT,
    STOCK,
    TOP_PRODUCTS,
    USER,
    USER_ORDERS,
)

log = logging.getLogger("gateway.cache")


def response_namespace(entity_type: str) -> str:
    return f"response:{entity_type}"


@dataclass(frozen=True)
class Evicts:
    by_id: tuple[str, ...] = ()  # loaders keyed by the entity's own id
    whole: tuple[str, ...] = ()  # loaders evicted whole: lists whose members are not tracked


EVICTS: dict[str, Evicts] = {
    "Product": Evicts(by_id=(PRODUCT.name, REVIEWS_BY_PRODUCT.name),
                      whole=(TOP_PRODUCTS.name, CATEGORY_PRODUCTS.name)),
    "Stock": Evicts(by_id=(STOCK.name,)),
    "User": Evicts(by_id=(USER.name,)),
    "Category": Evicts(by_id=(CATEGORY.name,), whole=(ALL_CATEGORIES.name,)),
    "Order": Evicts(by_id=(ORDER.name,), whole=(USER_ORDERS.name,)),
    # A review is not cached by id: its product's and author's lists are (keys found below).
    "Review": Evicts(),
}


class Invalidator:
    def __init__(self, cache: EntityCache, namespaces: Mapping[str, Namespace],
                 client: UpstreamClient) -> None:
        self.cache = cache
        self.namespaces = namespaces
        self.client = client

    async def on_event(self, event: Mapping[str, Any]) -> bool:
        """Apply a change event; False when an equal or newer version was seen already."""
        field = f"{event['type']}:{event['id']}"
        if not await self.cache.accept_version(field, event["version"]):
            return False
        review = None
        if event["type"] == "Review":
            review = await self._review(event["id"])
        await self.evict(event["type"], event["id"], review=review)
        return True

    async def evict(self, entity_type: str, entity_id: str,
                    review: Mapping[str, Any] | None = None, *, own_write: bool = False,
                    ) -> None:
        """Evict what a change of this entity makes stale, on every replica."""
        await self.evict_many([(entity_type, entity_id, review)], own_write=own_write)

    async def evict_many(
        self, changes: Sequence[tuple[str, str, Mapping[str, Any] | None]], *,
        own_write: bool = False,
    ) -> None:
        """Evict what these changes (type, id, the review if a review) make stale, on every
        replica, in one round; for the gateway's own writes (`own_write`), return only once
        the other replicas have evicted too."""
        keys: list[tuple[Namespace, Hashable]] = []
        whole: list[str] = []
        for entity_type, entity_id, review in changes:
            rule = EVICTS.get(entity_type, Evicts())
            keys += [(self.namespaces[name], entity_id)
                     for name in rule.by_id if name in self.namespaces]
            whole += [name for name in rule.whole if name in self.namespaces]
            if entity_type == "Review":
                if review is not None:
                    keys += [(self.namespaces[REVIEWS_BY_PRODUCT.name], review["product_id"]),
                             (self.namespaces[REVIEWS_BY_AUTHOR.name], review["author_id"])]
                else:  # not known which lists hold it: evict them all
                    whole += [REVIEWS_BY_PRODUCT.name, REVIEWS_BY_AUTHOR.name]
            whole.append(response_namespace(entity_type))
        await self.cache.invalidate(keys, list(dict.fromkeys(whole)),
                                    wait_for_replicas=own_write)

    async def _review(self, review_id: str) -> Mapping[str, Any] | None:
        try:
            body = await self.client.request("reviews", "GET", "/reviews",
                                             params={"ids": review_id})
        except UpstreamError as err:
            log.warning("review %s not found for invalidation: %s", review_id, err)
            return None
        items = body.get("items") or []
        return items[0] if items else None
