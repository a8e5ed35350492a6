"""Peer: one client connection as a room sees it, with its own bounded outbox.

Rooms hand frames to `Peer.send`, which never blocks: a room must not wait for its
slowest reader. A frame goes straight to the socket when nothing waits before it and
the transport keeps up; otherwise one writer task per peer drains the outbox into it. A peer
whose unsent bytes pass the limit is closed, never silently skipped: for a CRDT a dropped
update is a diverged editor, while a closed one reconnects and resyncs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import Protocol

from collab.auth import OPEN_GRANT, Grant, Permission
from collab.metrics import Metrics

log = logging.getLogger(__name__)

# The closes that are no error (an error's close code is its class's, in collab.errors).
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013


class Transport(Protocol):
    """What a peer needs from its connection (aiohttp's WebSocketResponse has it)."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, *, code: int, message: bytes) -> bool: ...


class Connection(Protocol):
    """What a peer needs of the connection it is made with (collab.ws gives it aiohttp's)."""

    def write_now(self, frame: bytes) -> bool:
        """Write `frame` at once if the connection keeps up; False if it must wait."""
        ...

    def start_writer(self, peer: Peer) -> asyncio.Task[None]:
        """Start a task that runs `peer.drain` on the connection."""
        ...

    def abort(self) -> None:
        """End the connection at once, without a close handshake."""
        ...


class Peer:
    """A connection to one room: who it is, which awareness ids it owns, what it is owed."""

    def __init__(
        self,
        label: str,
        *,
        max_outbox_bytes: int,
        connection: Connection | None = None,
        grant: Grant = OPEN_GRANT,
        access: Permission = "admin",
        metrics: Metrics | None = None,
        log_fields: Mapping[str, object] | None = None,
        hocuspocus: bool = False,
    ) -> None:
        """
        Args:
            log_fields: what log lines about it say (collab.logs: its document, its peer
                address), also when they are logged on another connection's behalf.
            hocuspocus: it is one document of a Hocuspocus connection (collab.multiplex),
                which also takes that protocol's own messages, such as stateless ones.
        """
        self.label = label
        self.hocuspocus = hocuspocus
        self._metrics = metrics or Metrics()
        self.log_fields = dict(log_fields or {})
        self._connection = connection
        self._live = connection  # None once the connection has ended
        self.grant = grant  # the credential it came with
        self.access = access  # what it may do in its room: read, write or admin
        self.denied_at = float("-inf")  # when it was last told it may not write
        self.awareness_ids: set[int] = set()
        self.close_code: int | None = None
        self.close_reason = ""
        self._max_outbox_bytes = max_outbox_bytes
        # Made when first needed: most peers keep up and never queue a frame.
        self._outbox: deque[bytes] | None = None
        self._outbox_bytes = 0
        self._writer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Peer {self.label}>"

    def log_extra(self, close_code: int) -> dict[str, object]:
        """The `extra=` of a line saying it was closed with `close_code`."""
        return {**self.log_fields, "close_code": close_code}

    @property
    def outbox_bytes(self) -> int:
        """Bytes queued for this peer and not yet handed to its connection."""
        return self._outbox_bytes

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The task writing this peer's queued frames (or its close), while one runs."""
        return self._writer if self._writer is not None and not self._writer.done() else None

    def send(self, frame: bytes) -> None:
        """Queue one protocol message for this peer."""
        if self.close_code is not None:
            return
        if not self._outbox and self._live is not None and self._live.write_now(frame):
            return  # nothing waits before it, and the socket takes it now
        # Over the limit *before* this frame: a reader that keeps up can still be handed a
        # whole large frame or a large document's sync at once.
        if self._outbox_bytes > self._max_outbox_bytes:
            # Logged while another connection's message is handed out: name this one.
            log.warning(
                "%s: dropped, %d bytes not yet read",
                self,
                self._outbox_bytes,
                extra=self.log_extra(CLOSE_TRY_AGAIN_LATER),
            )
            self._metrics.slow_consumers_closed += 1
            self.close(CLOSE_TRY_AGAIN_LATER, "too slow: send buffer full")
            if self._live is not None:
                self._live.abort()  # it reads nothing, so a close frame would never get through
            return
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._ensure_writer()

    def close(self, code: int, reason: str) -> None:
        """Ask for the connection to be closed with `code`; unsent frames are discarded."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            self._outbox = None
            self._outbox_bytes = 0
            self._ensure_writer()

    def detach(self) -> None:
        """The connection has ended: nothing is written at once or aborted any more (a
        close still goes through the writer, which finds the socket closed)."""
        self._live = None

    def _ensure_writer(self) -> None:
        if self.writer is None and self._connection is not None:
            self._writer = self._connection.start_writer(self)

    async def drain(self, transport: Transport) -> None:
        """Write the queued frames to `transport`, in order; then, if the peer is closed,
        close the connection. Returns when nothing is left to do (a new writer starts
        when something is queued again)."""
        while self._outbox and self.close_code is None:
            frame = self._outbox.popleft()
            self._outbox_bytes -= len(frame)
            await transport.send_bytes(frame)
        if self.close_code is not None:
            await transport.close(code=self.close_code, message=self.close_reason.encode()[:120])
