"""`python -m bench.serve_variant`: the gateway (`python -m app`) with other uvicorn settings,
or another upstream client, for bench/server_settings.py. Never a way to run the gateway.

BENCH_SERVER holds a JSON object of uvicorn.Config arguments laid over the gateway's own
(app/http/server.py). "http": "httptools" or "h11" is uvicorn's own protocol in place of
the gateway's (GuardedHttpToolsProtocol: without its header and body timeouts, header size
limit and JSON 503). One key is the bench's own: "client": "pyreqwest" runs the gateway
with bench/reqwest_client.py's client in place of aiohttp's.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson
import uvicorn

ENV = "BENCH_SERVER"


def main() -> int:
    overrides: dict[str, Any] = orjson.loads(os.environ.get(ENV, "{}"))
    if overrides.pop("client", "aiohttp") == "pyreqwest":
        import app.http.app
        from bench.reqwest_client import ReqwestUpstreamClient

        # create_app reads the name when uvicorn calls it.
        setattr(app.http.app, "UpstreamClient", ReqwestUpstreamClient)  # noqa: B010

    class Config(uvicorn.Config):
        def __init__(self, app: Any, **kwargs: Any) -> None:
            super().__init__(app, **{**kwargs, **overrides})

    uvicorn.Config = Config  # type: ignore[misc,assignment]  # app/http/server.py reads it when it runs
    from app.__main__ import main as gateway

    return gateway([])


if __name__ == "__main__":
    sys.exit(main())
