"""An OTLP/HTTP endpoint that accepts and discards spans, for measuring the gateway with its
exporter on (`python -m bench.otlp_sink PORT`). It counts what arrived at GET /count."""

from __future__ import annotations

import sys

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

OK = ExportTraceServiceResponse().SerializeToString()


def main(argv: list[str] | None = None) -> int:
    port = int((argv or sys.argv[1:])[0])
    count = {"spans": 0}

    async def traces(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        count["spans"] += sum(len(ss.spans) for rs in export.resource_spans
                              for ss in rs.scope_spans)
        return web.Response(body=OK, content_type="application/x-protobuf")

    async def counted(_: web.Request) -> web.Response:
        return web.json_response(count)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/count", counted)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
