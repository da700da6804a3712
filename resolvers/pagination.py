"""Relay connections over upstream listings whose cursors are opaque and page-relative.

The upstreams give only a `next_cursor` after a page, never a cursor per item. A gateway
cursor is therefore (connection, upstream cursor, items to skip after it): the last edge of
a full page points at the upstream's own next cursor, so walking forward by `endCursor` never
re-reads, and any other edge's cursor continues right after that edge. The connection (such
as the category's id) is part of the cursor, so one connection's cursor cannot be replayed on
another's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from strawberry import UNSET

from app.core.errors import BadUserInput
from loaders.registry import Loaders
from loaders.spec import Item, ListSpec
from loaders.then import Then

MAX_FIRST = 100  # also the upstreams' page limit


def encode_cursor(connection: str, upstream_after: str | None, skip: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([connection, upstream_after, skip])).decode()


def decode_cursor(connection: str, cursor: str | None) -> tuple[str | None, int]:
    # UNSET (argument absent) and null both mean "from the start".
    if cursor is None or cursor is UNSET:
        return None, 0
    try:
        owner, upstream_after, skip = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error, TypeError):
        raise BadUserInput("`after` is not a cursor this API issued", field="after") from None
    if (
        owner != connection
        or not (upstream_after is None or isinstance(upstream_after, str))
        or not (isinstance(skip, int) and 0 <= skip <= MAX_FIRST)
    ):
        raise BadUserInput("`after` is not a cursor of this list", field="after")
    return upstream_after, skip


def check_first(first: int | None, default: int, maximum: int = MAX_FIRST) -> int:
    first = default if first is None else first
    if not 0 <= first <= maximum:
        raise BadUserInput(f"`first` must be between 0 and {maximum}", field="first")
    return first


def page_request(connection: str, first: int, after: str | None) -> tuple[str | None, int, int]:
    """(upstream cursor, items to skip, items to ask for) for `first` items after `after`."""
    upstream_after, skip = decode_cursor(connection, after)
    # first=0 still asks for one item: hasNextPage must say whether any exist. Continuing
    # from the middle of a page may ask for more than the upstream's page limit: the page is
    # then shorter than `first`, and hasNextPage and endCursor say where to go on.
    return upstream_after, skip, min(skip + max(first, 1), MAX_FIRST)


def connection(
    body: dict[str, Any], connection_id: str, upstream_after: str | None, skip: int, first: int
) -> dict[str, Any]:
    items: list[Any] = body["items"]
    next_cursor: str | None = body.get("next_cursor")
    last = len(items) - 1
    edges = [
        {
            "cursor": encode_cursor(connection_id, next_cursor, 0)
            if i == last and next_cursor is not None
            else encode_cursor(connection_id, upstream_after, i + 1),
            "node": items[i],
        }
        for i in range(skip, min(skip + first, len(items)))
    ]
    has_next = next_cursor is not None or len(items) > skip + first
    return {
        "edges": edges,
        "page_info": {
            "has_next_page": has_next,
            "end_cursor": edges[-1]["cursor"] if edges else None,
        },
    }


def page(loaders: Loaders, spec: ListSpec, parent_id: str, first: int | None, after: str | None,
         default: int) -> Item | Then:
    """A Relay connection of `parent_id`'s list: the upstream page through the request's
    loaders (deduped and cached), turned into edges with cursors."""
    n = check_first(first, default)
    upstream_after, skip, ask = page_request(parent_id, n, after)
    return loaders.then(spec, (parent_id, ask, upstream_after),
                        lambda body: connection(body, parent_id, upstream_after, skip, n))
