"""`POST /events`: the services' change events, checked against their HMAC signature, then
handed to the cache's invalidator (`app.cache.invalidation`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.core.errors import HTTPRefusal
from app.http.negotiation import read_body
from app.telemetry import metrics
from loaders.entities import EVENT_TYPES

log = logging.getLogger("gateway.events")
EVENT_OPS = {"create", "update", "delete"}


# X-Signature: sha256=<the body's HMAC-SHA256, in hex>.
SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not SIGNATURE.fullmatch(header):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256="))


def _error(status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


async def receive_event(request: Request) -> Response:
    # Nothing is read before the signature header has its shape and the body fits
    # MAX_BODY_BYTES: an unsigned or oversized POST costs no memory.
    signature = request.headers.get("x-signature")
    if not signature or not SIGNATURE.fullmatch(signature):
        metrics.change_event("rejected")
        return _error(401, "UNAUTHENTICATED", "missing or wrong X-Signature")
    try:
        body = await read_body(request, request.app.state.settings.max_body_bytes)
    except HTTPRefusal as refused:
        metrics.change_event("rejected")
        return _error(refused.status_code, refused.code, refused.reason, refused.headers)
    if not signature_ok(request.app.state.settings.event_secret, body, signature):
        metrics.change_event("rejected")
        return _error(401, "UNAUTHENTICATED", "missing or wrong X-Signature")
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        metrics.change_event("rejected")
        return _error(400, "BAD_REQUEST", "body is not JSON")
    if not (
        isinstance(event, dict)
        and event.get("type") in EVENT_TYPES
        and event.get("op") in EVENT_OPS
        and isinstance(event.get("id"), str)
        and isinstance(event.get("version"), int)
    ):
        metrics.change_event("rejected")
        return _error(400, "BAD_REQUEST", "not a change event")
    request.app.state.events_received += 1
    invalidator = request.app.state.caching.invalidator
    if invalidator is None:
        # No entity cache, nothing to evict: the subscriptions hear the event here (with it,
        # they hear it once its eviction is applied, on every replica: `EntityCache.on_events`).
        request.app.state.hub.receive([event])
        outcome = "ignored"
    else:
        outcome = await invalidator.on_event(event)
    metrics.change_event(outcome)
    log.debug("event %s %s %s v%s %s", event["type"], event["id"], event["op"],
              event["version"], outcome)
    if outcome == "held":
        # Evicted here, but not on the other replicas (Redis is unreachable): not
        # acknowledged, so that the service delivers it again.
        return JSONResponse(
            {"error": {"code": "UNAVAILABLE",
                       "message": "the cache's shared level is unreachable: deliver again"}},
            status_code=503, headers={"Retry-After": "1"})
    return Response(status_code=204)
