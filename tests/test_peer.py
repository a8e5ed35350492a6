"""A peer's frames go straight to the socket only when nothing waits before them."""

from __future__ import annotations

import asyncio

from collab.peer import Peer


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
    peer = Peer("slow", max_outbox_bytes=4, connection=connection)
    peer.detach()  # an ended connection is never aborted again...
    peer.send(b"12345")
    peer.send(b"6")
    assert peer.close_code == 1013 and not connection.aborted
    live_connection = ScriptedConnection([False] * 10, socket)
    live = Peer("slow", max_outbox_bytes=4, connection=live_connection)
    live.send(b"12345")
    live.send(b"6")  # ...but a live one is: it reads nothing, a close frame would wait
    assert live.close_code == 1013 and live_connection.aborted
    for task in [*connection.writers, *live_connection.writers]:
        await asyncio.wait_for(task, 5)
