"""The WebSocket endpoint: upgrade, read loop, writer task. It only translates between
aiohttp and a Room: frames in, `Room.receive`; errors out as their close codes (see
collab.errors), for the offending peer only. A request that is not allowed is refused
before the upgrade with its error's status; a document that cannot be loaded closes the
WebSocket with StoreError's 1011.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import WebSocketError, WSMessage, WSMsgType, web

from collab import hocuspocus, logs, protocol
from collab.appkeys import FRAMES, GUARD, LOOSE, METRICS, ROOMS, SETTINGS
from collab.auth import Grant, Permission, allows
from collab.config import Settings
from collab.errors import (
    CollabError,
    Forbidden,
    StoreError,
    TokenExpired,
    TooMany,
    Unauthorized,
    UnsupportedMessage,
)
from collab.frames import DirectWriter
from collab.guard import request_token
from collab.hooks import Connection
from collab.limits import TokenBucket
from collab.metrics import Metrics
from collab.names import doc_name_from_path
from collab.peer import CLOSE_GOING_AWAY, Peer, Transport
from collab.room import Room

log = logging.getLogger(__name__)

_CLOSE_WAIT_SECONDS = 5.0
YIELD_EVERY = 32
_BURST_SECONDS = 5.0
_SLOW_MESSAGE_SECONDS = 0.1
_FIRST_FRAME_SECONDS = 0.5  # how long the protocol is waited for before joining
# How long a socket that turned out to need a token is held before its 4401: y-websocket 2
# reconnects 100 ms after any close of a socket that had opened (3.1 stops at a 44xx).
REFUSAL_HOLD_SECONDS = 3.0


def is_room_request(request: web.Request) -> bool:
    """Whether `request` asks to open a WebSocket under the rooms prefix."""
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and request.path.startswith(request.app[SETTINGS].room_prefix)
    )


async def handle(request: web.Request) -> web.StreamResponse:
    """Serve one connection to the room named by the request path; at the bare rooms
    prefix, or when its first frame says so, a Hocuspocus connection (collab.multiplex)."""
    settings = request.app[SETTINGS]
    guard = request.app[GUARD]
    try:
        if not request.path[len(settings.room_prefix) :].strip("/"):
            # No document in the URL: only Hocuspocus names its documents in its frames.
            guard.check_origin(request)
            with guard.admit(request, None):
                return await _serve_hocuspocus(request, None)
        name = doc_name_from_path(request.path, settings.room_prefix, settings.max_name_length)
        logs.add(document=name)
        guard.check_origin(request)
        try:
            grant = await guard.grant(request, name)
        except Unauthorized as exc:
            if request_token(request) is not None:
                raise  # a credential in the URL or header that is not good: 401
            # None at all: a Hocuspocus provider sends its token in its first frame.
            with guard.admit(request, name):
                served = await _serve_without_credential(request, name, exc)
        else:
            access = guard.permission(grant, name)
            if access == "none":
                raise Forbidden(f"this credential does not give access to {name!r}")
            with guard.admit(request, name):
                served = await _serve_room(request, name, grant, access)
        if isinstance(served, _Handover):
            # Served apart from this URL's admission and room: each document the client
            # names is admitted and joined on its own. The socket's own admission takes
            # the place this URL's just left, so it is not refused.
            with guard.admit(request, None):
                return await _serve_hocuspocus(request, served)
    except CollabError as exc:
        return _refusal(request, exc)
    return served


@dataclass(frozen=True, slots=True)
class _Handover:
    """A connection opened as y-websocket whose first frame is Hocuspocus'."""

    ws: web.WebSocketResponse
    first: bytes


async def _serve_hocuspocus(request: web.Request, handover: _Handover | None) -> web.StreamResponse:
    # Imported here: multiplex builds on this module's connection plumbing.
    from collab.multiplex import Multiplex

    ws = handover.ws if handover else await _accept(request)
    await Multiplex(request, ws).serve(handover.first if handover else None)
    return ws


async def _serve_without_credential(
    request: web.Request, name: str, refused: Unauthorized
) -> web.StreamResponse | _Handover:
    """A document's URL without any credential where one is needed. A Hocuspocus
    provider sends its token in its first frame, so the socket opens and that frame
    decides: Hocuspocus is handed over, to be checked per document; any other client
    is held a moment, then closed with `refused`'s 4401 (the browser shows that code
    and reason, where an HTTP 401 reaches its page as a bare 1006)."""
    ws = await _accept(request)
    metrics = request.app[METRICS]
    metrics.connections_open += 1
    loose = request.app[LOOSE]
    loose.add(ws)  # closed with 1001 by a shutdown meanwhile
    try:
        first = await _first_frame(ws)
        if first is not None and first.type is WSMsgType.BINARY:
            if hocuspocus.opens_hocuspocus(first.data):
                return _Handover(ws, bytes(first.data))
        code = refused.close_code
        log.info(
            "%s %r: closed with %d: %s",
            peer_address(request),
            name,
            code,
            refused,
            extra={"close_code": code},
        )
        if first is None or first.type not in _ENDED:
            late = await _hold(ws, request.app[SETTINGS], first is None)
            if late is not None:
                return _Handover(ws, late)
        metrics.closed(ws.close_code or code)
        await ws.close(code=code, message=str(refused).encode()[:120])
        stop_heartbeat(ws)
        return ws
    finally:
        loose.discard(ws)
        metrics.connections_open -= 1


async def _hold(ws: web.WebSocketResponse, settings: Settings, silent: bool) -> bytes | None:
    """Read and drop what a refused client sends, for REFUSAL_HOLD_SECONDS at most,
    within the read limits; if it was `silent` so far and its first frame is Hocuspocus'
    after all (a slow link), that frame."""
    messages, volume = read_limits(settings, time.monotonic())
    try:
        async with asyncio.timeout(REFUSAL_HOLD_SECONDS):
            async for message in ws:
                if silent and message.type is WSMsgType.BINARY:
                    if hocuspocus.opens_hocuspocus(message.data):
                        return bytes(message.data)
                silent = False
                size = len(message.data) if isinstance(message.data, bytes | str) else 0
                now = time.monotonic()
                if not (messages.allow(1, now) and volume.allow(size, now)):
                    return None
    except TimeoutError:
        pass
    return None


def _refusal(request: web.Request, exc: CollabError) -> web.Response:
    """The HTTP answer to an upgrade refused before the WebSocket opened: the error's
    status, with its message as text."""
    log.log(
        logging.ERROR if exc.status >= 500 else logging.INFO,
        "refused %s %s: %d %s",
        request.remote,
        request.path,
        exc.status,
        exc,
        extra={"status": exc.status},
    )
    request.app[METRICS].upgrades_refused[(str(exc.status), exc.code)] += 1
    return web.Response(status=exc.status, text=f"{exc}\n", headers=exc.headers)


async def _accept(request: web.Request) -> web.WebSocketResponse:
    """Answer the upgrade (counted as opened)."""
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        max_msg_size=settings.max_message_bytes,
        heartbeat=settings.ping_seconds,
        compress=False,  # one encoded frame serves every reader
        timeout=_CLOSE_WAIT_SECONDS,
    )
    await ws.prepare(request)
    request.app[METRICS].connections_opened += 1
    return ws


async def _serve_room(
    request: web.Request, name: str, grant: Grant, access: Permission
) -> web.StreamResponse | _Handover:
    # The upgrade is answered before the room loads, so that the client sets up its side
    # meanwhile (a cold load measured about 6 ms sooner); nothing is sent or read in the
    # room until it has loaded.
    ws = await _accept(request)
    metrics = request.app[METRICS]
    metrics.connections_open += 1
    rooms = request.app[ROOMS]
    try:
        try:
            room = await rooms.acquire(name)
        except StoreError as exc:
            if rooms.closed:
                code, level, reason = CLOSE_GOING_AWAY, logging.INFO, b"server shutting down"
            else:
                code, level, reason = exc.close_code, logging.ERROR, b"cannot load the document"
            log.log(
                level,
                "%s %r: closed with %d: %s",
                peer_address(request),
                name,
                code,
                exc,
                extra={"close_code": code},
            )
            metrics.closed(code)
            await ws.close(code=code, message=reason)
            stop_heartbeat(ws)
            return ws
        try:
            return await _serve(request, ws, room, grant, access, metrics)
        finally:
            rooms.release(name)
    finally:
        metrics.connections_open -= 1


async def _serve(
    request: web.Request,
    ws: web.WebSocketResponse,
    room: Room,
    grant: Grant,
    access: Permission,
    metrics: Metrics,
) -> web.StreamResponse | _Handover:
    settings = request.app[SETTINGS]
    first = await _first_frame(ws)
    if first is not None and first.type is WSMsgType.BINARY:
        if hocuspocus.opens_hocuspocus(first.data):
            # Before joining: a Hocuspocus client is sent nothing of y-websocket's.
            return _Handover(ws, bytes(first.data))
    # A revocation that came while the first frame was awaited found no peer to close.
    now_allowed = request.app[GUARD].permission(grant, room.name)
    if now_allowed == "none":
        log.info("%s %r: access revoked before joining", peer_address(request), room.name)
        metrics.closed(Forbidden.close_code)
        await ws.close(code=Forbidden.close_code, message=b"access revoked")
        stop_heartbeat(ws)
        return ws
    if not allows(now_allowed, access):
        access = now_allowed
    peer = Peer(
        f"{peer_address(request)} {room.name!r}",
        max_outbox_bytes=settings.max_outbox_bytes,
        log_fields={"document": room.name, "peer": peer_address(request)},
        connection=_Connection(request, ws),
        grant=grant,
        access=access,
        metrics=metrics,
    )
    expiry = expire_at(peer, grant.expires_at)
    room.join(peer)
    log.debug("%s: joined with %s access", peer, access)
    hooks = request.app[ROOMS].journal.hooks
    if hooks:
        hooks.call("on_connect", connection_event(room, peer))
    handed: bytes | None = None
    try:
        handed = await _read(ws, room, peer, settings, metrics, first)
    finally:
        peer.detach()
        if expiry is not None:
            expiry.cancel()
        room.leave(peer)
        if handed is None:
            peer.close(ws.close_code or 1000, "")
            metrics.closed(peer.close_code or 1000)
        if (writer := peer.writer) is not None:
            await finish(writer, request)  # a handed-over peer's writer only drains
        if handed is None:
            stop_heartbeat(ws)
        log.debug("%s: left (%s)", peer, ws.close_code, extra={"close_code": ws.close_code})
        if hooks:
            # On a handover too: the app was told this connection joined.
            hooks.call("on_disconnect", connection_event(room, peer, peer.close_code or 1000))
    return ws if handed is None else _Handover(ws, handed)


async def _first_frame(ws: web.WebSocketResponse) -> WSMessage | None:
    """The client's first frame, or None if it sends none within a moment. Stock
    y-websocket and Hocuspocus providers both speak first (SyncStep1; their token), so
    the protocol is known before anything is sent: a Hocuspocus client at a document
    URL is then never sent y-websocket's frames (the bench's load generator cannot read
    them). A client that waits for the server is joined after the moment, as before."""
    try:
        return await ws.receive(timeout=_FIRST_FRAME_SECONDS)
    except TimeoutError:
        return None


_ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


async def _frames(first: WSMessage | None, ws: web.WebSocketResponse) -> AsyncIterator[WSMessage]:
    if first is not None:
        yield first
    async for message in ws:
        yield message


def connection_event(room: Room, peer: Peer, close_code: int | None = None) -> Connection:
    address = str(peer.log_fields.get("peer", peer.label))
    return Connection(room.name, address, peer.access, peer.grant.subject, close_code)


def expire_at(peer: Peer, expires_at: float | None) -> asyncio.TimerHandle | None:
    """Close `peer` when its credential expires; providers reconnect with a new one."""
    if expires_at is None:
        return None
    loop = asyncio.get_running_loop()
    return loop.call_later(
        max(0.0, expires_at - time.time()), _close, peer, TokenExpired.close_code, "token expired"
    )


def _close(peer: Peer, code: int, reason: str) -> None:
    # Also run by the expiry timer, outside the connection's task: name the peer here.
    log.info("%s: closed with %d: %s", peer, code, reason, extra=peer.log_extra(code))
    peer.close(code, reason)


def read_limits(settings: Settings, now: float) -> tuple[TokenBucket, TokenBucket]:
    """A connection's buckets of messages and of bytes per second."""
    messages = TokenBucket(
        settings.max_messages_per_second, settings.max_messages_per_second * _BURST_SECONDS, now
    )
    volume = TokenBucket(
        settings.max_bytes_per_second,
        settings.max_bytes_per_second + settings.max_message_bytes,
        now,
    )
    return messages, volume


async def _read(
    ws: web.WebSocketResponse,
    room: Room,
    peer: Peer,
    settings: Settings,
    metrics: Metrics,
    first: WSMessage | None = None,
) -> bytes | None:
    """Hand the client's frames (`first` already read) to the room until it leaves;
    return its first frame instead if that is a Hocuspocus one that came late (checked
    once: the loop stays as fast)."""
    messages, volume = read_limits(settings, time.monotonic())
    handled = 0
    if first is not None and first.type in _ENDED:
        return None
    async for message in _frames(first, ws):
        if peer.closing:
            return None
        handled += 1
        if handled % YIELD_EVERY == 0:
            # aiohttp hands out buffered frames without suspending; without this, one
            # client sending a burst holds the event loop, and every other room with it.
            await asyncio.sleep(0)
        now = time.monotonic()
        size = len(message.data) if isinstance(message.data, bytes | str) else 0
        metrics.received_bytes += size
        if not (messages.allow(1, now) and volume.allow(size, now)):
            close_peer(peer, TooMany.close_code, "too many messages or bytes per second")
            return None
        if message.type is WSMsgType.BINARY:
            if handled == 1 and hocuspocus.opens_hocuspocus(message.data):
                return bytes(message.data)
            try:
                decoded = protocol.decode(message.data)
                room.receive(peer, decoded)
            except CollabError as exc:
                close_peer(peer, exc.close_code, str(exc))
                return None
            took = time.monotonic() - now
            if took > _SLOW_MESSAGE_SECONDS:
                # Every other connection of this process waited that long.
                log.warning(
                    "%s: a %d-byte %s took %.0f ms", peer, size, type(decoded).__name__, took * 1000
                )
        elif message.type is WSMsgType.TEXT:
            close_peer(
                peer, UnsupportedMessage.close_code, "text frames are not part of the protocol"
            )
            return None
        elif message.type is WSMsgType.ERROR:
            # aiohttp has already closed the socket, with 1009 for an oversize message
            # (close_code is then what the client answered, or 1006 if the close failed).
            error = ws.exception()
            sent = error.code if isinstance(error, WebSocketError) else ws.close_code
            log.warning(
                "%s: closed (%s): %s", peer, ws.close_code, error, extra={"close_code": sent}
            )
            return None
    return None


def close_peer(peer: Peer, code: int, reason: str) -> None:
    """Close `peer` for something it sent, saying why in the log."""
    log.warning("%s: closed with %d: %s", peer, code, reason, extra=peer.log_extra(code))
    peer.close(code, reason)


class _Connection:
    """A peer's aiohttp WebSocket: frames go straight to the transport while it keeps
    up (collab.frames), through a writer task that drains the peer otherwise."""

    # An attribute, not a method: it is called for every frame to every peer.
    write_now: Callable[[bytes], bool]

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self._request = request
        self._ws = ws
        transport = request.transport
        if isinstance(transport, asyncio.Transport):
            self.write_now = DirectWriter(transport, lambda: ws.closed, request.app[FRAMES])
        else:
            self.write_now = never

    def start_writer(self, peer: Peer) -> asyncio.Task[None]:
        return asyncio.create_task(write(peer, self._ws), name=f"writer {peer.label}")

    def abort(self) -> None:
        abort_request(self._request)


async def write(peer: Peer, ws: Transport) -> None:
    """Drain `peer` into `ws` (its writer task)."""
    try:
        await peer.drain(ws)
    except (ConnectionError, RuntimeError) as exc:
        # The socket went away under a send; the read loop sees the same and ends.
        log.debug("%s: send failed: %r", peer, exc, extra=peer.log_extra(1006))
        peer.close(1006, "connection lost")


def stop_heartbeat(ws: web.WebSocketResponse) -> None:
    """Cancel aiohttp's ping timer of a finished connection.

    aiohttp 3.14 re-arms it when the client's last bytes arrive while close() waits
    for them (its data-received hook ignores the closing state), and the timer then keeps
    the whole connection in memory for another heartbeat period: found by fuzzing, tens
    of MiB under connection churn. There is no public call for it.
    """
    cancel = getattr(ws, "_cancel_heartbeat", None)
    if callable(cancel):
        cancel()


def never(_frame: bytes) -> bool:
    return False


def abort_request(request: web.Request) -> None:
    """Drop the connection now: the read loop ends and the peer leaves its room."""
    if request.transport is not None:
        request.transport.abort()


async def finish(writer: asyncio.Task[None], request: web.Request) -> None:
    """Wait for the writer to close the socket; abort the connection if it cannot."""
    try:
        async with asyncio.timeout(_CLOSE_WAIT_SECONDS):
            await writer
    except TimeoutError:
        # A peer that reads nothing can block even the close frame.
        abort_request(request)
        writer.cancel()
        await asyncio.wait([writer])


def peer_address(request: web.Request) -> str:
    """The client's address, host:port, as log lines name it."""
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(request.remote)
