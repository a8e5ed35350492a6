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


async def test_frames_go_straight_out_until_one_has_to_wait_then_keep_their_order() -> None:
    peer = Peer("test", max_outbox_bytes=1 << 20)
    written: list[bytes] = []
    room_for = [True, False, True, True]  # the socket backs up at the second frame

    def write_now(frame: bytes) -> bool:
        if room_for.pop(0):
            written.append(frame)
            return True
        return False

    peer.write_now = write_now
    socket = RecordingSocket()
    writers: list[asyncio.Task[None]] = []

    def start_writer() -> asyncio.Task[None]:
        writers.append(asyncio.create_task(peer.drain(socket)))
        return writers[-1]

    peer.start_writer = start_writer
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
