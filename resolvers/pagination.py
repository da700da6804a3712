"""Relay connections over upstream listings whose cursors are opaque and page-relative.

The upstreams give only a `next_cursor` after a page, never a cursor per item. A gateway
cursor is therefore (upstream cursor, items to skip after it): the last edge of a full page
points at the upstream's own next cursor, so walking forward page by page never re-reads.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from strawberry import UNSET

from app.errors import BadUserInput

MAX_FIRST = 100


def encode_cursor(upstream_after: str | None, skip: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([upstream_after, skip])).decode()


def decode_cursor(cursor: str | None) -> tuple[str | None, int]:
    # UNSET (argument absent) and null both mean "from the start".
    if cursor is None or cursor is UNSET:
        return None, 0
    try:
        upstream_after, skip = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error, TypeError):
        raise BadUserInput("`after` is not a cursor this API issued", field="after") from None
    if not (upstream_after is None or isinstance(upstream_after, str)) or not (
        isinstance(skip, int) and skip >= 0
    ):
        raise BadUserInput("`after` is not a cursor this API issued", field="after")
    return upstream_after, skip


def check_first(first: int | None, default: int) -> int:
    first = default if first is None else first
    if not 0 <= first <= MAX_FIRST:
        raise BadUserInput(f"`first` must be between 0 and {MAX_FIRST}", field="first")
    return first


def page_request(first: int, after: str | None) -> tuple[str | None, int, int]:
    """(upstream cursor, items to skip, items to ask for) for a page of `first` after `after`."""
    upstream_after, skip = decode_cursor(after)
    # first=0 still asks for one item: hasNextPage must say whether any exist.
    return upstream_after, skip, skip + max(first, 1)


def connection(
    body: dict[str, Any], upstream_after: str | None, skip: int, first: int
) -> dict[str, Any]:
    items: list[Any] = body["items"]
    next_cursor: str | None = body.get("next_cursor")
    last = len(items) - 1
    edges = [
        {
            "cursor": encode_cursor(next_cursor, 0)
            if i == last and next_cursor is not None
            else encode_cursor(upstream_after, i + 1),
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
