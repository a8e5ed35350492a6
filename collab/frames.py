"""Server-to-client WebSocket frames written straight to a connection's transport.

A broadcast hands one message to every peer of a room. Through aiohttp's `send_bytes`
each peer's writer task wakes, frames its own copy and returns to the loop: most of the
cost of a fan-out. Here a message is framed once (server frames are not masked, so the
bytes are the same for every reader) and written at once to each transport that has
room for it. A peer whose transport is backed up gets its frames through its writer
task, in order, with aiohttp's flow control. RFC 6455 section 5.2 is all it takes; this
is the one place that writes frames outside aiohttp.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

_BINARY = 0x82  # FIN, opcode 2
# asyncio pauses a writer past 64 KiB; beyond that, frames wait in the peer's outbox.
_BACKLOG_LIMIT = 64 * 1024


def binary_frame(payload: bytes) -> bytes:
    """`payload` as one unmasked binary frame."""
    size = len(payload)
    if size < 126:
        header = bytes((_BINARY, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", _BINARY, 126, size)
    else:
        header = struct.pack("!BBQ", _BINARY, 127, size)
    return header + payload


class FrameCache:
    """The frame of the message written last: a broadcast frames it once for all."""

    def __init__(self) -> None:
        self._payload = b""
        self._frame = binary_frame(b"")

    def frame(self, payload: bytes) -> bytes:
        if payload is not self._payload:  # holding it keeps its identity unique
            self._payload, self._frame = payload, binary_frame(payload)
        return self._frame


class DirectWriter:
    """Writes one connection's frames at once while its transport keeps up."""

    def __init__(
        self, transport: asyncio.Transport, closing: Callable[[], bool], cache: FrameCache
    ) -> None:
        self._transport = transport
        self._closing = closing
        self._cache = cache

    def __call__(self, payload: bytes) -> bool:
        """Write `payload` now; False if it must wait (backlog, or the socket closes)."""
        transport = self._transport
        if (
            self._closing()
            or transport.is_closing()
            or transport.get_write_buffer_size() > _BACKLOG_LIMIT
        ):
            return False
        transport.write(self._cache.frame(payload))
        return True
