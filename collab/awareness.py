"""Awareness: the presence states (cursors, names) of one room's clients. No I/O.

States are kept as the JSON text clients sent and relayed as is; the server never parses
them beyond checking they are JSON. The clock rules are those of y-protocols: a state
counts only if its clock is newer, or if it is a removal at the same clock. Stock clients
re-send every state they learn, so dropping what is not new keeps relay traffic linear.
"""

from __future__ import annotations

from collections.abc import Iterable

from collab.protocol import NULL_STATE, AwarenessEntry, check_awareness_state


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

        Raises:
            ProtocolError: a new state is not JSON; nothing was changed.
        """
        news = [entry for entry in entries if self._is_news(entry)]
        for entry in news:
            if not entry.removed:
                check_awareness_state(entry.state)
        for entry in news:
            self._clocks[entry.client_id] = entry.clock
            if entry.removed:
                self._states.pop(entry.client_id, None)
            else:
                self._states[entry.client_id] = entry
        return news

    def _is_news(self, entry: AwarenessEntry) -> bool:
        # As in y-protocols, a client never heard of counts as being at clock 0.
        known = self._clocks.get(entry.client_id, 0)
        if entry.clock > known:
            return True
        return entry.clock == known and entry.removed and entry.client_id in self._states

    def remove(self, client_ids: Iterable[int]) -> list[AwarenessEntry]:
        """Drop the states of `client_ids`; return the removal entries to tell the room."""
        removals = []
        for client_id in client_ids:
            if self._states.pop(client_id, None) is not None:
                clock = self._clocks[client_id] + 1
                self._clocks[client_id] = clock
                removals.append(AwarenessEntry(client_id, clock, NULL_STATE))
        return removals
