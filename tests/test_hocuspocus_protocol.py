"""The Hocuspocus wire format: byte literals in, exact messages out, and back; arbitrary and
mutated frames raise only `ProtocolError`; and the rule that tells a Hocuspocus connection
from a y-websocket one by its first frame."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab import hocuspocus, protocol
from collab.errors import ProtocolError, UnsupportedMessage
from collab.hocuspocus import Auth, Close, Pong, Stateless
from tests.strategies import mutate

# What @hocuspocus/provider 4.7.0 sends first for document "my-doc": its token, its version.
AUTH_FRAME = b"\x06my-doc\x02\x00\x03abc\x054.7.0"


def test_decodes_auth_with_and_without_version() -> None:
    assert hocuspocus.decode(AUTH_FRAME) == ("my-doc", Auth("abc", "4.7.0"))
    assert hocuspocus.decode(b"\x01d\x02\x00\x00") == ("d", Auth("", None))


def test_decodes_sync_awareness_and_query_as_y_websocket_bodies() -> None:
    assert hocuspocus.decode(b"\x01d\x00\x00\x01\x00") == ("d", protocol.SyncStep1(b"\x00"))
    assert hocuspocus.decode(b"\x01d\x00\x01\x02\x00\x00") == ("d", protocol.SyncStep2(b"\x00\x00"))
    assert hocuspocus.decode(b"\x01d\x00\x02\x02\xab\xcd") == (
        "d",
        protocol.SyncUpdate(b"\xab\xcd"),
    )
    awareness = b"\x01d\x01\x06\x01\x05\x01\x02{}"
    assert hocuspocus.decode(awareness) == (
        "d",
        protocol.AwarenessUpdate((protocol.AwarenessEntry(5, 1, b"{}"),)),
    )
    assert hocuspocus.decode(b"\x01d\x03") == ("d", protocol.QueryAwareness())


def test_decodes_stateless_close_pong_and_session_keys() -> None:
    assert hocuspocus.decode(b"\x01d\x05\x02hi") == ("d", Stateless("hi"))
    assert hocuspocus.decode(b"\x03d\x00s\x07") == ("d\0s", Close())
    assert hocuspocus.document_name("d\0s") == "d"
    assert hocuspocus.decode(b"\x0a") == ("", Pong())


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x05ab",  # key longer than the frame
        b"\x01d",  # no type
        b"\x01d\x02\x00\x05ab",  # token longer than the frame
        b"\x01d\x02\x00\x00\x00\x00",  # bytes after the version
        b"\x01d\x07\x00",  # bytes after close
        b"\x02\xff\xfe\x07",  # key not UTF-8
        b"\x01d\x05\x02\xff\xfe",  # stateless not UTF-8
        b"\x01d\x00\x09\x00",  # unknown sync step
    ],
)
def test_refuses_malformed_frames(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        hocuspocus.decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x01d\x02\x01\x00",  # permission denied: servers send it
        b"\x01d\x04\x00\x00\x01\x00",  # sync reply: servers send it
        b"\x01d\x06\x00",  # broadcast stateless: server-internal
        b"\x01d\x08\x01",  # sync status: servers send it
        b"\x01d\x2a",
    ],
)
def test_refuses_messages_clients_do_not_send(frame: bytes) -> None:
    with pytest.raises(UnsupportedMessage):
        hocuspocus.decode(frame)


@given(st.binary(max_size=64))
def test_decode_raises_only_protocol_errors_on_arbitrary_frames(frame: bytes) -> None:
    try:
        hocuspocus.decode(frame)
    except ProtocolError:
        pass


@given(st.data())
def test_decode_raises_only_protocol_errors_on_mutated_frames(data: st.DataObject) -> None:
    try:
        hocuspocus.decode(mutate(data, AUTH_FRAME))
    except ProtocolError:
        pass


def test_peeks_the_key_of_a_malformed_frame() -> None:
    assert hocuspocus.peek_key(b"\x01d\x00\x09\x00") == "d"
    assert hocuspocus.peek_key(b"\x05ab") is None


def test_tells_hocuspocus_from_y_websocket_by_the_first_frame() -> None:
    assert hocuspocus.opens_hocuspocus(AUTH_FRAME)
    assert hocuspocus.opens_hocuspocus(b"\x01d\x02\x00\x00")
    # What y-websocket providers send first, and what else they send.
    assert not hocuspocus.opens_hocuspocus(b"\x00\x00\x01\x00")
    assert not hocuspocus.opens_hocuspocus(b"\x01\x06\x01\x05\x01\x02{}")
    assert not hocuspocus.opens_hocuspocus(b"\x03")
    # A Hocuspocus frame that is not an Auth message does not open a connection.
    assert not hocuspocus.opens_hocuspocus(b"\x01d\x00\x00\x01\x00")
    assert not hocuspocus.opens_hocuspocus(b"")


def test_encodes_server_messages() -> None:
    prefix = hocuspocus.key_prefix("my-doc")
    assert prefix == b"\x06my-doc"
    assert hocuspocus.encode_authenticated(prefix, read_only=False) == (
        b"\x06my-doc\x02\x02\x0aread-write"
    )
    assert (
        hocuspocus.encode_authenticated(prefix, read_only=True) == b"\x06my-doc\x02\x02\x08readonly"
    )
    assert hocuspocus.encode_permission_denied(prefix, "no") == b"\x06my-doc\x02\x01\x02no"
    assert hocuspocus.encode_close(prefix, "bye") == b"\x06my-doc\x07\x03bye"
    assert hocuspocus.encode_sync_status(saved=True) == b"\x08\x01"
    assert hocuspocus.encode_stateless("hi") == b"\x05\x02hi"
    assert hocuspocus.key_prefix("é") == b"\x02\xc3\xa9"


def test_room_frames_gain_the_key_and_a_refusal_becomes_sync_status() -> None:
    prefix = hocuspocus.key_prefix("d")
    update = protocol.encode_update(b"\x00\x00")
    assert hocuspocus.from_room(prefix, update) == b"\x01d" + update
    denied = protocol.encode_permission_denied("read-only")
    assert hocuspocus.from_room(prefix, denied) == b"\x01d\x08\x00"
    assert hocuspocus.decode(hocuspocus.from_room(prefix, update)) == (
        "d",
        protocol.SyncUpdate(b"\x00\x00"),
    )
