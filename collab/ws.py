"""The WebSocket endpoint: upgrade, read loop, writer task. It only translates between
aiohttp and a Room: frames in, `Room.receive`; errors out as close codes, for the
offending peer only. A request that cannot be served is refused before the upgrade.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from collab import protocol
from collab.appkeys import ROOMS, SETTINGS
from collab.errors import InvalidDocName, ProtocolError, StoreError, UnsupportedMessage
from collab.names import doc_name_from_path
from collab.peer import CLOSE_PROTOCOL_ERROR, CLOSE_UNSUPPORTED, Peer
from collab.room import Room

log = logging.getLogger(__name__)

_CLOSE_WAIT_SECONDS = 5.0
_YIELD_EVERY = 32


def is_room_request(request: web.Request) -> bool:
    """Whether `request` asks to open a WebSocket under the rooms prefix."""
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and request.path.startswith(request.app[SETTINGS].room_prefix)
    )


async def handle(request: web.Request) -> web.StreamResponse:
    """Serve one connection to the room named by the request path."""
    settings = request.app[SETTINGS]
    rooms = request.app[ROOMS]
    try:
        name = doc_name_from_path(request.path, settings.room_prefix, settings.max_name_length)
    except InvalidDocName as exc:
        log.info("refused %s: %s", request.remote, exc)
        raise web.HTTPBadRequest(text=f"{exc}\n") from exc
    try:
        room = await rooms.acquire(name)
    except StoreError as exc:
        log.error("%s: cannot load: %s", name, exc)
        raise web.HTTPServiceUnavailable(text="document cannot be loaded now\n") from exc
    try:
        return await _serve(request, room)
    finally:
        rooms.release(name)


async def _serve(request: web.Request, room: Room) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        max_msg_size=settings.max_message_bytes,
        heartbeat=settings.ping_seconds,
        compress=False,  # one encoded frame serves every reader
        timeout=_CLOSE_WAIT_SECONDS,
    )
    await ws.prepare(request)
    peer = Peer(f"{_address(request)} {room.name!r}", max_outbox_bytes=settings.max_outbox_bytes)
    writer = asyncio.create_task(_write(peer, ws), name=f"writer {peer.label}")
    room.join(peer)
    log.debug("%s: joined", peer)
    try:
        await _read(ws, room, peer)
    finally:
        room.leave(peer)
        peer.close(ws.close_code or 1000, "")
        await _finish(writer, request)
        log.debug("%s: left (%s)", peer, ws.close_code)
    return ws


async def _read(ws: web.WebSocketResponse, room: Room, peer: Peer) -> None:
    handled = 0
    async for message in ws:
        if peer.closing:
            return
        handled += 1
        if handled % _YIELD_EVERY == 0:
            # aiohttp hands out buffered frames without suspending; without this, one
            # client sending a burst holds the event loop, and every other room with it.
            await asyncio.sleep(0)
        if message.type is WSMsgType.BINARY:
            try:
                room.receive(peer, protocol.decode(message.data))
            except UnsupportedMessage as exc:
                _refuse(peer, CLOSE_UNSUPPORTED, str(exc))
                return
            except ProtocolError as exc:
                _refuse(peer, CLOSE_PROTOCOL_ERROR, str(exc))
                return
        elif message.type is WSMsgType.TEXT:
            _refuse(peer, CLOSE_UNSUPPORTED, "text frames are not part of the protocol")
            return
        elif message.type is WSMsgType.ERROR:
            # aiohttp has already closed the socket, with 1009 for an oversize message.
            log.warning("%s: closed (%s): %s", peer, ws.close_code, ws.exception())
            return


def _refuse(peer: Peer, code: int, reason: str) -> None:
    log.warning("%s: closed with %d: %s", peer, code, reason)
    peer.close(code, reason)


async def _write(peer: Peer, ws: web.WebSocketResponse) -> None:
    try:
        await peer.run(ws)
    except (ConnectionError, RuntimeError) as exc:
        # The socket went away under a send; the read loop sees the same and ends.
        log.debug("%s: send failed: %r", peer, exc)
        peer.close(1006, "connection lost")


async def _finish(writer: asyncio.Task[None], request: web.Request) -> None:
    """Wait for the writer to close the socket; abort the connection if it cannot."""
    try:
        async with asyncio.timeout(_CLOSE_WAIT_SECONDS):
            await writer
    except TimeoutError:
        # A peer that reads nothing can block even the close frame.
        if request.transport is not None:
            request.transport.abort()
        writer.cancel()
        await asyncio.wait([writer])


def _address(request: web.Request) -> str:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(request.remote)
