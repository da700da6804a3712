"""Request statistics and fault injection: one pure-ASGI middleware shared by all six services.

The test hooks (/_stats, /_faults) and /healthz bypass both, so a test can always read and
reset them even while a service is made to hang or fail.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.http import JSONResponse, bad_input, code_for, error_body, read_object

BYPASS = frozenset({"/_stats", "/_stats/reset", "/_timing", "/_faults", "/healthz"})


@dataclass(frozen=True)
class Faults:
    latency_ms: float = 0
    jitter_ms: float = 0
    error_rate: float = 0.0
    error_status: int = 503
    hang_rate: float = 0.0
    rate_limit_rps: float | None = None
    # Off-contract answers: a share of requests answered 200 with a body the contract does
    # not allow: an HTML error page, JSON cut in half, or JSON with every value's type swapped.
    bad_body_rate: float = 0.0
    bad_body: str = "html"
    # Given in a PUT, restarts the fault dice from this seed: the same sequence of requests
    # then meets the same faults (tests that must not depend on luck).
    seed: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.jitter_ms or self.error_rate or self.hang_rate
                    or self.rate_limit_rps is not None or self.bad_body_rate)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, changes: dict[str, Any]) -> Faults:
        """A copy with ``changes`` applied; ValueError names the first bad field."""
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in _VALIDATORS:
                raise ValueError(f"unknown fault setting {key!r}")
            if not _VALIDATORS[key](value):
                raise ValueError(f"invalid value for {key}: {value!r}")
            clean[key] = value
        return replace(self, **clean)


BAD_BODIES = ("html", "truncated", "wrong_types")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_VALIDATORS: dict[str, Any] = {
    "latency_ms": lambda v: _number(v) and 0 <= v <= 600_000,
    "jitter_ms": lambda v: _number(v) and 0 <= v <= 600_000,
    "error_rate": lambda v: _number(v) and 0 <= v <= 1,
    "error_status": lambda v: isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599,
    "hang_rate": lambda v: _number(v) and 0 <= v <= 1,
    "rate_limit_rps": lambda v: v is None or (_number(v) and v > 0),
    "bad_body_rate": lambda v: _number(v) and 0 <= v <= 1,
    "bad_body": lambda v: v in BAD_BODIES,
    "seed": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
}
FAULT_FIELDS = tuple(_VALIDATORS)


class Control:
    """Per-service stats and fault settings, read by the middleware and the hook routes."""

    def __init__(self, faults: Faults, stopping: asyncio.Event) -> None:
        self.requests: dict[str, int] = {}
        self.items: dict[str, int] = {}
        # Seconds spent answering, per route, injected latency excluded (GET /_timing): the
        # benchmark tells the services' own share of a request's time from the gateway's.
        self.handling: dict[str, float] = {}
        self.stopping = stopping  # set at shutdown so hanging requests end
        self.rng = random.Random()
        self.set_faults(faults)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.tokens = max(1.0, faults.rate_limit_rps or 1.0)
        self.refilled = time.monotonic()

    def reset_stats(self) -> None:
        self.requests = {}
        self.items = {}
        self.handling = {}

    def take_token(self) -> int:
        """Token bucket of ``rate_limit_rps`` per second (burst of one second's worth); returns 0
        when the request may go on, else the Retry-After seconds."""
        rps = self.faults.rate_limit_rps
        if rps is None:
            return 0
        now = time.monotonic()
        self.tokens = min(max(1.0, rps), self.tokens + (now - self.refilled) * rps)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - self.tokens) / rps))


class ControlMiddleware:
    def __init__(self, app: ASGIApp, routes: list[Route], control: Control) -> None:
        self.app = app
        self.control = control
        # Route templates for the stats keys: static paths by dict, the rest by regex.
        self.static: dict[tuple[str, str], str] = {}
        self.dynamic: list[tuple[frozenset[str], Any, str]] = []
        for route in routes:
            methods = frozenset(route.methods or ())
            if "{" in route.path:
                self.dynamic.append((methods, route.path_regex, route.path))
            else:
                for method in methods:
                    self.static[(method, route.path)] = route.path

    def route_key(self, method: str, path: str) -> str:
        template = self.static.get((method, path))
        if template is None:
            for methods, regex, tmpl in self.dynamic:
                if method in methods and regex.match(path):
                    template = tmpl
                    break
            else:
                template = "(unmatched)"
        return f"{method} {template}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in BYPASS:
            await self.app(scope, receive, send)
            return
        control = self.control
        key = self.route_key(scope["method"], scope["path"])
        control.requests[key] = control.requests.get(key, 0) + 1
        scope["svc.key"] = key
        scope["svc.stats"] = control
        faults = control.faults
        if faults.active and await self.inject(faults, scope, receive, send):
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            control.handling[key] = control.handling.get(key, 0.0) + time.perf_counter() - started

    async def inject(self, faults: Faults, scope: Scope, receive: Receive, send: Send) -> bool:
        """Apply the fault settings; True when the request was answered (or dropped) here."""
        control = self.control
        retry_after = control.take_token()
        if retry_after:
            await _send_error(send, 429, f"rate limit of {faults.rate_limit_rps} rps exceeded",
                              retry_after)
            return True
        delay = faults.latency_ms + control.rng.uniform(0, faults.jitter_ms)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if faults.hang_rate and control.rng.random() < faults.hang_rate:
            await self.hang(receive, send)
            return True
        if faults.error_rate and control.rng.random() < faults.error_rate:
            await _send_error(send, faults.error_status, "injected fault", 1)
            return True
        if faults.bad_body_rate and control.rng.random() < faults.bad_body_rate:
            await self.answer_off_contract(faults.bad_body, scope, receive, send)
            return True
        return False

    async def answer_off_contract(self, kind: str, scope: Scope, receive: Receive,
                                  send: Send) -> None:
        if kind == "html":  # what a misconfigured proxy in front of the service sends
            body = b"<html><body><h1>Bad Gateway</h1></body></html>"
            content_type = b"text/html"
        else:
            chunks: list[bytes] = []

            async def keep(message: Any) -> None:
                if message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))

            await self.app(scope, receive, keep)
            body = b"".join(chunks)
            if kind == "truncated":
                body = body[: len(body) // 2]
            else:
                body = orjson.dumps(_swap_types(orjson.loads(body)))
            content_type = b"application/json"
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def hang(self, receive: Receive, send: Send) -> None:
        """Never answer: wait until the client goes away or the process stops."""
        stop = asyncio.ensure_future(self.control.stopping.wait())
        try:
            while True:
                recv = asyncio.ensure_future(receive())
                done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    recv.cancel()
                    await _send_error(send, 503, "shutting down", 1)
                    return
                if recv.result()["type"] == "http.disconnect":
                    return
        finally:
            stop.cancel()


def _swap_types(value: Any) -> Any:
    """Every string a number and every number a string, keeping the JSON's shape."""
    if isinstance(value, dict):
        return {k: _swap_types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap_types(v) for v in value]
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


async def _send_error(send: Send, status: int, message: str, retry_after: int) -> None:
    headers = [(b"content-type", b"application/json")]
    if status == 429:
        headers.append((b"retry-after", str(retry_after).encode()))
    body = error_body(code_for(status), message)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def hook_routes(control: Control) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def get_stats(request: Request) -> Response:
        return JSONResponse({"requests": control.requests, "items": control.items})

    async def get_timing(request: Request) -> Response:
        return JSONResponse({"handling_ms": {k: round(v * 1000, 3)
                                             for k, v in control.handling.items()}})

    async def reset_stats(request: Request) -> Response:
        control.reset_stats()
        return JSONResponse({"requests": {}, "items": {}})

    async def get_faults(request: Request) -> Response:
        return JSONResponse(control.faults.to_dict())

    async def put_faults(request: Request) -> Response:
        body = await read_object(request)
        try:
            faults = control.faults.updated(body)
        except ValueError as err:
            raise bad_input(str(err)) from None
        control.set_faults(faults)
        if isinstance(body, dict) and body.get("seed") is not None:
            control.rng = random.Random(body["seed"])
        return JSONResponse(faults.to_dict())

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/_stats", get_stats, methods=["GET"]),
        Route("/_stats/reset", reset_stats, methods=["POST"]),
        Route("/_timing", get_timing, methods=["GET"]),
        Route("/_faults", get_faults, methods=["GET"]),
        Route("/_faults", put_faults, methods=["PUT"]),
    ]
