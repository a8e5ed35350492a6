"""Document: one Yjs document in memory, and what it has not been able to integrate yet.

Yrs keeps structs and deletions whose dependencies are missing in a pending area that
`Doc.get_update()` leaves out, and it loses pending parts when several of them arrive in
separate updates that depend on each other. A snapshot that dropped them would lose
edits. So the part of each update that did not integrate (its residue) is kept here as
one merged update, re-applied whole after every later update (within one update Yrs
resolves any order), and included in every full state.
"""

from __future__ import annotations

from typing import Any

import pycrdt

from collab.errors import ProtocolError, UpdateRejected
from collab.protocol import EMPTY_UPDATE
from collab.update import decode_state_vector, reaches_beyond


class Document:
    """A pycrdt `Doc` plus the merged residue of the updates it has not integrated."""

    def __init__(self) -> None:
        self.ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
        self._pending: bytes | None = None

    @property
    def has_pending(self) -> bool:
        return self._pending is not None

    def apply(self, update: bytes) -> None:
        """Apply one update.

        Raises:
            UpdateRejected: the update cannot be decoded; the document is unchanged.
        """
        try:
            self.ydoc.apply_update(update)
        except ValueError as exc:
            raise UpdateRejected(str(exc)) from exc
        if self._pending is None:
            self._pending = self._residue(update)
        else:
            self.ydoc.apply_update(self._pending)
            self._pending = self._residue(pycrdt.merge_updates(self._pending, update))

    def _residue(self, update: bytes) -> bytes | None:
        """The part of `update` the document has not integrated, if any."""
        state_vector = self.ydoc.get_state()
        residue = pycrdt.get_update(update, state_vector)
        if residue == EMPTY_UPDATE:
            return None
        # A first byte of 0 means no structs past the state vector; only deletions are
        # left to check, and those are usually of items the document already has.
        if residue[0] != 0 or reaches_beyond(residue, decode_state_vector(state_vector)):
            return residue
        return None

    def holds_new_structs(self, update: bytes) -> bool:
        """Whether `update` has structs this document does not have yet.

        Raises:
            UpdateRejected: the update cannot be decoded.
        """
        try:
            return pycrdt.get_update(update, self.ydoc.get_state())[0] != 0
        except ValueError as exc:
            raise UpdateRejected(str(exc)) from exc

    def state_vector(self) -> bytes:
        return self.ydoc.get_state()

    def diff(self, state_vector: bytes) -> bytes:
        """Everything this document has that a peer at `state_vector` lacks.

        Raises:
            ProtocolError: `state_vector` is not a valid state vector.
        """
        try:
            update = self.ydoc.get_update(state_vector)
        except ValueError as exc:
            raise ProtocolError(f"bad state vector: {exc}") from exc
        return update if self._pending is None else pycrdt.merge_updates(update, self._pending)

    def state(self) -> bytes:
        """The full state, the pending residue included: what a snapshot must hold."""
        update = self.ydoc.get_update()
        return update if self._pending is None else pycrdt.merge_updates(update, self._pending)
