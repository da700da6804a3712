"""Transport hygiene: CORS (closed unless CORS_ORIGINS says), security headers on every
response, and a JSON 500 (with the trace id) for a failure outside GraphQL."""

from __future__ import annotations

import logging

import orjson
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config.settings import Settings
from app.telemetry import metrics
from app.telemetry.requests import ABORTED
from app.telemetry.tracing import trace_id_of

log = logging.getLogger("gateway")

HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# JSON answers load nothing and are never framed; the IDE's page (HTML) needs its scripts.
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
EXPOSED = ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After",
           "Deprecation", "Sunset"]
ALLOWED = ["Authorization", "Content-Type", "X-Request-Timeout-Ms", "X-Gateway-Debug",
           "X-Gateway-Cost", "traceparent", "tracestate",
           # Apollo Client's clientAwareness (per-client metrics).
           "apollographql-client-name", "apollographql-client-version"]


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.extra = [HSTS] if hsts else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                html = any(k == b"content-type" and v.startswith(b"text/html")
                           for k, v in headers)
                headers += HEADERS + self.extra + ([] if html else [API_CSP])
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, secured)
        except ClientDisconnect:
            # The client left (or was too slow: app.http.connections) before its request was
            # read: its doing, not a failure; there is nobody to answer.
            state = scope.setdefault("state", {})
            reason = state.setdefault(ABORTED, "client_disconnect")
            if reason == "client_disconnect":
                metrics.aborted(reason)  # (a timeout was counted where it fired)
            log.info("request abandoned before it was read: %s", reason.replace("_", " "),
                     extra={"reason": reason, "path": scope.get("path")})
        except Exception:
            # A bug outside GraphQL (which masks its own): JSON, no stack trace, the trace
            # id to find it by; logged in full.
            log.exception("unexpected error", extra={"code": "INTERNAL_SERVER_ERROR",
                                                     "path": scope.get("path")})
            if started:
                raise
            error: dict[str, object] = {"code": "INTERNAL_SERVER_ERROR"}
            trace_id = trace_id_of()
            if trace_id:
                error["traceId"] = trace_id
            body = orjson.dumps({"errors": [{"message": "Internal server error",
                                             "extensions": error}]})
            await secured({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


def middleware(settings: Settings) -> list[Middleware]:
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    out = [Middleware(SecurityHeaders, hsts=settings.hsts)]
    if origins:
        out.append(Middleware(CORSMiddleware, allow_origins=origins,
                              allow_methods=["GET", "POST"], allow_headers=ALLOWED,
                              expose_headers=EXPOSED, max_age=600))
    return out
