"""JSON responses, the error format, request parsing helpers and service-to-service calls."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeGuard

import aiohttp
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

CODES = {
    400: "BAD_INPUT", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT",
    429: "RATE_LIMITED", 500: "INTERNAL", 503: "UNAVAILABLE",
}


def code_for(status: int) -> str:
    return CODES.get(status) or ("BAD_INPUT" if status < 500 else "INTERNAL")


class JSONResponse(Response):
    """orjson is an order of magnitude faster than json.dumps for large batches."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def bad_input(message: str) -> ApiError:
    return ApiError(400, "BAD_INPUT", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(error_body(code, message), status, headers, "application/json")


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    # A known path with another method is still an unknown route: keep to the contract's
    # status list rather than answering 405.
    status = 404 if exc.status_code in (404, 405) else exc.status_code
    message = f"no route {request.method} {request.url.path}" if status == 404 else exc.detail
    return error_response(status, code_for(status), message)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    return error_response(500, "INTERNAL", "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: api_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_input("body is not valid JSON") from None


async def read_object(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_input("body must be a JSON object")
    return body


def count_items(scope: Scope, n: int) -> None:
    """Add to the batch-size counter of the current route (set up by the stats middleware)."""
    stats = scope.get("svc.stats")
    if stats is not None:
        key = scope["svc.key"]
        stats.items[key] = stats.items.get(key, 0) + n


def check_id_list(scope: Scope, values: Any, name: str, limit: int) -> list[str]:
    """Validate a batch of ids (query or body), counting them for /_stats."""
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise bad_input(f"{name} must be a list of non-empty strings")
    count_items(scope, len(values))
    if not values:
        raise bad_input(f"{name} must not be empty")
    if len(values) > limit:
        raise bad_input(f"at most {limit} {name} per request, got {len(values)}")
    return list(dict.fromkeys(values))  # each item found is answered once


def query_ids(request: Request, name: str, limit: int) -> list[str]:
    raw = request.query_params.get(name, "")
    return check_id_list(request.scope, raw.split(",") if raw else [], name, limit)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_input(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise bad_input(f"{name} must be between {low} and {high}")
    return value


START = "start"  # cursor payload meaning "before the first item" (from a first=0 page)


def encode_cursor(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_input("invalid cursor") from None


def is_int(value: object) -> TypeGuard[int]:
    # A TypeGuard, so that a checked body value is an int to the code after the check.
    return isinstance(value, int) and not isinstance(value, bool)


class Upstream:
    """Calls to another reference service; connection trouble becomes 503 UNAVAILABLE."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, name: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.name = name

    async def call(
        self,
        method: str,
        path: str,
        request: Request | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        hdrs = dict(headers or {})
        if request is not None and (tp := request.headers.get("traceparent")):
            hdrs["traceparent"] = tp
        data = None
        if body is not None:
            data = orjson.dumps(body)
            hdrs["Content-Type"] = "application/json"
        try:
            async with self.session.request(
                method, self.base_url + path, data=data, headers=hdrs,
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise ApiError(503, "UNAVAILABLE", f"{self.name} unavailable: {err!r}") from None
        try:
            return status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise ApiError(503, "UNAVAILABLE", f"{self.name} answered non-JSON") from None

    def unavailable(self, status: int, body: Any) -> ApiError:
        return ApiError(503, "UNAVAILABLE", f"{self.name} answered {status}: {body}")
