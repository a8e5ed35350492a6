"""Property tests of the parts that read untrusted bytes: the wire format, the Yjs update
reader and the awareness clock rules, on arbitrary input and on mutated valid input.

What each reader may raise is part of its contract: `protocol.decode` only
`ProtocolError` (subclasses included), the update reader only `UpdateFormatError`,
`Awareness.apply` only `ProtocolError`. Anything else escapes the server's handlers.
The live-server counterpart is tests/test_fuzz.py (and scripts/fuzz.py).
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pycrdt import write_var_uint

from collab import protocol
from collab.awareness import Awareness
from collab.errors import ProtocolError
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
from collab.yjs.update import (
    UpdateFormatError,
    clock_ranges,
    decode_state_vector,
    reaches_beyond,
    split_update,
    structs,
)
from tests.docgen import content, edit, random_doc

# --- strategies -----------------------------------------------------------------------

# Where lib0's varuint changes length, where JavaScript numbers lose precision, and the
# ends of 32 and 64 bits.
EDGES = sorted(
    {0, 1, 2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1}
    | {2 ** (7 * n) - 1 for n in range(1, 10)}
    | {2 ** (7 * n) for n in range(1, 10)}
    | {2**31 - 1, 2**31, 2**32 - 1, 2**32}
)
varuints = st.one_of(st.sampled_from(EDGES), st.integers(0, 2**64 - 1))
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


def mutate(data: st.DataObject, blob: bytes) -> bytes:
    """One to three random mutations of `blob`: bit flips, truncation, insertion,
    deletion, an edge byte, or a varuint (a length, a count, a clock) replaced."""
    out = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(
            st.sampled_from(["flip", "truncate", "insert", "delete", "byte", "varuint"]),
            label="kind",
        )
        at = data.draw(st.integers(0, len(out)), label="at")
        if kind == "flip" and at < len(out):
            out[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
        elif kind == "delete":
            del out[at : at + data.draw(st.integers(1, 8), label="deleted")]
        elif kind == "byte" and at < len(out):
            out[at] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]), label="byte")
        elif kind == "varuint" and at < len(out):
            end = at
            while end < len(out) and out[end] & 0x80:
                end += 1
            out[at : end + 1] = write_var_uint(data.draw(varuints, label="value"))
    return bytes(out)


# --- the wire format --------------------------------------------------------------------


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


# --- the update reader ----------------------------------------------------------------


@functools.cache
def corpus() -> tuple[bytes, ...]:
    """Valid v1 updates of every shape a server sees: full states of multi-client
    documents, incremental updates of each edit (text, formatting, map, array, XML,
    deletions), and diffs against an older state vector."""
    found: list[bytes] = []
    for seed in range(4):
        whole = random_doc(seed, clients=2, steps=30)
        found.append(whole.get_update())
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        updates: list[bytes] = []
        doc.observe(lambda event, updates=updates: updates.append(event.update))
        rng = random.Random(seed)
        for step in range(12):
            edit(doc, rng, step)
        middle = doc.get_state()
        for step in range(12, 20):
            edit(doc, rng, step)
        found += updates[::3]
        found.append(doc.get_update(middle))
    return tuple(found)


def readers(update: bytes) -> list[Callable[[], object]]:
    return [
        lambda: structs(update),
        lambda: clock_ranges(update),
        lambda: reaches_beyond(update, {}),
        lambda: reaches_beyond(update, {1: 5}),
        lambda: split_update(update, 1),
        lambda: split_update(update, 64),
        lambda: decode_state_vector(update),
    ]


def reads_or_update_format_error(update: bytes) -> None:
    for read in readers(update):
        try:
            read()
        except UpdateFormatError:
            pass


# A string item of root "t" whose one byte is not UTF-8.
INVALID_UTF8_STRING = bytes.fromhex("010101000401017401ff00")


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=300),
        # One block of one struct of a random kind: reaches each content reader.
        st.tuples(
            st.just(b"\x01\x01\x01\x00"),
            st.integers(0, 255).map(lambda info: bytes([info])),
            st.binary(max_size=40),
        ).map(b"".join),
    )
)
@example(INVALID_UTF8_STRING)
def test_update_reader_on_arbitrary_bytes_raises_only_update_format_error(update: bytes) -> None:
    reads_or_update_format_error(update)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.data())
def test_update_reader_on_mutated_updates_raises_only_update_format_error(
    pick: int, data: st.DataObject
) -> None:
    source = corpus()[pick % len(corpus())]
    reads_or_update_format_error(mutate(data, source))


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    before=st.integers(1, 30),
    after=st.integers(1, 30),
    max_bytes=st.integers(8, 2000),
)
def test_pieces_of_an_incremental_update_rebuild_the_document(
    seed: int, before: int, after: int, max_bytes: int
) -> None:
    """tests/test_update.py splits full states; these updates start past clock 0, as
    every live update does."""
    rng = random.Random(seed)
    doc = random_doc(seed, clients=2, steps=before)
    old = doc.get_update()
    old_vector = doc.get_state()
    for step in range(before, before + after):
        edit(doc, rng, step)
    diff = doc.get_update(old_vector)
    pieces = split_update(diff, max_bytes)
    rebuilt: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in [old, *pieces]:
        rebuilt.apply_update(update)
    assert content(rebuilt) == content(doc)
    # The pieces cover the clocks of the whole, and each starts where the old state ends.
    covered: dict[int, tuple[int, int]] = {}
    for piece in pieces:
        for client, (first, end) in clock_ranges(piece).items():
            low, high = covered.get(client, (first, end))
            covered[client] = (min(low, first), max(high, end))
    assert covered == clock_ranges(diff)
    old_clocks = decode_state_vector(old_vector)
    new_clocks = decode_state_vector(doc.get_state())
    assert clock_ranges(diff) == {
        client: (old_clocks.get(client, 0), end)
        for client, end in new_clocks.items()
        if end > old_clocks.get(client, 0)
    }


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), clients=st.integers(1, 4))
def test_reader_agrees_with_the_state_vector_of_a_full_state(seed: int, clients: int) -> None:
    doc = random_doc(seed, clients, steps=40)
    state = doc.get_update()
    vector = decode_state_vector(doc.get_state())
    assert clock_ranges(state) == {client: (0, end) for client, end in vector.items()}
    lengths: dict[int, int] = {}
    for (client, clock), struct in structs(state):
        assert clock == lengths.get(client, 0)  # structs of a client are contiguous
        lengths[client] = clock + struct.length
    assert lengths == vector
    assert not reaches_beyond(state, vector)
    assert reaches_beyond(state, {})
    some = next(iter(vector))
    assert reaches_beyond(state, {**vector, some: vector[some] - 1})


# --- awareness --------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
valid_states = st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(
    lambda value: json.dumps(value).encode()
)


def nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


any_states = st.one_of(
    valid_states,
    st.just(protocol.NULL_STATE),
    st.binary(max_size=20),
    json_values.map(lambda value: json.dumps(value).encode()),  # also lists, numbers...
    st.integers(1, 5000).map(nested),
)
small_clients = st.integers(0, 4)
small_clocks = st.integers(0, 6)


def entries_of(state: st.SearchStrategy[bytes]) -> st.SearchStrategy[list[AwarenessEntry]]:
    return st.lists(
        st.builds(AwarenessEntry, small_clients | varuints, small_clocks | varuints, state),
        max_size=5,
    )


def snapshot(awareness: Awareness) -> list[AwarenessEntry]:
    return sorted(awareness.states, key=lambda entry: entry.client_id)


@settings(max_examples=300)
@given(st.lists(entries_of(any_states), max_size=8))
@example([[AwarenessEntry(1, 1, nested(3000))]])
def test_awareness_apply_raises_only_protocol_error_and_refuses_whole(
    batches: list[list[AwarenessEntry]],
) -> None:
    awareness = Awareness()
    for batch in batches:
        before = snapshot(awareness)
        try:
            news = awareness.apply(batch)
        except ProtocolError:
            assert snapshot(awareness) == before  # nothing of a refused update is kept
            continue
        assert all(entry in batch for entry in news)
        for entry in awareness.states:
            assert not entry.removed
            protocol.check_awareness_state(entry.state)


class ClockModel:
    """y-protocols' applyAwarenessUpdate, entry after entry, as stock clients run it."""

    def __init__(self) -> None:
        self.clocks: dict[int, int] = {}
        self.states: dict[int, AwarenessEntry] = {}

    def apply(self, entries: list[AwarenessEntry]) -> list[AwarenessEntry]:
        news = []
        for entry in entries:
            known = self.clocks.get(entry.client_id, 0)
            present = entry.client_id in self.states
            if entry.clock > known or (entry.clock == known and entry.removed and present):
                news.append(entry)
                self.clocks[entry.client_id] = entry.clock
                if entry.removed:
                    self.states.pop(entry.client_id, None)
                else:
                    self.states[entry.client_id] = entry
        return news

    def remove(self, client_ids: list[int]) -> None:
        for client_id in client_ids:
            if self.states.pop(client_id, None) is not None:
                self.clocks[client_id] += 1


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            entries_of(valid_states | st.just(protocol.NULL_STATE)).map(lambda e: ("apply", e)),
            st.lists(small_clients, max_size=3).map(lambda ids: ("remove", ids)),
        ),
        max_size=10,
    )
)
@example([("apply", [AwarenessEntry(1, 5, b'{"a":1}'), AwarenessEntry(1, 3, b'{"b":2}')])])
def test_awareness_follows_the_clock_rules_of_stock_clients(
    steps: list[tuple[str, Any]],
) -> None:
    """The server's states and clocks are what every stock client holds after the same
    updates; a kept clock never goes back."""
    awareness, model = Awareness(), ClockModel()
    for action, argument in steps:
        if action == "apply":
            news = awareness.apply(argument)
            assert news == model.apply(argument)
        else:
            removals = awareness.remove(argument)
            expected = [cid for cid in dict.fromkeys(argument) if cid in model.states]
            assert [(e.client_id, e.removed) for e in removals] == [(c, True) for c in expected]
            assert all(e.clock == model.clocks[e.client_id] + 1 for e in removals)
            model.remove(argument)
        assert snapshot(awareness) == sorted(model.states.values(), key=lambda e: e.client_id)


def parses_as_stock_clients_do(state: bytes) -> bool:
    """JSON.parse(TextDecoder.decode(state)): UTF-8 only, no NaN or Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    try:
        json.loads(state.decode("utf-8"), parse_constant=refuse)
    except ValueError:
        return False
    return True


@settings(max_examples=200)
@given(
    st.one_of(
        valid_states,
        st.sampled_from([b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}']),
        valid_states.map(lambda state: state.decode().encode("utf-16-le")),
        valid_states.map(lambda state: state.decode().encode("utf-32")),
        st.binary(max_size=12),
    )
)
@example(b'{"cursor":NaN}')
@example("{}".encode("utf-16-le"))
def test_kept_states_are_json_that_stock_clients_parse(state: bytes) -> None:
    """protocol.check_awareness_state exists because one state that stock clients cannot
    JSON.parse, relayed, breaks every editor in the room."""
    awareness = Awareness()
    try:
        awareness.apply([AwarenessEntry(1, 1, state)])
    except ProtocolError:
        return
    assert parses_as_stock_clients_do(state), f"kept and relayed: {state!r}"
