"""`POST /events`: only correctly signed change events are accepted."""

from __future__ import annotations

import hashlib
import hmac

import aiohttp
import orjson

from tests.harness import EVENT_SECRET, Gateway

EVENT = {"type": "Product", "id": "p42", "op": "update", "version": 7,
         "at": "2026-11-22T10:00:00Z"}


def signed(body: bytes, secret: str = EVENT_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Signature": f"sha256={digest}", "Content-Type": "application/json"}


async def post(session: aiohttp.ClientSession, gateway: Gateway, body: bytes,
               headers: dict[str, str]) -> tuple[int, bytes]:
    async with session.post(gateway.url + "/events", data=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def test_signed_event_is_accepted(
    gateway: Gateway, http_session: aiohttp.ClientSession
) -> None:
    body = orjson.dumps(EVENT)
    assert (await post(http_session, gateway, body, signed(body)))[0] == 204


async def test_unsigned_or_forged_event_is_refused(
    gateway: Gateway, http_session: aiohttp.ClientSession
) -> None:
    body = orjson.dumps(EVENT)
    status, raw = await post(http_session, gateway, body, {"Content-Type": "application/json"})
    assert status == 401 and orjson.loads(raw)["error"]["code"] == "UNAUTHENTICATED"
    forged = signed(body, secret="another-secret-of-enough-length-0123456789")
    assert (await post(http_session, gateway, body, forged))[0] == 401
    # A valid signature over other bytes does not cover this body.
    assert (await post(http_session, gateway, body + b" ", signed(body)))[0] == 401


async def test_malformed_event_is_bad_request(
    gateway: Gateway, http_session: aiohttp.ClientSession
) -> None:
    for body in (b"not json", orjson.dumps({"type": "Product"}), orjson.dumps([1, 2])):
        status, raw = await post(http_session, gateway, body, signed(body))
        assert status == 400, body
        assert orjson.loads(raw)["error"]["code"] == "BAD_REQUEST"
