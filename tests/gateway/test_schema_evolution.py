"""Schema evolution: a change of the served schema that breaks (or endangers) the clients of
the committed schema/schema.graphql fails unless schema/CHANGES.toml lists it with a reason;
deprecated fields carry a reason and a removal date, stay served, and every answer that
used one says so (Deprecation and Sunset headers, a warning) and is counted per client."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from graphql import GraphQLObjectType, build_schema

from schema import SDL_FILE, printed_sdl
from schema.deprecations import DEPRECATED, MIN_NOTICE_DAYS
from schema.evolution import Entry, read_changelog, unlisted
from tests.harness import Gateway, Services, gateways, metric_total, token

ROOT = Path(__file__).resolve().parents[2]


def committed_in_git() -> str | None:
    """schema/schema.graphql as the last commit has it (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "show", "HEAD:schema/schema.graphql"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def test_the_served_schema_changes_nothing_the_changelog_does_not_list() -> None:
    """Against the committed SDL (the working tree's, and the last commit's): every breaking
    and dangerous change is in schema/CHANGES.toml with its reason."""
    served, entries = printed_sdl(), read_changelog()
    for name, committed in (("schema/schema.graphql", SDL_FILE.read_text()),
                            ("HEAD:schema/schema.graphql", committed_in_git())):
        if committed is None:
            continue
        missing = unlisted(committed, served, entries)
        assert missing == [], f"{name}: list in schema/CHANGES.toml (with a reason):\n" + \
            "\n".join(f"{c.kind}: {c.description}" for c in missing)


def test_an_unlisted_change_fails_and_a_listed_one_passes() -> None:
    committed = printed_sdl()
    # A breaking change: a field removed.
    removed = re.sub(r'\n  """[^"]*"""\n  reviewCount: Int!.*', "", committed, count=1)
    assert removed != committed
    missing = unlisted(committed, removed, [])
    assert [(c.kind, c.description) for c in missing] == [
        ("breaking", "FIELD_REMOVED: Field Product.reviewCount was removed.")]
    listed = Entry("FIELD_REMOVED: Field Product.reviewCount was removed.",
                   "Nobody read it for a year (gateway_deprecated_field_uses_total).",
                   date(2027, 6, 30))
    assert unlisted(committed, removed, [listed]) == []
    # A dangerous change: a default changed (clients that omit the argument get more).
    bigger = committed.replace("first: Int = 5\n  ): [Product!]!", "first: Int = 6\n  ): "
                               "[Product!]!", 1)
    assert bigger != committed
    assert [c.kind for c in unlisted(committed, bigger, [])] == ["dangerous"]


def test_the_changelog_needs_a_reason_and_a_date(tmp_path: Path) -> None:
    log = tmp_path / "CHANGES.toml"
    log.write_text('[[change]]\nchange = "FIELD_REMOVED: Product.x was removed."\n'
                   "date = 2027-01-01\n")
    with pytest.raises(ValueError, match="no reason"):
        read_changelog(log)
    log.write_text('[[change]]\nchange = "FIELD_REMOVED: Product.x was removed."\n'
                   'reason = "Replaced by y long ago."\n')
    with pytest.raises(ValueError, match="no date"):
        read_changelog(log)
    read_changelog()  # the real one is well-formed


def test_deprecated_fields_carry_a_reason_and_a_removal_date() -> None:
    served = build_schema(printed_sdl())
    deprecated = {f"{name}.{fname}": f.deprecation_reason
                  for name, t in served.type_map.items() if not name.startswith("__")
                  for fname, f in (getattr(t, "fields", None) or {}).items()
                  if getattr(f, "deprecation_reason", None)}
    assert set(deprecated) == set(DEPRECATED) and "Product.inStock" in deprecated
    for coordinate, reason in deprecated.items():
        entry = DEPRECATED[coordinate]
        assert reason == entry.reason
        assert f"removal on {entry.removal.isoformat()}" in reason
        assert f"`{entry.replacement}`" in reason
        assert entry.removal >= entry.since + timedelta(days=MIN_NOTICE_DAYS)
    # Still served, beside its replacement.
    product, stock = served.type_map["Product"], served.type_map["Stock"]
    assert isinstance(product, GraphQLObjectType) and isinstance(stock, GraphQLObjectType)
    assert "inStock" in product.fields
    assert "inStock" in stock.fields


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory,
          services: Services) -> Iterator[Callable[..., Gateway]]:
    with gateways(tmp_path_factory.mktemp("evolution"), services) as start_:
        yield start_


async def ask(session: aiohttp.ClientSession, gateway: Gateway, body: Any,
              headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    async with session.post(gateway.url + "/graphql", json=body, headers=headers or {}) as r:
        return r.headers, await r.json()


async def test_an_answer_that_used_a_deprecated_field_says_so(
    fresh: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    gateway = fresh()
    entry = DEPRECATED["Product.inStock"]
    used = [{"query": '{ product(id: "p1") { id inStock } }'},
            {"query": '{ product(id: "p1") { ...F } } fragment F on Product { inStock }'}]
    for body in used:
        headers, answer = await ask(http_session, gateway, body)
        assert isinstance(answer["data"]["product"]["inStock"], bool)  # still served
        assert headers["Deprecation"] == "@1796256000" == entry.deprecation_header()
        assert headers["Sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
        [warning] = answer["extensions"]["warnings"]
        assert warning["extensions"] == {
            "code": "DEPRECATED_FIELD", "coordinate": "Product.inStock",
            "replacement": "inventory.inStock", "deprecatedOn": "2026-12-03",
            "removalOn": "2027-06-30"}
        assert "errors" not in answer
    # Its replacement: no header, no warning.
    headers, answer = await ask(http_session, gateway,
                                {"query": '{ product(id: "p1") { inventory { inStock } } }'})
    assert "Deprecation" not in headers and "Sunset" not in headers
    assert "warnings" not in (answer.get("extensions") or {})
    # In a batch: the one answer says so.
    headers, answers = await ask(http_session, gateway, [
        {"query": '{ product(id: "p2") { id } }'}, used[0]])
    assert headers["Deprecation"] == entry.deprecation_header()
    assert "warnings" not in (answers[0].get("extensions") or {})
    assert answers[1]["extensions"]["warnings"][0]["extensions"]["coordinate"] == \
        "Product.inStock"


async def test_deprecated_field_uses_are_counted_by_the_bounded_client_names(
    fresh: Callable[..., Gateway], http_session: aiohttp.ClientSession
) -> None:
    """Labelled as the client requests are (outside development mode): by the
    apollographql-client-name, a new one admitted only from a signed-in caller, at most
    CLIENT_NAMES_MAX of them; `unknown` without the header, else `other`."""
    gateway = fresh(DEV_MODE="false", CLIENT_NAMES_MAX="1")
    used = {"query": '{ product(id: "p1") { id inStock } }'}
    signed = {"Authorization": f"Bearer {token('u3', 'read:catalog')}"}
    await ask(http_session, gateway, used)
    await ask(http_session, gateway, used, {**signed, "apollographql-client-name": "acme"})
    await ask(http_session, gateway, used, signed)
    # An anonymous caller's new client name is not trusted as a label: `other`...
    await ask(http_session, gateway, used, {"apollographql-client-name": "made-up"})
    # ...nor a signed-in caller's over the limit...
    await ask(http_session, gateway, used, {**signed, "apollographql-client-name": "second"})
    # ...but an admitted name is its own label whoever sends it.
    await ask(http_session, gateway, used, {"apollographql-client-name": "acme"})

    def uses(client: str) -> float:
        return metric_total(gateway.url, "gateway_deprecated_field_uses_total",
                            coordinate="Product.inStock", client_name=client)

    assert (uses("unknown"), uses("acme"), uses("other")) == (2, 2, 2)
    assert (uses("made-up"), uses("second")) == (0, 0)
    # The same labels as the requests per client.
    assert metric_total(gateway.url, "gateway_client_requests_total",
                        client_name="acme") == 2
