"""Document: one Yjs document in memory, and what it has not been able to integrate yet.

Yrs keeps structs and deletions whose dependencies are missing in a pending area that
`Doc.get_update()` leaves out, and it loses some of them when several clients' pending
parts arrive out of order. A snapshot that dropped them would lose edits, so for every
update that does not integrate fully, the part that did not (its residue) is kept here,
re-applied after each later update, and included in every full state.
"""

from __future__ import annotations

from typing import Any

import pycrdt

from collab.errors import ProtocolError, UpdateRejected
from collab.protocol import EMPTY_UPDATE
from collab.update import decode_state_vector, reaches_beyond


class Document:
    """A pycrdt `Doc` plus the residues of updates it has not integrated."""

    def __init__(self) -> None:
        self.ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
        self._residues: list[bytes] = []

    @property
    def has_pending(self) -> bool:
        return bool(self._residues)

    def apply(self, update: bytes) -> None:
        """Apply one update.

        Raises:
            UpdateRejected: the update cannot be decoded; the document is unchanged.
        """
        try:
            self.ydoc.apply_update(update)
        except ValueError as exc:
            raise UpdateRejected(str(exc)) from exc
        if self._residues:
            self._retry_residues()
        self._keep_residue(update)

    def _keep_residue(self, update: bytes) -> None:
        state_vector = self.ydoc.get_state()
        residue = pycrdt.get_update(update, state_vector)
        if residue == EMPTY_UPDATE:
            return
        # A first byte of 0 means no structs past the state vector; only deletions are
        # left to check, and those are usually of items the document already has.
        if residue[0] != 0 or reaches_beyond(residue, decode_state_vector(state_vector)):
            self._residues.append(residue)

    def _retry_residues(self) -> None:
        residues, self._residues = self._residues, []
        for residue in residues:
            self.ydoc.apply_update(residue)
        for residue in residues:
            self._keep_residue(residue)

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
        return pycrdt.merge_updates(update, *self._residues) if self._residues else update

    def state(self) -> bytes:
        """The full state, residues included: what a snapshot must hold."""
        update = self.ydoc.get_update()
        return pycrdt.merge_updates(update, *self._residues) if self._residues else update
