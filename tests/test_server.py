"""The real server over real WebSockets: sync, presence, isolation, names, bad input, the
size quota."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
import pytest

from collab import protocol
from collab.appkeys import ROOMS
from collab.client import Client
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


def text_of(client: Client, name: str = "t") -> str:
    return str(client.doc.get(name, type=pycrdt.Text))


@asynccontextmanager
async def raw_socket(url: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, session.ws_connect(url, **kwargs) as ws:
        yield ws


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> protocol.Message:
    message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.BINARY, message
    return protocol.decode(message.data)


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes; return its close code."""
    async with asyncio.timeout(5):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return ws.close_code


async def write_and_unload(server: RunningServer, name: str, text: str) -> None:
    """Write `text` into `name`, then wait until its room has unloaded (with a snapshot);
    the server must run with a short room grace period."""
    async with Client(server.url, name) as writer:
        writer.doc.get("t", type=pycrdt.Text).insert(0, text)
        await writer.flush()
    rooms = server.runner.app[ROOMS]
    async with asyncio.timeout(10):
        while rooms.get(name) is not None:
            await asyncio.sleep(0.02)


async def test_concurrent_edits_converge_and_a_late_joiner_gets_everything(
    server: RunningServer,
) -> None:
    async with Client(server.url, "doc") as alice, Client(server.url, "doc") as bob:
        alice_text = alice.doc.get("t", type=pycrdt.Text)
        bob_text = bob.doc.get("t", type=pycrdt.Text)
        for i in range(20):
            alice_text.insert(0, "a")
            bob_text += f"b{i}"
        expected = 20 + sum(len(f"b{i}") for i in range(20))
        await alice.wait_for(lambda: len(text_of(alice)) == expected)
        await bob.wait_for(lambda: text_of(bob) == text_of(alice))
        async with Client(server.url, "doc") as late:
            assert text_of(late) == text_of(alice)


async def test_rooms_are_isolated(server: RunningServer) -> None:
    async with Client(server.url, "one") as one, Client(server.url, "two") as two:
        one.doc.get("t", type=pycrdt.Text).insert(0, "only in one")
        two.set_awareness({"user": "two"})
        await one.flush()
        async with Client(server.url, "one") as check:
            await check.wait_for(lambda: text_of(check) == "only in one")
        await asyncio.sleep(0.2)
        assert text_of(two) == ""
        assert two.client_id not in one.awareness


async def test_server_greets_with_sync_step1_then_presence(server: RunningServer) -> None:
    async with Client(server.url, "doc") as present:
        present.set_awareness({"user": "present"})
        await present.flush()
        await asyncio.sleep(0.1)
        async with raw_socket(f"{server.url}/doc") as ws:
            assert isinstance(await next_message(ws), protocol.SyncStep1)
            greeting = await next_message(ws)
            assert isinstance(greeting, protocol.AwarenessUpdate)
            assert [e.client_id for e in greeting.entries] == [present.client_id]


async def test_every_sync_step1_is_answered_with_sync_step2(server: RunningServer) -> None:
    async with raw_socket(f"{server.url}/doc") as ws:
        await next_message(ws)  # the server's SyncStep1
        for _ in range(3):
            await ws.send_bytes(protocol.encode_sync_step1(protocol.EMPTY_STATE_VECTOR))
            assert isinstance(await next_message(ws), protocol.SyncStep2)


async def test_query_awareness_is_answered_with_all_states(server: RunningServer) -> None:
    async with Client(server.url, "doc") as alice:
        alice.set_awareness({"user": "alice"})
        await alice.flush()
        await asyncio.sleep(0.1)
        async with raw_socket(f"{server.url}/doc") as ws:
            await next_message(ws)
            await next_message(ws)
            await ws.send_bytes(protocol.encode_query_awareness())
            answer = await next_message(ws)
            assert isinstance(answer, protocol.AwarenessUpdate)
            assert answer.entries[0].state == b'{"user":"alice"}'


async def test_awareness_reaches_everyone_including_the_sender(server: RunningServer) -> None:
    async with Client(server.url, "doc") as alice, Client(server.url, "doc") as bob:
        alice.set_awareness({"user": "alice"})
        await bob.wait_for(lambda: bob.awareness.get(alice.client_id) == {"user": "alice"})
        async with raw_socket(f"{server.url}/doc") as ws:
            await next_message(ws)
            await next_message(ws)
            entry = protocol.AwarenessEntry(424242, 1, b'{"user":"raw"}')
            await ws.send_bytes(protocol.encode_awareness([entry]))
            echoed = await next_message(ws)
            assert echoed == protocol.AwarenessUpdate((entry,))
            await alice.wait_for(lambda: 424242 in alice.awareness)


async def test_awareness_of_a_cut_connection_is_removed_at_once(server: RunningServer) -> None:
    async with Client(server.url, "doc") as watcher:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{server.url}/doc")
            entry = protocol.AwarenessEntry(777, 1, b'{"user":"gone"}')
            await ws.send_bytes(protocol.encode_awareness([entry]))
            await watcher.wait_for(lambda: 777 in watcher.awareness)
            # Cut the TCP connection without a close frame.
            connection = ws._response.connection
            assert connection is not None and connection.transport is not None
            connection.transport.abort()
            await watcher.wait_for(lambda: 777 not in watcher.awareness, timeout=3)


async def test_silent_peer_is_dropped_by_ping_and_its_presence_removed(
    make_server: MakeServer,
) -> None:
    server = await make_server(ping_seconds=0.5)
    async with Client(server.url, "doc") as watcher:
        # autoping=False: this client never answers the server's pings.
        async with raw_socket(f"{server.url}/doc", autoping=False) as ws:
            entry = protocol.AwarenessEntry(888, 1, b'{"user":"silent"}')
            await ws.send_bytes(protocol.encode_awareness([entry]))
            await watcher.wait_for(lambda: 888 in watcher.awareness)
            await watcher.wait_for(lambda: 888 not in watcher.awareness, timeout=5)


async def test_room_name_may_hold_slashes_and_ignores_the_query(server: RunningServer) -> None:
    async with Client(server.url, "team/notes/today", params={"token": "x"}) as writer:
        writer.doc.get("t", type=pycrdt.Text).insert(0, "deep")
        await writer.flush()
        async with Client(server.url, "team/notes/today") as reader:
            await reader.wait_for(lambda: text_of(reader) == "deep")
        async with Client(server.url, "team/notes") as other:
            assert text_of(other) == ""


async def test_base_path_prefix_is_not_part_of_the_name(make_server: MakeServer) -> None:
    server = await make_server(base_path="/collab")
    async with Client(f"{server.url}/collab", "doc") as writer:
        writer.doc.get("t", type=pycrdt.Text).insert(0, "prefixed")
        await writer.flush()
    async with Client(f"{server.url}/collab", "doc") as reader:
        assert text_of(reader) == "prefixed"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{server.url}/doc")


# The bare "/" is no longer among them: Hocuspocus providers connect there and name their
# documents in their frames (a y-websocket frame there is closed with 4400: see
# tests/test_interop_hocuspocus.py).
@pytest.mark.parametrize("path", ["/%00x", "/" + "n" * 600, "/%20padded"])
async def test_invalid_names_are_refused_before_the_upgrade(
    server: RunningServer, path: str
) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(server.url + path)
        assert refused.value.status == 400


async def test_healthz_answers(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.http}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00\x02\x09abc", 1002),  # length beyond the frame
        (b"\x00\x09\x00", 1002),  # unknown sync step
        (b"\x01\x03\x01\x01\x01", 1002),  # awareness entry cut short
        (protocol.encode_awareness([protocol.AwarenessEntry(1, 1, b"{bad")]), 1002),
        (protocol.encode_update(b"\x01\x01\x05\x00\x04junk"), 1002),  # undecodable update
        (protocol.encode_sync_step1(b"\x05"), 1002),  # bad state vector
        (b"\x09", 1003),  # unknown message type
        (protocol.encode_permission_denied("clients do not send this"), 1003),
    ],
)
async def test_bad_frames_close_only_their_connection(
    server: RunningServer, frame: bytes, code: int
) -> None:
    async with Client(server.url, "doc") as bystander:
        text = bystander.doc.get("t", type=pycrdt.Text)
        text += "before"
        async with raw_socket(f"{server.url}/doc") as ws:
            await ws.send_bytes(frame)
            assert await close_code(ws) == code
        text += " after"
        async with Client(server.url, "doc") as check:
            await check.wait_for(lambda: text_of(check) == "before after")
        assert not bystander.closed.is_set()


async def test_a_document_that_cannot_be_loaded_closes_with_1011_and_loses_nothing(
    make_server: MakeServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(room_grace_seconds=0.1)
    await write_and_unload(server, "stored", "kept")
    async with Client(server.url, "other") as bystander:
        text = bystander.doc.get("t", type=pycrdt.Text)
        text += "before"
        await bystander.flush()
        async with Client(server.url, "other") as check:  # answered once "before" is stored
            assert text_of(check) == "before"
        with closing(sqlite3.connect(db_path)) as conn:  # the database fails under the server
            conn.execute("ALTER TABLE versions RENAME TO elsewhere")
        async with raw_socket(f"{server.url}/stored") as ws:
            assert await close_code(ws) == 1011
        assert "cannot load 'stored'" in caplog.text
        with closing(sqlite3.connect(db_path)) as conn:
            conn.execute("ALTER TABLE elsewhere RENAME TO versions")
        text += " after"
        await bystander.flush()
        assert not bystander.closed.is_set()
    async with Client(server.url, "stored") as check:
        assert text_of(check) == "kept"
    async with Client(server.url, "other") as check:
        assert text_of(check) == "before after"


async def test_text_frame_is_refused_with_1003(server: RunningServer) -> None:
    async with raw_socket(f"{server.url}/doc") as ws:
        await ws.send_str("hello")
        assert await close_code(ws) == 1003


async def test_oversize_message_is_closed_with_1009(make_server: MakeServer) -> None:
    server = await make_server(max_message_bytes=1000)
    async with Client(server.url, "doc") as bystander:
        async with raw_socket(f"{server.url}/doc") as ws:
            await ws.send_bytes(protocol.encode_update(bytes(5000)))
            assert await close_code(ws) == 1009
        bystander.doc.get("t", type=pycrdt.Text).insert(0, "still fine")
        await bystander.flush()
        async with Client(server.url, "doc") as check:
            await check.wait_for(lambda: text_of(check) == "still fine")


async def test_large_state_arrives_in_frames_under_the_chunk_size(
    make_server: MakeServer,
) -> None:
    server = await make_server(sync_chunk_bytes=16 * 1024)
    async with Client(server.url, "big") as writer:
        text = writer.doc.get("t", type=pycrdt.Text)
        for i in range(3000):
            text.insert(i * 7 % (len(text) + 1), f"line {i} ")
        await writer.flush()
        expected = str(text)
        async with Client(server.url, "big") as check:
            await check.wait_for(lambda: text_of(check) == expected)
    sizes: list[int] = []
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    async with raw_socket(f"{server.url}/big") as ws:
        await next_message(ws)
        await ws.send_bytes(protocol.encode_sync_step1(protocol.EMPTY_STATE_VECTOR))
        while True:
            message = await ws.receive(timeout=5)
            sizes.append(len(message.data))
            decoded = protocol.decode(message.data)
            assert isinstance(decoded, protocol.SyncUpdate | protocol.SyncStep2)
            doc.apply_update(decoded.update)
            if isinstance(decoded, protocol.SyncStep2):
                break
    assert len(sizes) > 3
    assert max(sizes) <= 16 * 1024 + 1024
    assert str(doc.get("t", type=pycrdt.Text)) == expected


async def test_many_clients_joining_at_once_share_one_load(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(room_grace_seconds=0.1)
    await write_and_unload(server, "storm", "seed")  # the joins below must load it
    caplog.set_level(logging.DEBUG, logger="collab.rooms")
    clients = [Client(server.url, "storm") for _ in range(30)]
    await asyncio.gather(*(client.connect() for client in clients))
    try:
        assert all(text_of(client) == "seed" for client in clients)
        loads = [r for r in caplog.records if r.getMessage().startswith("storm: loaded")]
        assert len(loads) == 1
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def test_clients_joining_many_new_documents_at_once_all_get_in(
    server: RunningServer,
) -> None:
    clients = [Client(server.url, f"fresh-{i}") for i in range(30)]
    await asyncio.gather(*(client.connect() for client in clients))
    await asyncio.gather(*(client.close() for client in clients))


async def test_the_client_reports_every_update_it_receives(server: RunningServer) -> None:
    received: list[bytes] = []
    async with Client(server.url, "hooked", on_remote_update=received.append) as watcher:
        assert len(received) == 1  # the first sync
        async with Client(server.url, "hooked") as writer:
            writer.doc.get("t", type=pycrdt.Text).insert(0, "seen")
            await watcher.wait_for(lambda: text_of(watcher) == "seen")
    copy: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in received:
        copy.apply_update(update)
    assert str(copy.get("t", type=pycrdt.Text)) == "seen"


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


async def test_a_server_on_postgresql_keeps_documents_across_a_restart(
    postgres_url: str, make_server: Callable[..., Awaitable[RunningServer]]
) -> None:
    first = await make_server(db=postgres_url, room_grace_seconds=0.1)
    await write_and_unload(first, "doc", "kept in PostgreSQL")
    async with Client(first.url, "doc") as client:
        client.doc.get("t", type=pycrdt.Text).insert(0, "and more ")
        await client.flush()
    await first.stop()
    second = await make_server(db=postgres_url)
    async with Client(second.url, "doc") as reader:
        assert text_of(reader) == "and more kept in PostgreSQL"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{second.http}/api/docs/doc/versions") as response:
            assert response.status == 200
            assert (await response.json())["versions"]  # the unload took one


async def test_two_servers_on_one_postgresql_database_both_keep_every_edit(
    postgres_url: str, make_server: Callable[..., Awaitable[RunningServer]]
) -> None:
    """Two nodes, no bus yet: B's append lands after A's, so B finds the gap in the
    log's offsets, reads A's update from the database and relays it to its clients."""
    a, b = await make_server(db=postgres_url), await make_server(db=postgres_url)
    async with (
        Client(a.url, "doc") as alice,
        Client(a.url, "doc") as watcher,
        Client(b.url, "doc") as bob,
    ):
        alice.doc.get("t", type=pycrdt.Text).insert(0, "A")
        await watcher.wait_for(lambda: text_of(watcher) == "A")  # relayed: committed
        bob.doc.get("t", type=pycrdt.Text).insert(0, "B")
        await bob.flush()
        await bob.wait_for(lambda: sorted(text_of(bob)) == ["A", "B"])
