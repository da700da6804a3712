"""The GraphQL IDE works with no internet: a real Chromium, every request to anything but the
gateway refused, runs the deep query and sends a pasted bearer token."""

from __future__ import annotations

import gzip
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from strawberry.http.ides import get_graphql_ide_html

from tests.conftest import QUERIES
from tests.devx.conftest import CHROMIUM, NODE_MODULES
from tests.harness import ROOT, Gateway, http, require, token

BROWSER_ARGS = [
    # As root in a container, without a GPU; and no calls home (refused here anyway).
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# The result pane's text: CodeMirror draws only the lines in view, its API has them all.
RESULT = "document.querySelector('.result-window .CodeMirror')?.CodeMirror.getValue() ?? ''"
# The open tab's document and variables, and the tabs' titles.
DOCUMENT = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue()"
VARIABLES = ("[...document.querySelectorAll('.graphiql-editor-tool .CodeMirror')]"
             ".map(e => e.CodeMirror.getValue())[0]")
TABS = "[...document.querySelectorAll('.graphiql-tab')].map(t => t.innerText.trim())"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(Path(CHROMIUM).exists(), "Debian's chromium")
    require((NODE_MODULES / "graphiql").is_dir(), "the IDE's npm packages (make assets)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield browser
        browser.close()


class Ide:
    """One IDE page with the network closed: requests to elsewhere are refused and noted."""

    def __init__(self, browser: Any, gateway: Gateway, query: str | None) -> None:
        """The IDE on `query` (a link that carries its document), or, for None, on its own
        first screen."""
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.elsewhere: list[str] = []
        self.page.route("**/*", self._route(gateway.url))
        self.page.goto(f"{gateway.url}/graphql"
                       + ("" if query is None else f"?q={urllib.parse.quote(query)}"))
        self.page.wait_for_selector(".graphiql-execute-button", timeout=30_000)

    def _route(self, base: str) -> Callable[[Any], None]:
        def route(route: Any) -> None:
            if route.request.url.startswith(base + "/"):
                route.continue_()
            else:
                self.elsewhere.append(route.request.url)
                route.abort("internetdisconnected")
        return route

    def run(self) -> dict[str, Any]:
        """Press the run button; the result pane's JSON, once it shows the answer the
        gateway sent (not the previous one)."""
        with self.page.expect_response(self._is_operation) as answer:
            self.page.click(".graphiql-execute-button")
        sent = answer.value.json()
        deadline = time.monotonic() + 30
        while True:
            shown = self.page.evaluate(RESULT)
            if shown and json.loads(shown) == sent:
                return sent
            assert time.monotonic() < deadline, f"the result pane shows {shown[:300]!r}"
            self.page.wait_for_timeout(50)

    @staticmethod
    def _is_operation(response: Any) -> bool:
        request = response.request  # (the IDE also POSTs its introspection query)
        return request.method == "POST" and "IntrospectionQuery" not in (request.post_data or "")


def test_the_ide_runs_the_deep_query_with_no_internet(
        browser: Any, gateway: Gateway, tmp_path: Path) -> None:
    deep = (QUERIES / "deep.graphql").read_text()
    ide = Ide(browser, gateway, deep)
    result = ide.run()
    ide.page.screenshot(path=str(tmp_path / "ide-deep-query.png"))
    products = result["data"]["topProducts"]
    assert len(products) == 10 and "errors" not in result
    assert products[0]["reviews"][0]["author"]["reviews"][0]["product"]["name"]
    assert ide.elsewhere == []  # nothing was fetched from outside, nothing was needed
    assert (tmp_path / "ide-deep-query.png").stat().st_size > 10_000


def test_a_bearer_token_pasted_in_the_headers_editor_is_sent(
        browser: Any, gateway: Gateway, tmp_path: Path) -> None:
    ide = Ide(browser, gateway, "{ me { id email } }")
    assert ide.run()["data"]["me"] is None  # anonymous
    ide.page.get_by_text("Headers", exact=True).click()
    editor = ide.page.locator(".graphiql-editor-tool .graphiql-editor:visible .CodeMirror")
    editor.click()
    ide.page.keyboard.insert_text(
        json.dumps({"Authorization": f"Bearer {token('u7', 'read:orders')}"}))
    result = ide.run()
    ide.page.screenshot(path=str(tmp_path / "ide-headers.png"))
    assert result["data"]["me"]["id"] == "u7"
    assert result["data"]["me"]["email"]


def test_the_docs_panel_shows_the_schema_s_descriptions(
        browser: Any, gateway: Gateway, tmp_path: Path) -> None:
    ide = Ide(browser, gateway, "{ __typename }")
    ide.page.get_by_label("Show Documentation Explorer").click()
    ide.page.locator(".graphiql-doc-explorer").get_by_text("Query", exact=True).click()
    panel = ide.page.locator(".graphiql-doc-explorer")
    panel.get_by_text("Read the shop's graph", exact=False).wait_for(timeout=30_000)
    assert "topProducts" in panel.inner_text()
    ide.page.screenshot(path=str(tmp_path / "ide-docs.png"))
    assert ide.elsewhere == []


def test_the_page_names_the_pinned_versions_of_package_json() -> None:
    """package.json pins what Strawberry's page loads, so the integrity hashes match: a
    Strawberry upgrade that moves them fails here, not in a browser."""
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]
    named = re.findall(r"https://unpkg\.com/((?:@[\w.-]+/)?[\w.-]+)@([\w.-]+)/",
                       get_graphql_ide_html("graphiql"))
    assert named and all(pinned.get(package) == version for package, version in named), named


def test_without_the_assets_the_page_loads_them_from_the_cdn_and_says_so(
        start: Callable[..., Gateway], tmp_path: Path) -> None:
    gateway = start(IDE_ASSETS_DIR=str(tmp_path))  # an empty node_modules
    status, _, page = http("GET", gateway.url + "/graphql", headers={"Accept": "text/html"})
    assert status == 200 and "https://unpkg.com/graphiql@" in page
    assert "/graphql/ide/" not in page
    log = gateway.process.log()
    assert "the IDE loads its scripts from unpkg.com" in log and "make assets" in log


def test_only_the_pages_own_files_are_served(gateway: Gateway) -> None:
    status, _, page = http("GET", gateway.url + "/graphql", headers={"Accept": "text/html"})
    assets = re.findall(r'"(/graphql/ide/[^"]+)"', page)
    assert len(assets) >= 5 and "unpkg.com" not in page
    for path in assets:
        status, headers, _ = http("GET", gateway.url + path)
        assert status == 200 and "immutable" in headers["cache-control"], path
    for path in ("graphiql@3.8.3/package.json", "graphql-http@1.23.1/lib/index.js",
                 "..%2F..%2Fpackage.json", "react@18.2.0/umd/react.development.js"):
        status, _, body = http("GET", f"{gateway.url}/graphql/ide/{path}")
        assert status == 404 and body["errors"][0]["extensions"]["code"] == "NOT_FOUND", path


def test_the_scripts_are_gzipped_for_clients_that_take_it(gateway: Gateway) -> None:
    path = "graphiql@3.8.3/graphiql.min.js"
    original = (NODE_MODULES / "graphiql" / "graphiql.min.js").read_bytes()
    request = urllib.request.Request(f"{gateway.url}/graphql/ide/{path}",
                                     headers={"Accept-Encoding": "gzip, br"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.headers["Content-Type"].startswith("text/javascript")
        assert answer.headers["Vary"] == "Accept-Encoding"
        body = answer.read()
    assert gzip.decompress(body) == original and len(body) < len(original) / 3


def test_the_ide_runs_a_subscription_and_shows_each_change_live(
        browser: Any, gateway: Gateway, dservices: Any, tmp_path: Path) -> None:
    """GraphiQL's subscription URL (graphql-transport-ws on /graphql): the result pane shows
    each stock change as the change event reaches the gateway (issue 18, point 4)."""
    import hashlib
    import hmac

    from tests.harness import EVENT_SECRET, metric_total

    pid = "p5"
    _, _, product = http("GET", dservices.url("catalog") + f"/products?ids={pid}")
    sku = product["items"][0]["sku"]
    ide = Ide(browser, gateway,
              f'subscription {{ stockChanged(productId: "{pid}") {{ sku quantity }} }}')
    ide.page.click(".graphiql-execute-button")
    deadline = time.monotonic() + 30
    while metric_total(gateway.url, "gateway_subscriptions_active") < 1:
        assert time.monotonic() < deadline, "the IDE's subscription never started"
        time.sleep(0.05)
    for quantity in (3, 4):
        _, _, stock = http("POST", dservices.url("inventory") + f"/inventory/{sku}/restock",
                           {"quantity": quantity})
        # The change event the inventory service would send (these services send none).
        event = json.dumps({"type": "Stock", "id": sku, "op": "update",
                            "version": time.time_ns(), "at": stock["updated_at"]}).encode()
        signature = hmac.new(EVENT_SECRET.encode(), event, hashlib.sha256).hexdigest()
        urllib.request.urlopen(urllib.request.Request(
            gateway.url + "/events", data=event, method="POST", headers={
                "Content-Type": "application/json", "X-Signature": f"sha256={signature}"}))
        expected = {"data": {"stockChanged": {"sku": sku, "quantity": stock["quantity"]}}}
        deadline = time.monotonic() + 30
        while True:
            shown = ide.page.evaluate(RESULT)
            if shown and json.loads(shown) == expected:
                break
            assert time.monotonic() < deadline, f"the result pane shows {shown[:300]!r}"
            ide.page.wait_for_timeout(50)
    ide.page.screenshot(path=str(tmp_path / "ide-subscription.png"))
    assert (tmp_path / "ide-subscription.png").stat().st_size > 10_000
    assert ide.elsewhere == []  # the WebSocket client came with the pinned scripts


def test_the_first_screen_is_a_product_page_beside_a_mutation_and_a_subscription(
        browser: Any, gateway: Gateway, dservices: Any, tmp_path: Path) -> None:
    """Opened with no document of its own, the IDE shows a product page query with its
    variables, ready to run, and tabs with a mutation (saying how to send the token it
    needs) and a subscription, each pointing to the README (issue 21, point 7)."""
    ide = Ide(browser, gateway, None)
    page = ide.page
    assert page.evaluate(TABS) == ["ProductPage", "AddReview", "StockChanged"]
    document = page.evaluate(DOCUMENT)
    assert "query ProductPage($id: ID!" in document and "README" in document
    assert json.loads(page.evaluate(VARIABLES)) == {"id": "p1", "reviews": 3}
    page.screenshot(path=str(tmp_path / "ide-first-screen.png"))
    result = ide.run()  # as it is: nothing to type
    _, _, catalog = http("GET", dservices.url("catalog") + "/products?ids=p1")
    product = result["data"]["product"]
    assert "errors" not in result
    assert product["name"] == catalog["items"][0]["name"] and product["price"]["amount"]
    assert product["category"]["name"] and 1 <= len(product["reviews"]) <= 3
    assert product["reviews"][0]["author"]["username"]

    # The mutation says how to sign in; without a token it is refused as it says.
    page.get_by_text("AddReview", exact=True).click()
    document = page.evaluate(DOCUMENT)
    assert "mutation AddReview" in document and "README" in document
    assert '"Authorization": "Bearer' in document and "Headers" in document
    refused = ide.run()
    assert (refused["data"] or {}).get("addReview") is None  # (its payload is non-null)
    assert refused["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    # Done as it says (the token pasted in Headers), it writes the review.
    page.get_by_text("Headers", exact=True).click()
    editor = page.locator(".graphiql-editor-tool .graphiql-editor:visible .CodeMirror")
    editor.click()
    page.keyboard.insert_text(
        json.dumps({"Authorization": f"Bearer {token('u7', 'write:reviews')}"}))
    written = ide.run()
    assert written["data"]["addReview"]["errors"] == [], written
    assert written["data"]["addReview"]["review"]["author"]["id"] == "u7"
    page.screenshot(path=str(tmp_path / "ide-first-screen-mutation.png"))

    # The subscription starts from its tab, over the WebSocket the page opens.
    from tests.harness import metric_total

    before = metric_total(gateway.url, "gateway_subscriptions_active")
    page.get_by_text("StockChanged", exact=True).click()
    document = page.evaluate(DOCUMENT)
    assert "subscription StockChanged" in document and "README" in document
    assert json.loads(page.evaluate(VARIABLES)) == {"productId": "p1"}
    page.click(".graphiql-execute-button")
    deadline = time.monotonic() + 30
    while metric_total(gateway.url, "gateway_subscriptions_active") < before + 1:
        assert time.monotonic() < deadline, "the subscription tab never subscribed"
        time.sleep(0.05)
    page.click(".graphiql-execute-button")  # (now the stop button)
    assert ide.elsewhere == []
