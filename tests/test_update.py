"""Splitting updates and finding what a document has not integrated."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
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
from tests.docgen import content, random_doc


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
