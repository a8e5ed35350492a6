"""Awareness clock rules: only news counts, and removals are told."""

from __future__ import annotations

import pytest

from collab.awareness import Awareness
from collab.errors import ProtocolError
from collab.protocol import AwarenessEntry


def entry(client: int, clock: int, state: bytes = b'{"x":1}') -> AwarenessEntry:
    return AwarenessEntry(client, clock, state)


def test_newer_clock_is_news_and_older_or_equal_is_not() -> None:
    awareness = Awareness()
    assert awareness.apply([entry(1, 3)]) == [entry(1, 3)]
    assert awareness.apply([entry(1, 3)]) == []  # a re-sent state
    assert awareness.apply([entry(1, 2)]) == []
    assert awareness.apply([entry(1, 4, b'{"x":2}')]) == [entry(1, 4, b'{"x":2}')]
    assert awareness.states == [entry(1, 4, b'{"x":2}')]


def test_removal_at_the_same_clock_counts_once() -> None:
    awareness = Awareness()
    awareness.apply([entry(1, 3)])
    assert awareness.apply([entry(1, 3, b"null")]) == [entry(1, 3, b"null")]
    assert awareness.apply([entry(1, 3, b"null")]) == []
    assert awareness.states == []


def test_only_the_news_of_a_mixed_update_is_returned() -> None:
    awareness = Awareness()
    awareness.apply([entry(1, 5)])
    assert awareness.apply([entry(1, 5), entry(2, 1)]) == [entry(2, 1)]


def test_unknown_client_at_clock_zero_is_not_news() -> None:
    # y-protocols takes a client it never heard of to be at clock 0: stock clients
    # would drop such a state, so relaying or keeping it would only disagree with them.
    assert Awareness().apply([entry(9, 0)]) == []


def test_remove_returns_null_entries_with_the_next_clock() -> None:
    awareness = Awareness()
    awareness.apply([entry(1, 5), entry(2, 1)])
    assert awareness.remove([1, 3]) == [AwarenessEntry(1, 6, b"null")]
    assert awareness.states == [entry(2, 1)]


def test_invalid_json_is_refused_without_changing_anything() -> None:
    awareness = Awareness()
    with pytest.raises(ProtocolError):
        awareness.apply([entry(1, 1), entry(2, 1, b"{oops")])
    assert awareness.states == []


def test_clocks_of_clients_long_gone_are_forgotten_past_a_bound() -> None:
    awareness = Awareness()
    awareness.apply([AwarenessEntry(1, 1, b"{}")])  # present all along
    for client in range(2, 30_000):  # removals for ever new ids
        awareness.apply([AwarenessEntry(client, 1, b"null")])
    assert len(awareness._clocks) <= 10_001
    assert [entry.client_id for entry in awareness.states] == [1]
    # The most recent leavers are still known: an older state of theirs is no news.
    assert awareness.apply([AwarenessEntry(29_999, 1, b"{}")]) == []
