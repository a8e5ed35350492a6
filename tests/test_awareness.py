"""Awareness clock rules: only news counts, and removals are told, as stock clients hold
them; `Awareness.apply` raises only `ProtocolError` and keeps only states browsers parse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from collab import protocol
from collab.awareness import Awareness
from collab.errors import ProtocolError
from collab.protocol import AwarenessEntry
from tests.strategies import varuints


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


# --- properties: the clock rules of stock clients, on arbitrary entries and states ------

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
