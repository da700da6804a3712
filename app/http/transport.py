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


def security_headers(hsts: bool, html: bool) -> list[tuple[bytes, bytes]]:
    """The headers every response gets (an HTML page, the IDE's, loads its scripts)."""
    return HEADERS + ([HSTS] if hsts else []) + ([] if html else [API_CSP])


def log_unexpected(scope: Scope) -> None:
    log.exception("unexpected error", extra={"code": "INTERNAL_SERVER_ERROR",
                                             "path": scope.get("path")})


async def internal_error(scope: Scope, send: Send, headers: list[tuple[bytes, bytes]]) -> int:
    """The answer to a bug outside GraphQL (which masks its own), raised before the response
    started: logged in full, answered in JSON without a stack trace, with the trace id to
    find it by. Returns the status."""
    log_unexpected(scope)
    error: dict[str, object] = {"code": "INTERNAL_SERVER_ERROR"}
    trace_id = trace_id_of()
    if trace_id:
        error["traceId"] = trace_id
    body = orjson.dumps({"errors": [{"message": "Internal server error",
                                     "extensions": error}]})
    await send({"type": "http.response.start", "status": 500, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
    return 500


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool) -> None:
        self.app = app
        self.headers = security_headers(hsts, html=False)
        self.html_headers = security_headers(hsts, html=True)

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
                headers += self.html_headers if html else self.headers
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
            if started:
                log_unexpected(scope)
                raise
            await internal_error(scope, send, self.headers)


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip() for o in settings.cors_origins.split(",") if o.strip()]


def middleware(settings: Settings) -> list[Middleware]:
    origins = cors_origins(settings)
    out = [Middleware(SecurityHeaders, hsts=settings.hsts)]
    if origins:
        out.append(Middleware(CORSMiddleware, allow_origins=origins,
                              allow_methods=["GET", "POST"], allow_headers=ALLOWED,
                              expose_headers=EXPOSED, max_age=600))
    return out
