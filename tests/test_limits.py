"""Every limit trips with its code, and a client that stops reading is dropped without
stalling its room."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Awaitable, Callable

import aiohttp
import pycrdt

from collab import protocol
from collab.client import Client
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


async def upgrade_status(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def close_code_after(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    async with asyncio.timeout(10):
        while not ws.closed:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
    return ws.close_code


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


async def test_connection_limits_answer_429_and_503(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_room=2, max_connections=4)
    async with aiohttp.ClientSession() as session:
        room = [await session.ws_connect(f"{server.url}/busy") for _ in range(2)]
        assert await upgrade_status(f"{server.url}/busy") == 429  # the room is full
        others = [await session.ws_connect(f"{server.url}/other{i}") for i in range(2)]
        assert await upgrade_status(f"{server.url}/another") == 503  # the server is full
        await room[0].close()
        await asyncio.sleep(0.1)
        assert await upgrade_status(f"{server.url}/busy") == 101  # a place came free
        for ws in room[1:] + others:
            await ws.close()


async def test_connections_per_address_are_limited(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_address=2)
    async with aiohttp.ClientSession() as session:
        kept = [await session.ws_connect(f"{server.url}/r{i}") for i in range(2)]
        assert await upgrade_status(f"{server.url}/r3") == 429
        for ws in kept:
            await ws.close()


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


async def test_an_update_past_the_quota_is_refused_and_the_editor_told(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_doc_bytes=3000)
    async with Client(server.url, "small") as writer, Client(server.url, "small") as reader:
        text = writer.doc.get("t", type=pycrdt.Text)
        text.insert(0, "fits")
        await reader.wait_for(lambda: text_of(reader) == "fits")
        text.insert(4, "x" * 5000)
        await writer.wait_for(lambda: writer.denied is not None)
        assert "quota" in (writer.denied or "")
        await asyncio.sleep(0.3)
        assert text_of(reader) == "fits"
    async with aiohttp.ClientSession() as session:
        big = pycrdt.Doc()
        big.get("t", type=pycrdt.Text).insert(0, "y" * 5000)
        async with session.post(
            f"{server.http}/api/docs/small/updates", data=big.get_update()
        ) as response:
            assert response.status == 413
            assert "quota" in (await response.json())["error"]["message"]


async def raw_websocket_that_never_reads(host: str, port: int, path: str) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that, after the handshake, never
    reads again: what a frozen browser tab looks like to the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await loop.sock_recv(sock, 1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


def masked_frame(payload: bytes) -> bytes:
    """One binary WebSocket frame as a client must send it (masked)."""
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x82, 0x80 | len(payload)]) + mask + body


async def test_a_client_that_stops_reading_is_dropped_and_the_room_goes_on(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_outbox_bytes=1024 * 1024)
    async with Client(server.url, "busy") as writer, Client(server.url, "busy") as reader:
        frozen = await raw_websocket_that_never_reads("127.0.0.1", server.port, "/busy")
        loop = asyncio.get_running_loop()
        presence = protocol.encode_awareness([protocol.AwarenessEntry(4242, 1, b'{"u":1}')])
        await loop.sock_sendall(frozen, masked_frame(presence))
        await reader.wait_for(lambda: 4242 in reader.awareness)
        text = writer.doc.get("t", type=pycrdt.Text)
        # About 10 MB that the frozen client never takes: more than the kernel's send
        # buffer for its socket (up to 4 MiB here), aiohttp's and then our outbox hold.
        for _batch in range(25):
            for _insert in range(10):
                text.insert(len(text), "z" * 40_000)
            # The room keeps going: a reader that reads keeps up, batch after batch.
            expected = len(text)
            await reader.wait_for(lambda n=expected: len(text_of(reader)) == n, timeout=10)
        # ... and the frozen client was dropped, its presence removed at once.
        await reader.wait_for(lambda: 4242 not in reader.awareness, timeout=10)
        frozen.close()


async def test_the_close_codes_are_documented(server: RunningServer) -> None:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for code in (1001, 1002, 1003, 1009, 1013, 4403, 4404, 4429, 4501):
        assert f"| {code} |" in readme, code
    del server  # the fixture only makes sure a server starts with the defaults


async def test_a_restore_is_held_to_the_quota_by_the_size_it_leaves(
    make_server: MakeServer,
) -> None:
    """A restore writes the version anew: what counts is the state it leaves (about the
    version's size), not the live state plus the copy, which would refuse every version
    over half the quota. A version over the quota (lowered since) is refused, unchanged."""
    server = await make_server(max_doc_bytes=64 * 1024)
    url = f"{server.http}/api/docs/big"
    async with Client(server.url, "big") as writer, aiohttp.ClientSession() as session:
        text = writer.doc.get("t", type=pycrdt.Text)
        text.insert(0, "v" * 40_000)
        await writer.flush()
        async with session.post(f"{url}/versions", json={"label": "40 KB"}) as response:
            assert response.status == 201
            version = (await response.json())["id"]
        # Made room for by a version in between: the quota counts the log since the last.
        del text[0 : len(text)]
        await writer.flush()
        async with session.post(f"{url}/versions", json={"label": "emptied"}) as response:
            assert response.status == 201
        text.insert(0, "n" * 30_000)
        async with asyncio.timeout(10):
            while (await (await session.get(f"{url}?format=text")).text()) != "n" * 30_000:
                await asyncio.sleep(0.05)
        async with session.post(f"{url}/versions/{version}/restore") as response:
            assert response.status == 200, await response.text()
        await writer.wait_for(lambda: text_of(writer) == "v" * 40_000)
        text.insert(0, "still editable ")  # the document is under its quota again
        await writer.flush()
        async with asyncio.timeout(10):
            while not (await (await session.get(f"{url}?format=text")).text()).startswith(
                "still editable v"
            ):
                await asyncio.sleep(0.05)
        assert writer.denied is None

    await server.stop()
    lowered = await make_server(max_doc_bytes=20 * 1024)  # the same database
    async with aiohttp.ClientSession() as session:
        restore = f"{lowered.http}/api/docs/big/versions/{version}/restore"
        async with session.post(restore) as response:
            assert response.status == 413
            assert "quota" in (await response.json())["error"]["message"]
        async with session.get(f"{lowered.http}/api/docs/big?format=text") as response:
            assert (await response.text()).startswith("still editable v")
