"""Awareness: the presence states (cursors, names) of one room's clients. No I/O.

States are kept as the JSON text clients sent and relayed as is; the server never parses
them beyond checking they are JSON. The clock rules are those of y-protocols: a state
counts only if its clock is newer, or if it is a removal at the same clock. Stock clients
re-send every state they learn, so dropping what is not new keeps relay traffic linear.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from collab.protocol import NULL_STATE, AwarenessEntry, check_awareness_state

# Clocks of clients that left are kept, so that a late, older state of theirs is not
# taken for news; this many of them at most.
_MAX_GONE = 10_000


class Awareness:
    """The newest known state and clock of every client id in a room."""

    def __init__(self) -> None:
        self._states: dict[int, AwarenessEntry] = {}
        self._clocks: dict[int, int] = {}

    @property
    def states(self) -> list[AwarenessEntry]:
        """Every present (non-null) state."""
        return list(self._states.values())

    def apply(self, entries: Iterable[AwarenessEntry]) -> list[AwarenessEntry]:
        """Take in the entries that are news; return exactly those.

        Entries are judged one after another, as stock clients do, so a newer and then an
        older state of one client keeps the newer. As in y-protocols, a client never heard
        of counts as being at clock 0.

        Raises:
            ProtocolError: a new state is not JSON; nothing was changed.
        """
        clocks: dict[int, int] = {}  # what this update has changed so far
        present: dict[int, bool] = {}
        news = []
        for entry in entries:
            client = entry.client_id
            known = clocks.get(client, self._clocks.get(client, 0))
            there = present.get(client, client in self._states)
            if entry.clock > known or (entry.clock == known and entry.removed and there):
                if not entry.removed:
                    check_awareness_state(entry.state)
                clocks[client] = entry.clock
                present[client] = not entry.removed
                news.append(entry)
        for entry in news:
            self._clocks.pop(entry.client_id, None)  # newest last, for _forget
            self._clocks[entry.client_id] = entry.clock
            if entry.removed:
                self._states.pop(entry.client_id, None)
            else:
                self._states[entry.client_id] = entry
        self._forget()
        return news

    def _forget(self) -> None:
        """Drop the clocks of the longest-gone clients past a bound: a client sending
        removals for ever new ids must not grow the room's memory without end."""
        excess = len(self._clocks) - len(self._states) - _MAX_GONE
        if excess > 0:
            oldest_gone = (c for c in self._clocks if c not in self._states)
            for client_id in list(itertools.islice(oldest_gone, excess)):
                del self._clocks[client_id]

    def remove(self, client_ids: Iterable[int]) -> list[AwarenessEntry]:
        """Drop the states of `client_ids`; return the removal entries to tell the room."""
        removals = []
        for client_id in client_ids:
            if self._states.pop(client_id, None) is not None:
                clock = self._clocks.pop(client_id) + 1
                self._clocks[client_id] = clock
                removals.append(AwarenessEntry(client_id, clock, NULL_STATE))
        self._forget()
        return removals
