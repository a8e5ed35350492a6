"""The wire format: byte literals in, exact messages out, and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collab import protocol
from collab.errors import ProtocolError, UnsupportedMessage
from collab.protocol import (
    AwarenessEntry,
    AwarenessUpdate,
    PermissionDenied,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)


def test_decodes_sync_step1() -> None:
    assert protocol.decode(b"\x00\x00\x03\x01\x05\x07") == SyncStep1(b"\x01\x05\x07")


def test_decodes_sync_step2_and_update() -> None:
    assert protocol.decode(b"\x00\x01\x02\x00\x00") == SyncStep2(b"\x00\x00")
    assert protocol.decode(b"\x00\x02\x02\xab\xcd") == SyncUpdate(b"\xab\xcd")


def test_decodes_awareness_without_parsing_states() -> None:
    payload = b"\x02" + b"\x05\x01\x02{}" + b"\x86\x01\x03\x04null"
    frame = b"\x01" + bytes([len(payload)]) + payload
    assert protocol.decode(frame) == AwarenessUpdate(
        (AwarenessEntry(5, 1, b"{}"), AwarenessEntry(134, 3, b"null"))
    )


def test_decodes_query_awareness_and_permission_denied() -> None:
    assert protocol.decode(b"\x03") == QueryAwareness()
    assert protocol.decode(b"\x02\x00\x02no") == PermissionDenied("no")


def test_decodes_long_payload_length() -> None:
    update = bytes(300)
    assert protocol.decode(b"\x00\x02\xac\x02" + update) == SyncUpdate(update)


@pytest.mark.parametrize(
    "frame",
    [
        b"",  # nothing at all
        b"\x00",  # sync without a step
        b"\x00\x02",  # update without a length
        b"\x00\x02\x05abc",  # length beyond the frame
        b"\x00\x02\x01ab",  # trailing byte
        b"\x00\x07\x00",  # unknown sync step
        b"\x01\x03\x05\x01",  # awareness: entries beyond the payload
        b"\x01\x01\x09",  # awareness: claims 9 entries in 1 byte
        b"\x03\x00",  # query awareness with trailing bytes
        b"\x00\x02" + b"\xff" * 11,  # integer over 64 bits
    ],
)
def test_malformed_frames_raise_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(frame)


@pytest.mark.parametrize("frame", [b"\x04", b"\x7f\x00", b"\x02\x01\x00"])
def test_unknown_message_types_raise_unsupported(frame: bytes) -> None:
    with pytest.raises(UnsupportedMessage):
        protocol.decode(frame)


def test_encoders_produce_y_protocols_bytes() -> None:
    assert protocol.encode_sync_step1(b"\x00") == b"\x00\x00\x01\x00"
    assert protocol.encode_sync_step2(b"\x00\x00") == b"\x00\x01\x02\x00\x00"
    assert protocol.encode_update(b"\x01") == b"\x00\x02\x01\x01"
    assert protocol.encode_query_awareness() == b"\x03"
    assert protocol.encode_permission_denied("no") == b"\x02\x00\x02no"
    assert protocol.encode_awareness([AwarenessEntry(5, 1, b"{}")]) == b"\x01\x06\x01\x05\x01\x02{}"


def test_awareness_state_length_counts_utf8_bytes() -> None:
    # pycrdt's Encoder.write_var_string writes len(str), wrong for non-ASCII names.
    state = '{"name":"Zoë 😀"}'.encode()
    frame = protocol.encode_awareness([AwarenessEntry(1, 0, state)])
    assert protocol.decode(frame) == AwarenessUpdate((AwarenessEntry(1, 0, state),))


@pytest.mark.parametrize("state", [b'{"a":1}', b"null", b"{}"])
def test_valid_awareness_states_pass(state: bytes) -> None:
    protocol.check_awareness_state(state)


@pytest.mark.parametrize("state", [b"{", b"[]", b"42", b"\xff\xfe", b""])
def test_invalid_awareness_states_raise(state: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.check_awareness_state(state)


payloads = st.binary(max_size=2000)
entries = st.lists(
    st.builds(
        AwarenessEntry,
        st.integers(0, protocol.MAX_SAFE_INTEGER),
        st.integers(0, protocol.MAX_SAFE_INTEGER),
        st.text(max_size=50).map(str.encode),
    ),
    max_size=20,
)


@given(payloads)
def test_sync_messages_round_trip(payload: bytes) -> None:
    assert protocol.decode(protocol.encode_sync_step1(payload)) == SyncStep1(payload)
    assert protocol.decode(protocol.encode_sync_step2(payload)) == SyncStep2(payload)
    assert protocol.decode(protocol.encode_update(payload)) == SyncUpdate(payload)


@given(entries)
def test_awareness_round_trips(items: list[AwarenessEntry]) -> None:
    assert protocol.decode(protocol.encode_awareness(items)) == AwarenessUpdate(tuple(items))


@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_protocol_error(frame: bytes) -> None:
    try:
        protocol.decode(frame)
    except ProtocolError:
        pass


def test_permission_denied_message_is_the_protocol_auth_message() -> None:
    frame = protocol.encode_permission_denied("read-only")
    assert frame[0] == protocol.MSG_AUTH
    assert protocol.decode(frame) == protocol.PermissionDenied("read-only")
