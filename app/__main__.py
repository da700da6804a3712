"""`python -m app`: run the gateway with uvicorn on the configured address."""

from __future__ import annotations

import logging
import sys

import uvicorn

from app.cache.hints import CacheHints
from app.settings import Settings, SettingsError
from schema import build_schema


def main() -> int:
    try:
        settings = Settings.from_env()
        # Cache-hint overrides name schema coordinates: check them against the schema now,
        # with a clear message, rather than fail inside the server's start-up.
        CacheHints(build_schema().as_str(), settings.cache_hints)
    except SettingsError as err:
        print(f"gateway: bad setting: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    if settings.workers > 1 and not settings.redis_url:
        print("gateway: several workers without REDIS_URL: each has its own cache, and a "
              "change event reaches only one of them", file=sys.stderr)
    print(f"gateway: GraphQL IDE at http://{settings.host}:{settings.port}/graphql", flush=True)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
