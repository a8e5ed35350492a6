"""Splitting updates and finding what a document has not integrated; and, on arbitrary and
mutated updates, the reader raises only `UpdateFormatError`, as its contract says."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collab.yjs.update import (
    GC,
    SKIP,
    UpdateFormatError,
    clock_ranges,
    collect,
    decode_state_vector,
    reaches_beyond,
    split_update,
    structs,
)
from tests.docgen import content, edit, random_doc
from tests.strategies import mutate


def apply_all(updates: list[bytes]) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), clients=st.integers(1, 4), max_bytes=st.integers(16, 4000))
def test_pieces_applied_in_order_rebuild_the_document(
    seed: int, clients: int, max_bytes: int
) -> None:
    original = random_doc(seed, clients)
    state = original.get_update()
    pieces = split_update(state, max_bytes)
    assert content(apply_all(pieces)) == content(original)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_pieces_stay_near_the_limit(seed: int) -> None:
    state = random_doc(seed, clients=2, steps=200).get_update()
    pieces = split_update(state, 500)
    assert len(pieces) > 1
    # A piece may exceed the limit by one struct and its block header, no more.
    assert max(len(piece) for piece in pieces) < 500 + 200


def test_small_update_is_not_split() -> None:
    state = random_doc(1, steps=5).get_update()
    assert split_update(state, len(state)) == [state]


def test_emoji_lengths_count_in_utf16_units() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    for _ in range(50):
        text.insert(0, "😀é")
    pieces = split_update(doc.get_update(), 10)
    assert len(pieces) > 10
    assert str(apply_all(pieces).get("t", type=pycrdt.Text)) == "😀é" * 50


def test_delete_set_larger_than_the_limit_is_split_by_client() -> None:
    doc = random_doc(7, clients=4, steps=300)
    pieces = split_update(doc.get_update(), 64)
    assert content(apply_all(pieces)) == content(doc)


def test_garbage_raises_update_format_error() -> None:
    with pytest.raises(UpdateFormatError):
        split_update(b"\x01\x05" + b"\xff" * 50, 4)


def test_reaches_beyond_sees_structs_and_deletes_past_a_state_vector() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("t", type=pycrdt.Text)
    text += "abc"
    text += "def"
    del text[0:2]
    insert_abc, insert_def, delete_ab = updates
    after_abc = decode_state_vector(apply_all([insert_abc]).get_state())
    assert not reaches_beyond(insert_abc, after_abc)
    assert reaches_beyond(insert_def, after_abc)
    assert not reaches_beyond(delete_ab, after_abc)  # deletes "ab", which it has
    assert reaches_beyond(delete_ab, {})


def test_clock_ranges_of_incremental_updates() -> None:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("t", type=pycrdt.Text)
    text += "abc"
    text += "de"
    assert clock_ranges(updates[0]) == {7: (0, 3)}
    assert clock_ranges(updates[1]) == {7: (3, 5)}
    assert clock_ranges(pycrdt.merge_updates(*updates)) == {7: (0, 5)}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), pick=st.integers(0, 10**6))
def test_collected_items_keep_their_clocks_and_lose_their_content(seed: int, pick: int) -> None:
    original = random_doc(seed, clients=2)
    state = original.get_update()
    items = [item for item, struct in structs(state) if struct.kind not in (GC, SKIP)]
    chosen = items[pick % len(items)]
    collected = collect(state, [chosen])
    doc = apply_all([collected])  # still a valid update
    # Decoded: Yrs encodes a state vector's clients in its hash map's order, which two
    # documents with the same clocks need not share (seen in CI: the same two entries
    # swapped).
    assert decode_state_vector(doc.get_state()) == decode_state_vector(original.get_state())
    kinds = {item: struct.kind for item, struct in structs(collected)}
    assert kinds[chosen] == GC
    # Every other struct is as it was, byte for byte.
    others = {item: state[s.start : s.end] for item, s in structs(state) if item != chosen}
    assert {
        item: collected[s.start : s.end] for item, s in structs(collected) if item != chosen
    } == others


# --- properties: arbitrary and mutated updates raise only UpdateFormatError -----------


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
    """The tests above split full states; these updates start past clock 0, as
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
