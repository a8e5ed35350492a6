"""The Hocuspocus wire format (`@hocuspocus/provider` 3.x and 4.x): bytes in, typed messages
out, and back. No I/O.

Every message starts with its document's key, a varString (the document name, or
`name\\0sessionId` with the provider's `sessionAwareness`), then a varuint type. Types 0
(sync), 1 (awareness) and 3 (query awareness) carry exactly what a y-websocket frame of the
same type carries, so their body is read by `collab.protocol`. Type 2 is auth (the client
sends its token; the server answers Authenticated with a scope or PermissionDenied), 5 a
stateless string, 7 asks to close one document, 8 is the server's SyncStatus answer to an
update, 9/10 a connection-level ping/pong with no key.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycrdt import write_var_uint

from collab import protocol
from collab.errors import ProtocolError, UnsupportedMessage
from collab.yjs.lib0 import Reader

MSG_AUTH = 2
MSG_STATELESS = 5
MSG_CLOSE = 7
MSG_SYNC_STATUS = 8
MSG_PONG = 10

AUTH_TOKEN = 0
AUTH_PERMISSION_DENIED = 1
AUTH_AUTHENTICATED = 2

SCOPE_READ_WRITE = "read-write"
SCOPE_READ_ONLY = "readonly"

_PONG_FRAME = bytes((MSG_PONG,))
_BODY_TYPES = (protocol.MSG_SYNC, protocol.MSG_AWARENESS, protocol.MSG_QUERY_AWARENESS)


@dataclass(frozen=True, slots=True)
class Auth:
    """A client's token for one document (empty if it has none), and its version."""

    token: str
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Stateless:
    payload: str


@dataclass(frozen=True, slots=True)
class Close:
    """The client is done with this document (the socket stays up for the others)."""


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a ping; it belongs to the connection, not to a document."""


Message = (
    protocol.SyncStep1
    | protocol.SyncStep2
    | protocol.SyncUpdate
    | protocol.AwarenessUpdate
    | protocol.QueryAwareness
    | Auth
    | Stateless
    | Close
    | Pong
)


def decode(frame: bytes) -> tuple[str, Message]:
    """Parse one WebSocket frame into its document key and its message (a Pong's key is "").

    Raises:
        ProtocolError: the frame is truncated, has trailing bytes, or a key or string that
            is not UTF-8.
        UnsupportedMessage: the message is of a type clients do not send.
    """
    if frame == _PONG_FRAME:
        return "", Pong()
    reader = Reader(frame, ProtocolError)
    key = _string(reader)
    if reader.pos >= len(frame):
        raise ProtocolError("message without a type")
    kind = frame[reader.pos]
    if kind in _BODY_TYPES:
        # The rest is exactly a y-websocket frame; its type byte is under 0x80.
        return key, _body(frame[reader.pos :])
    reader.var_uint()
    message: Message
    if kind == MSG_AUTH:
        if reader.var_uint() != AUTH_TOKEN:
            raise UnsupportedMessage("clients only send the token auth message")
        token = _string(reader)
        message = Auth(token, _string(reader) if reader.pos < len(frame) else None)
    elif kind == MSG_STATELESS:
        message = Stateless(_string(reader))
    elif kind == MSG_CLOSE:
        message = Close()
    else:
        raise UnsupportedMessage(f"unsupported Hocuspocus message type {kind}")
    reader.expect_end()
    return key, message


def _body(body: bytes) -> Message:
    message = protocol.decode(body)
    if isinstance(message, protocol.PermissionDenied):  # its type is 2, not one of these
        raise AssertionError("unreachable")
    return message


def _string(reader: Reader) -> str:
    try:
        return reader.var_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("a string that is not UTF-8") from None


def peek_key(frame: bytes) -> str | None:
    """The document key a frame starts with, if it starts with one (even when the rest of
    it is malformed), so that an error closes only that document."""
    try:
        return _string(Reader(frame, ProtocolError))
    except ProtocolError:
        return None


def opens_hocuspocus(frame: bytes) -> bool:
    """Whether a connection whose first frame is `frame` speaks Hocuspocus.

    A y-websocket provider opens with SyncStep1, first byte 0 (its type). A Hocuspocus
    provider opens each document with its Auth message, whose key is a document name and
    never empty, so its first byte (the key's length) is at least 1. A frame that starts
    with 1 to 3 is Hocuspocus only if all of it reads as an Auth message: a y-websocket
    frame could read so only if it were an awareness update of exactly two entries, the
    first of client id 0, sent before SyncStep1, which stock clients never send.
    """
    if not frame or frame[0] == 0:
        return False
    try:
        _, message = decode(frame)
    except ProtocolError:
        return False
    return isinstance(message, Auth)


def key_prefix(key: str) -> bytes:
    """What every message of the document `key` starts with."""
    return _var_bytes(key.encode())


def document_name(key: str) -> str:
    """The document a key names (the provider's `sessionAwareness` appends `\\0session`)."""
    return key.partition("\0")[0]


def _var_bytes(payload: bytes) -> bytes:
    return write_var_uint(len(payload)) + payload


def _string_bytes(text: str) -> bytes:
    return _var_bytes(text.encode())


def from_room(prefix: bytes, frame: bytes) -> bytes:
    """A y-websocket frame a room sent a peer, as that peer's Hocuspocus message.

    Sync, awareness and query-awareness frames only gain the key. A room's refusal of an
    update (y-websocket's permission-denied auth message) becomes SyncStatus "not saved":
    Hocuspocus' own PermissionDenied would tell the provider it is not authenticated.
    """
    if frame[:1] == b"\x02":
        return prefix + encode_sync_status(saved=False)
    return prefix + frame


def encode_authenticated(prefix: bytes, *, read_only: bool) -> bytes:
    scope = SCOPE_READ_ONLY if read_only else SCOPE_READ_WRITE
    return prefix + bytes((MSG_AUTH, AUTH_AUTHENTICATED)) + _string_bytes(scope)


def encode_permission_denied(prefix: bytes, reason: str) -> bytes:
    return prefix + bytes((MSG_AUTH, AUTH_PERMISSION_DENIED)) + _string_bytes(reason)


def encode_sync_status(*, saved: bool) -> bytes:
    """The body (no key) of a SyncStatus: whether the client's update was saved."""
    return bytes((MSG_SYNC_STATUS, 1 if saved else 0))


def encode_stateless(payload: str) -> bytes:
    """The body (no key) of a stateless message; `from_room` gives it its key."""
    return bytes((MSG_STATELESS,)) + _string_bytes(payload)


def encode_close(prefix: bytes, reason: str) -> bytes:
    return prefix + bytes((MSG_CLOSE,)) + _string_bytes(reason)
