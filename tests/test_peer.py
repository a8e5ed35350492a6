"""A peer's frames go straight to the socket only when nothing waits before them, and a
peer that stops reading is dropped without stalling its room."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Awaitable, Callable

import pycrdt

from collab import protocol
from collab.client import Client
from collab.metrics import Metrics
from collab.peer import Peer
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


class RecordingSocket:
    """What the writer task writes to, as aiohttp's WebSocketResponse would take it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.close_code: int | None = None

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, *, code: int, message: bytes) -> bool:
        self.close_code = code
        return True


class ScriptedConnection:
    """Takes frames at once while `room_for` says so, and drains into `socket`."""

    def __init__(self, room_for: list[bool], socket: RecordingSocket) -> None:
        self.room_for = room_for
        self.socket = socket
        self.written: list[bytes] = []
        self.writers: list[asyncio.Task[None]] = []
        self.aborted = False

    def write_now(self, frame: bytes) -> bool:
        if self.room_for.pop(0):
            self.written.append(frame)
            return True
        return False

    def start_writer(self, peer: Peer) -> asyncio.Task[None]:
        self.writers.append(asyncio.create_task(peer.drain(self.socket)))
        return self.writers[-1]

    def abort(self) -> None:
        self.aborted = True


async def test_frames_go_straight_out_until_one_has_to_wait_then_keep_their_order() -> None:
    socket = RecordingSocket()
    # The socket backs up at the second frame.
    connection = ScriptedConnection([True, False, True, True], socket)
    peer = Peer("test", max_outbox_bytes=1 << 20, connection=connection)
    writers, written = connection.writers, connection.written
    peer.send(b"1")
    assert writers == []  # nothing queued, no task
    peer.send(b"2")
    peer.send(b"3")
    await asyncio.wait_for(writers[0], 5)  # drains what waited, in order, and ends
    peer.send(b"4")  # nothing waits any more: straight out again
    assert len(writers) == 1
    peer.close(1000, "")
    assert peer.writer is not None  # a writer again, for the close
    await asyncio.wait_for(peer.writer, 5)
    assert written == [b"1", b"4"]
    assert socket.sent == [b"2", b"3"]
    assert socket.close_code == 1000


async def test_a_peer_too_slow_is_closed_and_its_connection_aborted_until_it_ends() -> None:
    socket = RecordingSocket()
    connection = ScriptedConnection([False] * 10, socket)  # never keeps up
    metrics = Metrics()
    peer = Peer("slow", max_outbox_bytes=4, connection=connection, metrics=metrics)
    peer.detach()  # an ended connection is never aborted again...
    peer.send(b"12345")
    peer.send(b"6")
    assert peer.close_code == 1013 and not connection.aborted
    live_connection = ScriptedConnection([False] * 10, socket)
    live = Peer("slow", max_outbox_bytes=4, connection=live_connection, metrics=metrics)
    live.send(b"12345")
    live.send(b"6")  # ...but a live one is: it reads nothing, a close frame would wait
    assert live.close_code == 1013 and live_connection.aborted
    assert metrics.slow_consumers_closed == 2
    for task in [*connection.writers, *live_connection.writers]:
        await asyncio.wait_for(task, 5)


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
