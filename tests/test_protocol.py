"""The wire format: byte literals in, exact messages out, and back; and, on arbitrary and
mutated frames, `protocol.decode` raises only `ProtocolError` (subclasses included), as
its contract says: anything else would escape the server's handlers."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pycrdt import write_var_uint

from collab import protocol
from collab.errors import ProtocolError, UnsupportedMessage
from collab.protocol import (
    AwarenessEntry,
    AwarenessUpdate,
    Message,
    PermissionDenied,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)
from tests.strategies import EDGES, mutate


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


# --- properties: arbitrary and mutated frames raise only ProtocolError ----------------

# Awareness client ids and clocks are relayed to browsers, whose lib0 stops at 2**53 - 1.
safe_varuints = st.one_of(
    st.sampled_from([edge for edge in EDGES if edge <= protocol.MAX_SAFE_INTEGER]),
    st.integers(0, protocol.MAX_SAFE_INTEGER),
)
states = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=30).map(str.encode),
    st.just(protocol.NULL_STATE),
)
awareness_entries = st.builds(AwarenessEntry, safe_varuints, safe_varuints, states)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(SyncStep1, st.binary(max_size=300)),
    st.builds(SyncStep2, st.binary(max_size=300)),
    st.builds(SyncUpdate, st.binary(max_size=300)),
    st.builds(AwarenessUpdate, st.lists(awareness_entries, max_size=8).map(tuple)),
    st.just(QueryAwareness()),
    st.builds(PermissionDenied, st.text(max_size=80)),
)


def encode(message: Message) -> bytes:
    match message:
        case SyncStep1(state_vector):
            return protocol.encode_sync_step1(state_vector)
        case SyncStep2(update):
            return protocol.encode_sync_step2(update)
        case SyncUpdate(update):
            return protocol.encode_update(update)
        case AwarenessUpdate(entries):
            return protocol.encode_awareness(entries)
        case QueryAwareness():
            return protocol.encode_query_awareness()
        case PermissionDenied(reason):
            return protocol.encode_permission_denied(reason)
    raise AssertionError(message)


@given(messages)
def test_every_message_kind_round_trips(message: Message) -> None:
    assert protocol.decode(encode(message)) == message


@given(st.lists(st.tuples(safe_varuints, safe_varuints), min_size=1, max_size=4))
def test_awareness_clients_and_clocks_round_trip_up_to_2_53(
    pairs: list[tuple[int, int]],
) -> None:
    entries = tuple(AwarenessEntry(client, clock, b"{}") for client, clock in pairs)
    assert protocol.decode(protocol.encode_awareness(entries)) == AwarenessUpdate(entries)


@given(st.integers(protocol.MAX_SAFE_INTEGER + 1, 2**64 - 1), st.booleans())
def test_awareness_clients_and_clocks_browsers_cannot_read_are_refused(
    value: int, as_client: bool
) -> None:
    entry = AwarenessEntry(value, 1, b"{}") if as_client else AwarenessEntry(1, value, b"{}")
    with pytest.raises(ProtocolError):
        protocol.decode(protocol.encode_awareness([entry]))


@given(st.sampled_from([0, 1, 127, 128, 16383, 16384, 70000]))
def test_payload_lengths_at_varuint_boundaries_round_trip(length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    assert protocol.decode(protocol.encode_update(payload)) == SyncUpdate(payload)


def awareness_frame(client: bytes, clock: bytes) -> bytes:
    payload = b"\x01" + client + clock + b"\x02{}"
    return b"\x01" + write_var_uint(len(payload)) + payload


@given(st.integers(2**64, 2**100), st.booleans())
@example(2**64, True)
@example(2**70 - 1, False)
def test_integers_beyond_64_bits_are_refused(value: int, as_client: bool) -> None:
    """lib0.py's limit is 64 bits ("integer longer than 64 bits"), but a 10-byte varuint
    carries 70: the 6 bits past 64 must not be let through."""
    big, one = write_var_uint(value), write_var_uint(1)
    frame = awareness_frame(big, one) if as_client else awareness_frame(one, big)
    with pytest.raises(ProtocolError):
        protocol.decode(frame)


@given(messages, st.data())
def test_strict_prefixes_and_trailing_bytes_are_protocol_errors(
    message: Message, data: st.DataObject
) -> None:
    frame = encode(message)
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    with pytest.raises(ProtocolError):
        protocol.decode(frame[:cut])
    with pytest.raises(ProtocolError):
        protocol.decode(frame + data.draw(st.binary(min_size=1, max_size=4), label="tail"))


def decodes_or_protocol_error(frame: bytes) -> None:
    try:
        protocol.decode(frame)
    except ProtocolError:
        pass


@given(
    st.one_of(
        st.binary(max_size=400),
        # Random bodies behind each known type byte, so the parsers go past the first byte.
        st.tuples(
            st.sampled_from([b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01", b"\x02\x00"]),
            st.binary(max_size=200),
        ).map(b"".join),
    )
)
def test_arbitrary_frames_raise_only_protocol_error(frame: bytes) -> None:
    decodes_or_protocol_error(frame)


@settings(max_examples=300)
@given(messages, st.data())
def test_mutated_valid_frames_raise_only_protocol_error(
    message: Message, data: st.DataObject
) -> None:
    decodes_or_protocol_error(mutate(data, encode(message)))
