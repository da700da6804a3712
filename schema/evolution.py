"""Schema evolution: what a change of the served schema does to the clients of the committed
one (`schema/schema.graphql`), by graphql-core's `find_breaking_changes` (a removed field, a
changed type, a new required argument...) and `find_dangerous_changes` (a new enum value, a
changed default...), and the changelog (`schema/CHANGES.toml`) that must list each of them
with its reason before it may ship.

`make schema` refuses to rewrite the committed SDL past a change the changelog does not
list; `make test` (tests/gateway/test_schema_evolution.py) fails on one too, so a breaking
change cannot ship by accident, only by a decision written down.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from graphql import build_schema, find_breaking_changes, find_dangerous_changes

CHANGELOG = Path(__file__).with_name("CHANGES.toml")


@dataclass(frozen=True)
class Change:
    kind: str  # breaking or dangerous
    description: str  # graphql-core's: "FIELD_REMOVED: Product.inStock was removed."


@dataclass(frozen=True)
class Entry:
    change: str
    reason: str
    date: date


def changes(old_sdl: str, new_sdl: str) -> list[Change]:
    """What `new_sdl` changes for the clients of `old_sdl`."""
    old, new = build_schema(old_sdl), build_schema(new_sdl)
    return ([Change("breaking", f"{c.type.name}: {c.description}")
             for c in find_breaking_changes(old, new)]
            + [Change("dangerous", f"{c.type.name}: {c.description}")
               for c in find_dangerous_changes(old, new)])


def read_changelog(path: Path = CHANGELOG) -> list[Entry]:
    """The changelog's entries; a ValueError for one without a change, a reason or a date."""
    if not path.exists():
        return []
    entries = []
    for i, raw in enumerate(tomllib.loads(path.read_text()).get("change", [])):
        change, reason, when = raw.get("change"), raw.get("reason"), raw.get("date")
        if not isinstance(change, str) or not change:
            raise ValueError(f"{path.name}: entry {i + 1} names no change")
        if not isinstance(reason, str) or len(reason.strip()) < 10:
            raise ValueError(f"{path.name}: {change!r} gives no reason")
        if not isinstance(when, date):
            raise ValueError(f"{path.name}: {change!r} has no date (YYYY-MM-DD)")
        entries.append(Entry(change, reason.strip(), when))
    return entries


def unlisted(old_sdl: str, new_sdl: str, entries: list[Entry]) -> list[Change]:
    """The changes from `old_sdl` to `new_sdl` that no changelog entry lists."""
    listed = {entry.change for entry in entries}
    return [change for change in changes(old_sdl, new_sdl)
            if change.description not in listed]
