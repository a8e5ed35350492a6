"""Frames written straight to a transport: RFC 6455 framing, and when not to write."""

from __future__ import annotations

import asyncio

import pytest

from collab.frames import DirectWriter, FrameCache, binary_frame


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_binary_frames_have_the_length_form_their_size_needs(size: int, header: bytes) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert binary_frame(payload) == header + payload


class RecordingTransport(asyncio.Transport):
    """A transport that keeps what it was given, with a backlog we set."""

    def __init__(self, backlog: int = 0) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.backlog = backlog
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return self.closing


def test_a_broadcast_is_framed_once_and_written_to_every_transport() -> None:
    cache = FrameCache()
    transports = [RecordingTransport() for _ in range(3)]
    writers = [DirectWriter(t, lambda: False, cache) for t in transports]
    message = b"\x00\x02hello"
    assert all(write(message) for write in writers)
    frames = [t.written[0] for t in transports]
    assert frames[0] == b"\x82\x07" + message
    assert frames[0] is frames[1] is frames[2]


def test_nothing_is_written_to_a_backed_up_or_closing_connection() -> None:
    cache = FrameCache()
    backed_up = RecordingTransport(backlog=1 << 20)
    closing = RecordingTransport()
    closing.closing = True
    for writer in (
        DirectWriter(backed_up, lambda: False, cache),
        DirectWriter(closing, lambda: False, cache),
        DirectWriter(RecordingTransport(), lambda: True, cache),  # aiohttp is closing it
    ):
        assert not writer(b"message")
    assert backed_up.written == closing.written == []
