"""The GraphQL IDE's page: Strawberry's GraphiQL, with its scripts and styles served from the
pinned copies that npm installs (package.json), so that it works with no internet.

Strawberry's page loads them from unpkg.com, each with an integrity hash. package.json pins
exactly those versions, and the page keeps the hashes, so the browser itself checks that the
local copy is the file the CDN would have sent. When a copy is missing or another version,
the page is served as Strawberry ships it (CDN) and the log says so once, at start.

Its first screen is ours (`FIRST_SCREEN`): instead of GraphiQL's welcome text, a product
page query with its variables, beside tabs with a mutation (and how to send the token it
needs) and a live subscription, each pointing to the README. A link that carries its own
document (`?q=`) opens on that document, as before.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from strawberry.http.ides import get_graphql_ide_html

log = logging.getLogger("gateway")

ASSET_PATH = "/graphql/ide/"
# https://unpkg.com/<package>@<version>/<file>, the package possibly scoped (@graphiql/...).
CDN_URL = re.compile(r'https://unpkg\.com/((?:@[\w.-]+/)?[\w.-]+)@([\w.-]+)/([^"\s]+)')
DEFAULT_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}  # versioned URLs


class Ide:
    def __init__(self, modules: Path = DEFAULT_MODULES) -> None:
        html = get_graphql_ide_html("graphiql")
        self.assets: dict[str, Path] = {}
        self._gzipped: dict[str, bytes] = {}
        missing = []
        for package, version, file in CDN_URL.findall(html):
            local = modules / package / file
            if _installed_version(modules / package) == version and local.is_file():
                self.assets[f"{package}@{version}/{file}"] = local
            else:
                missing.append(f"{package}@{version}")
        self.local = not missing
        if self.local:
            html = CDN_URL.sub(lambda m: f"{ASSET_PATH}{m[1]}@{m[2]}/{m[3]}", html)
        else:
            self.assets.clear()
            log.warning("the IDE loads its scripts from unpkg.com (it needs internet): %s not "
                        "installed in %s; run `make assets` (npm ci) to serve them locally",
                        ", ".join(dict.fromkeys(missing)), modules)
        html = html.replace("<title>Strawberry GraphiQL</title>",
                            "<title>GraphQL gateway</title>")
        self.html = first_screen(html)

    async def asset(self, request: Request) -> Response:
        """One of the page's pinned files; nothing else under node_modules is served.
        Gzipped for a client that takes it: the page's files are 4.1 MB, 1.1 MB gzipped."""
        path = request.path_params["path"]
        file = self.assets.get(path)
        if file is None:
            return JSONResponse({"errors": [{"message": "Not found",
                                             "extensions": {"code": "NOT_FOUND"}}]}, 404)
        headers = {**IMMUTABLE, "Vary": "Accept-Encoding"}
        if "gzip" not in request.headers.get("accept-encoding", ""):
            return FileResponse(file, headers=headers)
        body = self._gzipped.get(path)
        if body is None:
            # Once per file and process, off the event loop (a few hundred milliseconds).
            body = self._gzipped[path] = await asyncio.to_thread(
                lambda: gzip.compress(file.read_bytes(), compresslevel=6, mtime=0))
        media_type = "text/css" if path.endswith(".css") else "text/javascript"
        return Response(body, media_type=media_type,
                        headers={**headers, "Content-Encoding": "gzip"})


# The IDE's first screen: one tab per example operation, the first one open. Each says what
# it needs and where to read more, in lines short enough for the editor's width at 1400
# pixels; the documents are the schema's (tests/devx/test_ide.py runs them in a browser).
README = """# Docs: the README (README.md), "For third-party
# developers": tokens, scopes, limits, error codes."""
FIRST_SCREEN: list[dict[str, str]] = [
    {
        "query": f"""# A product page in one request: the product, its
# price and stock, its category, its latest reviews
# and their authors. Run it with the play button
# (Ctrl-Enter); change the product in Variables.
# Every field is described in the docs (book icon).
# Next tabs: a mutation and a live subscription.
{README}
query ProductPage($id: ID!, $reviews: Int = 3) {{
  product(id: $id) {{
    id
    name
    description
    price {{ amount currency }}
    inventory {{ inStock quantity warehouse }}
    category {{ id name parent {{ id name }} }}
    averageRating
    reviewCount
    reviews(first: $reviews) {{
      id
      rating
      body
      createdAt
      author {{ id username }}
    }}
  }}
}}
""",
        "variables": '{\n  "id": "p1",\n  "reviews": 3\n}',
    },
    {
        "query": f"""# A mutation acts as a signed-in user: it needs a
# bearer token with its scope, here write:reviews
# (in development: make token SUB=u1 SCOPE=write:reviews).
# Open Headers below and paste:
#   {{"Authorization": "Bearer <the token>"}}
# Without a token: UNAUTHENTICATED; without the
# scope: FORBIDDEN. A refused input (a rating out
# of 1..5, say) comes back in `errors`.
{README}
mutation AddReview($input: AddReviewInput!) {{
  addReview(input: $input) {{
    review {{
      id
      rating
      body
      author {{ id username }}
      product {{ id reviewCount averageRating }}
    }}
    errors {{ code message field }}
  }}
}}
""",
        "variables": '{\n  "input": {\n    "productId": "p1",\n    "rating": 5,\n'
                     '    "body": "Does what it says.",\n    "idempotencyKey": "my-first-review"\n'
                     '  }\n}',
    },
    {
        "query": f"""# A live subscription: it runs until you stop it.
# Each change of the product's stock (an order
# placed or cancelled, a restock) shows on the right
# as it happens. The IDE subscribes over WebSocket
# (graphql-transport-ws) at /graphql; clients may
# also use Server-Sent Events: POST /graphql with
# Accept: text/event-stream (README: Subscriptions).
{README}
subscription StockChanged($productId: ID!) {{
  stockChanged(productId: $productId) {{
    sku
    quantity
    inStock
    warehouse
  }}
}}
""",
        "variables": '{\n  "productId": "p1"\n}',
    },
]
# Where Strawberry's page sets its default document, its variables and GraphiQL's props.
_WELCOME = re.compile(r"const EXAMPLE_QUERY = `.*?`;", re.S)
_VARIABLES = "React.useState(\n          parameters.variables,\n        );"
_PROPS = "return React.createElement(GraphiQL, {"


def first_screen(html: str) -> str:
    """Strawberry's page with our first screen: the example tabs, unless the address
    carries its own document (`?q=`). Unchanged, with a warning, if the page is not the one
    this was written for (a Strawberry upgrade: tests/devx/test_ide.py fails then)."""
    if not (_WELCOME.search(html) and _VARIABLES in html and _PROPS in html):
        log.warning("the IDE's page is not the expected Strawberry page: it opens on "
                    "GraphiQL's welcome text instead of the example operations")
        return html
    tabs = json.dumps(FIRST_SCREEN).replace("</", "<\\/")  # (inside a <script>)
    html = _WELCOME.sub(lambda _: f"const GATEWAY_TABS = {tabs};\n"
                        "      const EXAMPLE_QUERY = GATEWAY_TABS[0].query;", html, count=1)
    html = html.replace(_VARIABLES, "React.useState(\n          parameters.q ? "
                        "parameters.variables : GATEWAY_TABS[0].variables,\n        );")
    return html.replace(_PROPS, _PROPS + "\n          defaultTabs: parameters.q ? undefined "
                        ": GATEWAY_TABS,")


def _installed_version(package_dir: Path) -> str | None:
    try:
        return str(json.loads((package_dir / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None
