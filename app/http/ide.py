"""The GraphQL IDE's page: Strawberry's GraphiQL, with its scripts and styles served from the
pinned copies that npm installs (package.json), so that it works with no internet.

Strawberry's page loads them from unpkg.com, each with an integrity hash. package.json pins
exactly those versions, and the page keeps the hashes, so the browser itself checks that the
local copy is the file the CDN would have sent. When a copy is missing or another version,
the page is served as Strawberry ships it (CDN) and the log says so once, at start.
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
        self.html = html.replace("<title>Strawberry GraphiQL</title>",
                                 "<title>GraphQL gateway</title>")

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


def _installed_version(package_dir: Path) -> str | None:
    try:
        return str(json.loads((package_dir / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None
