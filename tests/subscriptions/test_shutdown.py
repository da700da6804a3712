"""SIGTERM: every subscription connection ends the way its client library retries, before
the process exits."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from tests.harness import start_gateway
from tests.subscriptions.clients import WAIT_S, SSEStream, WSConnection, open_sse
from tests.subscriptions.conftest import Stack, wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")
QUERY = 'subscription { productChanged(id: "p701") { name } }'


async def test_sigterm_closes_subscriptions_retryably(stack: Stack,
                                                      session: aiohttp.ClientSession) -> None:
    gateway = await asyncio.to_thread(start_gateway, stack.tmp, stack.services)
    try:
        connection = await WSConnection.open(gateway.url)
        await connection.init()
        subscriber = await connection.subscribe("1", QUERY)
        stream = await open_sse(session, gateway.url, QUERY)
        assert isinstance(stream, SSEStream)
        await wait_active(session, gateway, 2)
        gateway.process.proc.send_signal(signal.SIGTERM)
        # graphql-ws: 1001 Going Away, and no `complete` first (it would end the
        # subscription for good): the client reconnects and subscribes again.
        ended = await subscriber.end()
        assert (ended.code, ended.complete) == (1001, False), ended
        assert "shutting down" in ended.reason
        # graphql-sse: the stream ends without `complete`, which it retries.
        assert not (await stream.subscriber.end()).complete
        # (uvicorn raises the signal again once it has shut down.)
        code = await asyncio.to_thread(gateway.process.proc.wait, WAIT_S)
        assert code in (0, -signal.SIGTERM)
        await stream.close()
        await connection.close()
    finally:
        gateway.stop()
    log = gateway.process.log()
    assert "closing 2 connections for shutdown" in log
    assert "Waiting for connections to close" not in log, log[-2000:]
