"""The npm clients client teams use, run with Node.js on the same fixtures: graphql-ws
(graphql-transport-ws, with `ws`) and graphql-sse (distinct connections), each receiving
the stock changes of a product as they happen (issue 18, point 4)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from services.seed import Dataset
from tests.clients.conftest import node_with
from tests.harness import ROOT
from tests.subscriptions.conftest import Changes, Stack, bearer, wait_active

pytestmark = pytest.mark.asyncio(loop_scope="session")
SCRIPT = Path(__file__).with_name("js_subscribe.mjs")


@pytest.mark.parametrize(("protocol", "package"), [("ws", "graphql-ws"),
                                                   ("sse", "graphql-sse")])
async def test_the_npm_client_receives_each_change(
        protocol: str, package: str, stack: Stack, session: aiohttp.ClientSession,
        changes: Changes, dataset: Dataset) -> None:
    node = node_with(package, "ws")
    pid = "p902" if protocol == "ws" else "p903"
    sku = dataset.products[pid]["sku"]
    token = bearer("u92")["Authorization"].removeprefix("Bearer ")
    query = f'subscription {{ stockChanged(productId: "{pid}") {{ sku quantity }} }}'
    client = await asyncio.create_subprocess_exec(
        node, str(SCRIPT), protocol, stack.memory.url + "/graphql", token, query, "2",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert client.stdout is not None and client.stderr is not None
    received = []
    try:
        await wait_active(session, stack.memory, 1)
        restocked = []
        for quantity in (2, 3):  # each change once the one before was heard
            restocked.append(await changes.restock(sku, quantity))
            line = await asyncio.wait_for(client.stdout.readline(), 30)
            assert line, (await client.stderr.read()).decode()
            received.append(json.loads(line))
        assert await asyncio.wait_for(client.wait(), 30) == 0  # it exits after two
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
    assert received == [{"data": {"stockChanged": {"sku": sku, "quantity": q}}}
                        for q in restocked]
