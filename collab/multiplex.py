"""A Hocuspocus connection: several documents over one WebSocket, each its own `Peer` in its
room, with its own permission, awareness and lifecycle. Translation only (collab.hocuspocus
in, `Room.receive`); a document refused or closed gets the protocol's answer for it, and
the socket stays up for the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack

from aiohttp import WSMessage, WSMsgType, web

from collab import hocuspocus, protocol, ws
from collab.appkeys import FRAMES, GUARD, LOOSE, METRICS, ROOMS, SETTINGS
from collab.auth import allows
from collab.errors import (
    CollabError,
    Forbidden,
    InvalidDocName,
    TokenExpired,
    TooMany,
    UnsupportedMessage,
)
from collab.frames import DirectWriter
from collab.hooks import Stateless
from collab.names import check_doc_name
from collab.peer import CLOSE_GOING_AWAY, Peer
from collab.room import Room

log = logging.getLogger(__name__)

# Closes that end the whole connection, not one document: the server going away, and an
# expired token, after which the provider reconnects and sends its refreshed one.
_SOCKET_CLOSES = frozenset({CLOSE_GOING_AWAY, TokenExpired.close_code})
_SAVED = hocuspocus.encode_sync_status(saved=True)


class _Doc:
    """One document open on the connection: its peer, and what ends with it."""

    def __init__(self, key: str, room: Room, admission: ExitStack) -> None:
        self.key = key
        self.prefix = hocuspocus.key_prefix(key)
        self.room = room
        self.admission = admission
        self.peer: Peer
        self.expiry: asyncio.TimerHandle | None = None
        self.told_read_only = False  # whether the provider knows its scope is readonly


class _DocTransport:
    """What a document's peer writes to: the shared socket, its frames keyed (the
    `peer.Connection` and, for its writer task, the `peer.Transport`)."""

    write_now: Callable[[bytes], bool]

    def __init__(self, mux: Multiplex, doc: _Doc) -> None:
        self._mux = mux
        self._doc = doc
        transport = mux.request.transport
        if isinstance(transport, asyncio.Transport):
            self._direct = DirectWriter(transport, lambda: mux.ws.closed, mux.request.app[FRAMES])
            self.write_now = self._write_now
        else:
            self.write_now = ws.never

    def _translate(self, frame: bytes) -> tuple[bytes, bool]:
        """`frame` as this document's message, and whether it tells the provider it is
        now read-only: the room's first refusal after a downgrade does (Authenticated
        with scope readonly), later ones are "not saved"."""
        doc = self._doc
        if frame[:1] == b"\x02" and not doc.told_read_only and not allows(doc.peer.access, "write"):
            return hocuspocus.encode_authenticated(doc.prefix, read_only=True), True
        return hocuspocus.from_room(doc.prefix, frame), False

    def _write_now(self, frame: bytes) -> bool:
        message, tells = self._translate(frame)
        if not self._direct(message):
            return False  # queued: translated again when it goes
        self._doc.told_read_only |= tells
        return True

    def start_writer(self, peer: Peer) -> asyncio.Task[None]:
        return asyncio.create_task(ws.write(peer, self), name=f"writer {peer.label}")

    def abort(self) -> None:
        ws.abort_request(self._mux.request)

    async def send_bytes(self, data: bytes) -> None:
        message, tells = self._translate(data)
        self._doc.told_read_only |= tells
        await self._mux.ws.send_bytes(message)

    async def close(self, *, code: int, message: bytes) -> bool:
        if code in _SOCKET_CLOSES:
            return await self._mux.ws.close(code=code, message=message)
        self._mux.end(self._doc, code)
        reason = message.decode("utf-8", "replace")
        await self._mux.ws.send_bytes(hocuspocus.encode_close(self._doc.prefix, reason))
        return True


class Multiplex:
    """Serves one Hocuspocus WebSocket until it closes."""

    def __init__(self, request: web.Request, socket: web.WebSocketResponse) -> None:
        self.request = request
        self.ws = socket
        self._settings = request.app[SETTINGS]
        self._metrics = request.app[METRICS]
        self._hooks = request.app[ROOMS].journal.hooks
        self._address = ws.peer_address(request)
        self._docs: dict[str, _Doc] = {}

    async def serve(self, first: bytes | None) -> None:
        """Read frames (`first` already read) until the socket closes; then leave all."""
        self._metrics.connections_open += 1
        loose = self.request.app[LOOSE]
        loose.add(self.ws)  # with no document open, no room closes it on shutdown
        try:
            if first is None or await self._handle(first):
                await self._read(bare=first is None)
        finally:
            writers = []
            for doc in list(self._docs.values()):
                self.end(doc, doc.peer.close_code or self.ws.close_code or 1000)
                if (writer := doc.peer.writer) is not None:
                    writers.append(writer)
            await self.ws.close()
            for writer in writers:
                await ws.finish(writer, self.request)
            ws.stop_heartbeat(self.ws)
            loose.discard(self.ws)
            self._metrics.connections_open -= 1

    async def _read(self, *, bare: bool) -> None:
        """Read frames; with `bare` (no document in the URL), the first must open a
        Hocuspocus document: a y-websocket client there has no document to sync."""
        messages, volume = ws.read_limits(self._settings, time.monotonic())
        handled = 0
        async for message in self.ws:
            handled += 1
            if bare and handled == 1 and not _opens(message):
                await self._refuse(
                    InvalidDocName.close_code, "no document name in the URL, nor a Hocuspocus one"
                )
                return
            if handled % ws.YIELD_EVERY == 0:
                await asyncio.sleep(0)  # as collab.ws: a burst must not hold the loop
            now = time.monotonic()
            size = len(message.data) if isinstance(message.data, bytes | str) else 0
            self._metrics.received_bytes += size
            if not (messages.allow(1, now) and volume.allow(size, now)):
                await self._refuse(TooMany.close_code, "too many messages or bytes per second")
                return
            if message.type is WSMsgType.BINARY:
                if not await self._handle(message.data):
                    return
            elif message.type is WSMsgType.TEXT:
                await self._refuse(UnsupportedMessage.close_code, "text frames are not Hocuspocus")
                return
            elif message.type is WSMsgType.ERROR:
                log.warning(
                    "%s: Hocuspocus connection closed: %s", self._address, self.ws.exception()
                )
                return

    async def _refuse(self, code: int, reason: str) -> None:
        log.warning(
            "%s: closed with %d: %s", self._address, code, reason, extra={"close_code": code}
        )
        if not self._docs:  # else counted for each document as it ends
            self._metrics.closed(code)
        await self.ws.close(code=code, message=reason.encode()[:120])

    async def _handle(self, frame: bytes) -> bool:
        """Act on one frame; False once the connection is to close."""
        try:
            key, message = hocuspocus.decode(frame)
        except CollabError as exc:
            known = hocuspocus.peek_key(frame)
            doc = self._docs.get(known) if known is not None else None
            if doc is None:
                # Nothing says which document it was for: the connection goes.
                await self._refuse(exc.close_code, str(exc))
                return False
            ws.close_peer(doc.peer, exc.close_code, str(exc))
            return True
        doc = self._docs.get(key)
        if isinstance(message, hocuspocus.Auth):
            if doc is None:
                await self._open(key, message.token)
        elif doc is None or isinstance(message, hocuspocus.Pong):
            # A refused document's sync and awareness: the provider sends them right
            # after its token, without waiting for the answer.
            log.debug("%s: ignored a %s for %r", self._address, type(message).__name__, key)
        elif isinstance(message, hocuspocus.Close):
            self.end(doc, 1000)  # the client is gone from it: nothing to tell it
        elif isinstance(message, hocuspocus.Stateless):
            self._stateless(doc, message.payload)
        else:
            self._receive(doc, message)
        return True

    def _receive(self, doc: _Doc, message: protocol.Message) -> None:
        peer = doc.peer
        if peer.closing:
            return
        try:
            taken = doc.room.receive(peer, message)
        except CollabError as exc:
            ws.close_peer(peer, exc.close_code, str(exc))
            return
        if taken and isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate):
            # Hocuspocus' "saved": sent once the update is committed, as relays are. A
            # refused one (read-only, quota) has been answered "not saved" instead.
            doc.room.acknowledge(peer, _SAVED)

    async def _open(self, key: str, token: str) -> None:
        """Admit and join document `key` with `token`, or answer PermissionDenied."""
        doc = await self._admit(key, token)
        if doc is None:
            return
        peer, room = doc.peer, doc.room
        self._docs[key] = doc
        doc.told_read_only = not allows(peer.access, "write")
        await self._send(hocuspocus.encode_authenticated(doc.prefix, read_only=doc.told_read_only))
        doc.expiry = ws.expire_at(peer, peer.grant.expires_at)
        room.join(peer)
        log.debug("%s: joined with %s access", peer, peer.access)
        if self._hooks:
            self._hooks.call("on_connect", ws.connection_event(room, peer))

    async def _admit(self, key: str, token: str) -> _Doc | None:
        """Check `token` for document `key` as the guard checks `?token=`, count the
        connection and load the room; None, having answered PermissionDenied, if any fails."""
        admission = ExitStack()
        guard, rooms = self.request.app[GUARD], self.request.app[ROOMS]
        try:
            name = check_doc_name(hocuspocus.document_name(key), self._settings.max_name_length)
            grant = await guard.grant(self.request, name, token=token or None)
            access = guard.permission(grant, name)
            if access == "none":
                raise Forbidden(f"this credential does not give access to {name!r}")
            admission.enter_context(guard.admit(self.request, name))
            room = await rooms.acquire(name)
        except CollabError as exc:
            admission.close()
            log.info("%s: refused %r: %s", self._address, key, exc, extra={"status": exc.status})
            self._metrics.upgrades_refused[(str(exc.status), exc.code)] += 1
            prefix = hocuspocus.key_prefix(key)
            await self._send(hocuspocus.encode_permission_denied(prefix, str(exc)))
            return None
        admission.callback(rooms.release, name)
        doc = _Doc(key, room, admission)
        doc.peer = Peer(
            f"{self._address} {key!r}",
            max_outbox_bytes=self._settings.max_outbox_bytes,
            log_fields={"document": name, "peer": self._address},
            connection=_DocTransport(self, doc),
            grant=grant,
            access=access,
            metrics=self._metrics,
            hocuspocus=True,
        )
        return doc

    async def _send(self, frame: bytes) -> None:
        """Send a message of the connection's own (not a room's)."""
        try:
            await self.ws.send_bytes(frame)
        except (ConnectionError, RuntimeError) as exc:
            # The socket went away meanwhile; the read loop sees the same and ends.
            log.debug("%s: send failed: %r", self._address, exc)

    def end(self, doc: _Doc, code: int) -> None:
        """Take document `doc` off the connection: it leaves its room, now."""
        if self._docs.get(doc.key) is not doc:
            return
        del self._docs[doc.key]
        doc.peer.detach()
        if doc.expiry is not None:
            doc.expiry.cancel()
        doc.room.leave(doc.peer)
        doc.admission.close()
        self._metrics.closed(code)
        log.debug("%s: left (%s)", doc.peer, code, extra={"close_code": code})
        if self._hooks:
            self._hooks.call("on_disconnect", ws.connection_event(doc.room, doc.peer, code))

    def _stateless(self, doc: _Doc, payload: str) -> None:
        if not self._hooks:
            return
        peer = doc.peer

        def reply(text: str) -> None:
            peer.send(hocuspocus.encode_stateless(text))

        event = Stateless(doc.room.name, ws.connection_event(doc.room, peer), payload, reply)
        self._hooks.call("on_stateless", event)


def _opens(message: WSMessage) -> bool:
    """Whether a first message may open a connection with no document in its URL (an
    error, such as an oversize frame, has closed it already)."""
    if message.type is WSMsgType.ERROR:
        return True
    return message.type is WSMsgType.BINARY and hocuspocus.opens_hocuspocus(message.data)
