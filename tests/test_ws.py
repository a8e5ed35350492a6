"""The WebSocket endpoint's read loop: the rate limits of a connection close it with 4429, and
only it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pycrdt

from collab import protocol
from collab.client import Client
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


async def close_code_after(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    async with asyncio.timeout(10):
        while not ws.closed:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
    return ws.close_code


async def test_too_many_messages_per_second_close_with_4429(make_server: MakeServer) -> None:
    server = await make_server(max_messages_per_second=10)  # bursts of 50
    async with Client(server.url, "calm") as bystander:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{server.url}/calm")
            for _ in range(200):
                await ws.send_bytes(protocol.encode_query_awareness())
            assert await close_code_after(ws) == 4429
        bystander.doc.get("t", type=pycrdt.Text).insert(0, "unaffected")
        await bystander.flush()
        assert not bystander.closed.is_set()


async def test_too_many_bytes_per_second_close_with_4429(make_server: MakeServer) -> None:
    server = await make_server(max_bytes_per_second=2000, max_message_bytes=4000)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{server.url}/bulk")
        state = b'{"pad":"' + b"x" * 1500 + b'"}'
        for clock in range(1, 20):
            entry = protocol.AwarenessEntry(1, clock, state)
            await ws.send_bytes(protocol.encode_awareness([entry]))
        assert await close_code_after(ws) == 4429
