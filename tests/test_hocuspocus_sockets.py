"""A socket outside any room, on a live server: a Hocuspocus socket before (and beside) its
documents, and one held before its 4401. Each is counted by the connection limits and
closed with 1001 by a shutdown, as the rooms' connections are."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pycrdt
import pytest

from collab import hocuspocus, protocol, ws
from collab.appkeys import ROOMS
from collab.auth import mint
from collab.config import Secret
from tests.conftest import RunningServer

SECRET = Secret("correct horse battery staple, long enough")
MakeServer = Callable[..., Awaitable[RunningServer]]


def auth(doc: str, token: str = "") -> bytes:
    """What a provider sends first for `doc`: its token (and no version)."""
    return hocuspocus.key_prefix(doc) + b"\x02\x00" + hocuspocus.key_prefix(token)


def authenticated(doc: str) -> bytes:
    return hocuspocus.encode_authenticated(hocuspocus.key_prefix(doc), read_only=False)


async def refused_status(url: str) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_a_bare_socket_counts_as_a_connection_and_each_document_once_more(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_connections_per_address=3)
    async with aiohttp.ClientSession() as session:
        first = await session.ws_connect(server.url)  # no document yet
        second = await session.ws_connect(server.url)
        await second.send_bytes(auth("a"))  # socket + document a
        async with asyncio.timeout(10):
            answer = await second.receive()
        assert answer.data == authenticated("a")
        # 3 counted: one more socket is refused before it opens, with the limit's status.
        assert await refused_status(server.url) == 429
        assert await refused_status(f"{server.url}/doc") == 429
        await first.close()
        # The first socket's place is free again.
        async with asyncio.timeout(10):
            while (status := await refused_status(server.url)) != 101:
                await asyncio.sleep(0.05)
        assert status == 101
        await second.close()


async def test_a_shutdown_closes_sockets_outside_rooms_with_1001(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws, "REFUSAL_HOLD_SECONDS", 60.0)  # held past the shutdown
    server = await make_server(auth="token", auth_secret=SECRET)
    token = mint(SECRET, "d", "write", now=time.time(), ttl=600)
    async with aiohttp.ClientSession() as session:
        bare = await session.ws_connect(server.url)
        held = await session.ws_connect(f"{server.url}/d")  # no credential: held, then 4401
        await held.send_bytes(protocol.encode_sync_step1(pycrdt.Doc().get_state()))
        open_doc = await session.ws_connect(server.url)
        await open_doc.send_bytes(auth("d", token))
        async with asyncio.timeout(10):
            assert (await open_doc.receive()).data == authenticated("d")
        await asyncio.sleep(0.2)  # the held socket is past its first-frame wait
        started = time.monotonic()
        stopping = asyncio.create_task(server.stop())
        codes = []
        for socket in (bare, held, open_doc):
            async with asyncio.timeout(10):
                while (await socket.receive()).type is aiohttp.WSMsgType.BINARY:
                    pass
            codes.append(socket.close_code)
        await stopping
    assert codes == [1001, 1001, 1001]
    assert time.monotonic() - started < 10


async def statuses_until_synced(socket: aiohttp.ClientWebSocketResponse, doc: str) -> list[bool]:
    """The SyncStatus answers for `doc` (saved or not) before the server's next SyncStep2,
    other frames skipped."""
    prefix = hocuspocus.key_prefix(doc)
    found: list[bool] = []
    async with asyncio.timeout(10):
        while True:
            frame = (await socket.receive()).data
            assert isinstance(frame, bytes), frame
            if not frame.startswith(prefix):
                continue
            body = frame[len(prefix) :]
            if body[:2] == b"\x00\x01":
                return found
            if body[:1] == b"\x08":
                found.append(body == hocuspocus.encode_sync_status(saved=True))


async def test_an_update_past_the_quota_is_answered_not_saved_and_never_saved(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_doc_bytes=4_000)
    big, small = pycrdt.Doc(), pycrdt.Doc()
    big.get("t", type=pycrdt.Text).insert(0, "x" * 10_000)
    small.get("t", type=pycrdt.Text).insert(0, "fits")
    prefix = hocuspocus.key_prefix("q")
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(server.url)
        await socket.send_bytes(auth("q"))
        await socket.send_bytes(prefix + protocol.encode_update(big.get_update()))
        await socket.send_bytes(prefix + protocol.encode_update(small.get_update()))
        await socket.send_bytes(prefix + protocol.encode_sync_step1(b"\x00"))
        # One answer per update, in order: the first refused, the second committed.
        assert await statuses_until_synced(socket, "q") == [False, True]
        await socket.close()
    assert server.runner.app[ROOMS].journal.metrics.updates_refused["quota"] == 1


async def test_a_hocuspocus_token_that_comes_late_at_a_document_url_still_opens_it(
    make_server: MakeServer,
) -> None:
    # Past the first-frame wait (0.5 s), with no credential in the URL: a slow link's
    # provider is still let in by its in-band token, not closed with 4401.
    server = await make_server(auth="token", auth_secret=SECRET)
    token = mint(SECRET, "late", "write", now=time.time(), ttl=600)
    async with aiohttp.ClientSession() as session:
        socket = await session.ws_connect(f"{server.url}/late")
        await asyncio.sleep(0.8)
        await socket.send_bytes(auth("late", token))
        async with asyncio.timeout(10):
            assert (await socket.receive()).data == authenticated("late")
        await socket.close()
