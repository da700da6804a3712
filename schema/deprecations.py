"""The deprecation policy: every deprecated field of the graph, with why, what replaces it,
when it was deprecated and when it goes.

A field is deprecated here (its `@deprecated` reason is built from this entry), stays served
until its removal date (at least six months later), and every answer that used it carries
a `Deprecation` header (RFC 9745, the deprecation date), a `Sunset` header (RFC 8594, the
removal date) and a warning in `extensions.warnings`; its use is counted per client in the
metrics (`gateway_deprecated_field_uses_total`), so the API owner knows who still reads it
before removing it (which is then a breaking change listed in schema/CHANGES.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

MIN_NOTICE_DAYS = 182  # removal at least six months after the deprecation


@dataclass(frozen=True)
class Deprecation:
    since: date
    removal: date
    replacement: str  # what to read instead, as a path from the same type
    why: str

    @property
    def reason(self) -> str:
        """The `@deprecated(reason:)`: what to use instead, and the removal date."""
        return (f"{self.why} Use `{self.replacement}` instead. Deprecated on "
                f"{self.since.isoformat()}; removal on {self.removal.isoformat()}.")

    def deprecation_header(self) -> str:
        """RFC 9745: `@` and the deprecation date as seconds since the epoch."""
        return f"@{int(datetime(*self.since.timetuple()[:3], tzinfo=UTC).timestamp())}"

    def sunset_header(self) -> str:
        """RFC 8594: the removal date as an HTTP-date."""
        return datetime(*self.removal.timetuple()[:3], tzinfo=UTC).strftime(
            "%a, %d %b %Y %H:%M:%S GMT")


DEPRECATED: dict[str, Deprecation] = {
    "Product.inStock": Deprecation(
        since=date(2026, 12, 3), removal=date(2027, 6, 30),
        replacement="inventory.inStock",
        why="Stock belongs with the rest of the stock figures."),
}


def reason(coordinate: str) -> str:
    """The deprecation reason of a field declared deprecated here."""
    return DEPRECATED[coordinate].reason
