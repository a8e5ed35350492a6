"""Relaying ASGI requests and WebSockets to collab's aiohttp application on its private
Unix socket (collab.asgi): paths made relative to the mount, frames and close codes passed
through unchanged both ways. No collab logic: the aiohttp side decides everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import WSMsgType, web

from collab.appkeys import MOUNT

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The client's address as the ASGI server saw it. Trusted only because nothing but this
# relay can reach the socket (a private directory); a client's own copy is replaced.
PEER_HEADER = "X-Collab-Peer"
# The path the host mounted collab under (the scope's root_path): the editor's pages
# link to their assets, the API and the rooms through it.
MOUNT_HEADER = "X-Collab-Mount"
# Headers about one hop, not about the request (RFC 9110 7.6.1), and those aiohttp sets.
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "content-length"}
    | {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
    | {"sec-websocket-protocol", PEER_HEADER.lower(), MOUNT_HEADER.lower()}
)
_RESPONSE_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})
_LOST = 1011  # what the client is told when the inner connection ends without a close


@contextlib.asynccontextmanager
async def session(socket_path: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose every request goes to the Unix socket at `socket_path`."""
    connector = aiohttp.UnixConnector(path=socket_path, limit=0)
    async with aiohttp.ClientSession(
        "http://collab", connector=connector, auto_decompress=False, timeout=_NO_TIMEOUT
    ) as client:
        yield client


_NO_TIMEOUT = aiohttp.ClientTimeout(total=None)


@web.middleware
async def forwarded_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request as the client made it: its address and its mount are the relay's
    headers."""
    host, _, _port = request.headers.get(PEER_HEADER, "").rpartition(":")
    if host:
        request = request.clone(remote=host)
    request[MOUNT] = request.headers.get(MOUNT_HEADER, "")
    return await handler(request)


def relative_path(scope: Scope) -> str:
    """The request's path relative to the mount, as an encoded URL path and query."""
    root: str = scope.get("root_path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    path = _raw_relative(scope, root)
    if path is None:
        path = scope["path"]
        # Starlette keeps the full path and names the mount in root_path; older hosts strip it.
        if root and path.startswith(root):
            path = path[len(root) :]
        path = quote(path, safe="/:@!$&'()*+,;=-._~")
    path = path or "/"
    return f"{path}?{query}" if query else path


def _raw_relative(scope: Scope, root: str) -> str | None:
    """The path as the client encoded it (an escaped "/" in a name stays one), less the
    mount's segments; None when the host gives no raw path that starts with the mount."""
    raw = scope.get("raw_path")
    if not raw:
        return None
    segments = raw.decode("latin-1").split("?", 1)[0].split("/")
    depth = root.rstrip("/").count("/")
    if unquote("/".join(segments[: depth + 1])) != root.rstrip("/"):
        return None
    return "/" + "/".join(segments[depth + 1 :])


def forwarded_headers(scope: Scope) -> list[tuple[str, str]]:
    """The request's headers less the hop's, and the client's address (PEER_HEADER)."""
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope.get("headers", [])
        if name.decode("latin-1").lower() not in _HOP
    ]
    client = scope.get("client")
    if client:
        headers.append((PEER_HEADER, f"{client[0]}:{client[1]}"))
    if root := str(scope.get("root_path", "")).rstrip("/"):
        headers.append((MOUNT_HEADER, quote(root, safe="/:@!$&'()*+,;=-._~")))
    return headers


async def http(session: aiohttp.ClientSession, scope: Scope, receive: Receive, send: Send) -> None:
    """Relay one HTTP request and stream its response back."""
    first = await receive()
    body: bytes | AsyncIterator[bytes] | None = first.get("body", b"") or None
    if first.get("more_body"):
        body = _rest(first.get("body", b""), receive)
    async with session.request(
        scope["method"],
        relative_path(scope),
        headers=forwarded_headers(scope),
        data=body,
        allow_redirects=False,
    ) as response:
        headers = [
            (name.lower(), value)
            for name, value in response.raw_headers
            if name.decode("latin-1").lower() not in _RESPONSE_HOP
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _rest(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
    yield first
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer once collab has stopped: 503, or a WebSocket closed with 1001."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1001, "reason": "server shutting down"})
        return
    body = b"collab has stopped\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def websocket(
    session: aiohttp.ClientSession, scope: Scope, receive: Receive, send: Send
) -> None:
    """Relay one WebSocket: a refused upgrade keeps its status; once open, frames and
    the close code pass through until either side closes."""
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        inner = await session.ws_connect(
            relative_path(scope),
            headers=forwarded_headers(scope),
            protocols=scope.get("subprotocols", ()),
            max_msg_size=0,  # the inner server has applied its limit to what it sends
            autoclose=False,
        )
    except aiohttp.WSServerHandshakeError as exc:
        await _refuse(scope, send, exc.status, exc.message)
        return
    async with inner:
        await send({"type": "websocket.accept", "subprotocol": inner.protocol})
        up = asyncio.create_task(_up(receive, inner), name="relay up")
        try:
            await _down(inner, send)
        finally:
            up.cancel()
            await asyncio.wait([up])


async def _refuse(scope: Scope, send: Send, status: int, reason: str) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        start = {"type": "websocket.http.response.start", "status": status, "headers": headers}
        await send(start)
        body = f"{reason}\n".encode()
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})


async def _up(receive: Receive, inner: aiohttp.ClientWebSocketResponse) -> None:
    """The client's frames to collab; its close (or its going away) closes collab's side."""
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            await inner.close(code=message.get("code", 1000))
            return
        if message.get("bytes") is not None:
            await inner.send_bytes(message["bytes"])
        elif message.get("text") is not None:
            await inner.send_str(message["text"])


async def _down(inner: aiohttp.ClientWebSocketResponse, send: Send) -> None:
    """Collab's frames to the client, awaited one by one so that a client that reads
    slowly slows this reader, and collab's outbox limit sees it; then collab's close."""
    while True:
        message = await inner.receive()
        if message.type is WSMsgType.BINARY:
            if not await _send(send, {"type": "websocket.send", "bytes": message.data}):
                return
        elif message.type is WSMsgType.TEXT:
            if not await _send(send, {"type": "websocket.send", "text": message.data}):
                return
        else:
            if message.type is WSMsgType.CLOSE:
                code, reason = int(message.data), str(message.extra or "")
                await inner.close(code=code)  # answer the close handshake
            else:  # the connection ended without a close frame (collab aborted it)
                code, reason = _LOST, "connection to the document lost"
            await _send(send, {"type": "websocket.close", "code": code, "reason": reason})
            return


async def _send(send: Send, message: Message) -> bool:
    """Send to the client; False if it has gone (its disconnect reaches `_up`)."""
    try:
        await send(message)
    except OSError:  # uvicorn's ClientDisconnected is one
        return False
    return True
