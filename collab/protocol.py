"""The y-websocket wire format: bytes in, typed messages out, and back. No I/O.

One WebSocket frame holds exactly one message: a varuint message type, then its payload.
Type 0 is sync (substep 0 SyncStep1 with a state vector, 1 SyncStep2 and 2 Update with a
Yjs update), 1 is an awareness update, 3 asks for all awareness states, and 2 (auth) is sent by
servers to refuse a client.

`decode` is strict: truncated lengths, trailing bytes and oversized integers raise
`ProtocolError`. The Yjs update and state-vector payloads themselves are left to pycrdt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pycrdt import write_var_uint

from collab.errors import ProtocolError, UnsupportedMessage
from collab.yjs.lib0 import Reader

MSG_SYNC = 0
MSG_AWARENESS = 1
MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

AUTH_PERMISSION_DENIED = 0

# An update that changes nothing: zero structs, empty delete set. Clients send it often.
EMPTY_UPDATE = b"\x00\x00"
# A state vector of a document that knows nothing.
EMPTY_STATE_VECTOR = b"\x00"
NULL_STATE = b"null"
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's, and so lib0's


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state: `state` is its JSON text, `null` when it left."""

    client_id: int
    clock: int
    state: bytes

    @property
    def removed(self) -> bool:
        return self.state == NULL_STATE


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    entries: tuple[AwarenessEntry, ...]


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


@dataclass(frozen=True, slots=True)
class PermissionDenied:
    """The auth message servers send to refuse something (clients never send it)."""

    reason: str


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessUpdate | QueryAwareness | PermissionDenied


def decode(frame: bytes) -> Message:
    """Parse one WebSocket frame.

    Raises:
        ProtocolError: the frame is truncated, has trailing bytes or a bad substep.
        UnsupportedMessage: the frame is of a message type this module does not know.
    """
    reader = Reader(frame, ProtocolError)
    kind = reader.var_uint()
    message: Message
    if kind == MSG_SYNC:
        step = reader.var_uint()
        payload = reader.var_bytes()
        if step == SYNC_STEP1:
            message = SyncStep1(payload)
        elif step == SYNC_STEP2:
            message = SyncStep2(payload)
        elif step == SYNC_UPDATE:
            message = SyncUpdate(payload)
        else:
            raise ProtocolError(f"unknown sync step {step}")
    elif kind == MSG_AWARENESS:
        message = AwarenessUpdate(decode_awareness(reader.var_bytes()))
    elif kind == MSG_QUERY_AWARENESS:
        message = QueryAwareness()
    elif kind == MSG_AUTH:
        if reader.var_uint() != AUTH_PERMISSION_DENIED:
            raise UnsupportedMessage("unknown auth message")
        message = PermissionDenied(reader.var_bytes().decode("utf-8", "replace"))
    else:
        raise UnsupportedMessage(f"unsupported message type {kind}")
    reader.expect_end()
    return message


def decode_awareness(payload: bytes) -> tuple[AwarenessEntry, ...]:
    """Parse an awareness update's entries without parsing their JSON."""
    reader = Reader(payload, ProtocolError)
    count = reader.var_uint()
    # Each entry takes at least 3 bytes; refuse counts the payload cannot hold.
    if count * 3 > len(payload):
        raise ProtocolError(f"awareness update claims {count} entries")
    entries = tuple(
        AwarenessEntry(reader.var_uint(), reader.var_uint(), reader.var_bytes())
        for _ in range(count)
    )
    reader.expect_end()
    # Relayed entries are decoded by lib0 in every browser, which throws past 2**53 - 1.
    if any(e.client_id > MAX_SAFE_INTEGER or e.clock > MAX_SAFE_INTEGER for e in entries):
        raise ProtocolError("awareness client id or clock beyond 2**53 - 1")
    return entries


def check_awareness_state(state: bytes) -> None:
    """Raise `ProtocolError` unless `state` is what stock clients can `JSON.parse`: UTF-8
    text of a JSON object (or `null`), without NaN or Infinity.

    Stock clients parse every state they receive, so one bad state relayed would break
    every editor in the room.
    """
    try:
        value = json.loads(state.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"awareness state is not JSON that browsers parse: {exc}") from None
    if value is not None and not isinstance(value, dict):
        raise ProtocolError("awareness state is not a JSON object")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _var_bytes(payload: bytes) -> bytes:
    return write_var_uint(len(payload)) + payload


def encode_sync_step1(state_vector: bytes) -> bytes:
    return b"\x00\x00" + _var_bytes(state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    return b"\x00\x01" + _var_bytes(update)


def encode_update(update: bytes) -> bytes:
    return b"\x00\x02" + _var_bytes(update)


def encode_awareness(entries: list[AwarenessEntry] | tuple[AwarenessEntry, ...]) -> bytes:
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        parts += (write_var_uint(entry.client_id), write_var_uint(entry.clock))
        parts.append(_var_bytes(entry.state))
    return b"\x01" + _var_bytes(b"".join(parts))


def encode_query_awareness() -> bytes:
    return b"\x03"


def encode_permission_denied(reason: str) -> bytes:
    return b"\x02" + write_var_uint(AUTH_PERMISSION_DENIED) + _var_bytes(reason.encode())
