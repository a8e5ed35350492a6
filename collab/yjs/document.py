"""Document: one Yjs document in memory, and what it has not been able to integrate yet.

Parts of updates can wait: structs after a gap in their client's clocks (Yjs keeps them
pending; Yrs would integrate them out of order, so the live document would show what its
snapshot and every browser do not), and structs or deletions whose dependencies have not
arrived (Yrs keeps those in a pending area that `Doc.get_update()` leaves out, and loses
some when several arrive out of order). All of it is kept here as one merged update,
tried again whenever something new is integrated (within one update Yrs resolves any
order), and included in every full state, so no snapshot can lose it.

Peers are sent what Yrs reports it integrated, never the bytes as received: a received
update may repeat ids this document holds with other content, or carry parts that wait
here, and a peer given those bytes would integrate them where this document did not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pycrdt

from collab.errors import ProtocolError, UpdateRejected
from collab.protocol import EMPTY_STATE_VECTOR, EMPTY_UPDATE
from collab.yjs.update import (
    ID,
    PARENT_KINDS,
    SKIP,
    TYPE,
    ParentRefs,
    UpdateFormatError,
    collect,
    decode_state_vector,
    deletions_only,
    encode_state_vector,
    first_kind,
    hold_gaps,
    parent_refs,
    reaches_beyond,
    single_item,
)

log = logging.getLogger(__name__)

_MAX_RETRIES = 8  # each retry integrated something; a chain longer than this waits
_MAX_KNOWN_TYPES = 100_000  # a cache: forgetting only costs a lookup


@dataclass(slots=True)
class Applied:
    """What applying one update changed: the updates Yrs integrated, in order (empty if
    nothing was new), and whether they may hold more than the sender's own update (parts
    that waited here), so that the sender needs them too."""

    updates: list[bytes] = field(default_factory=list)
    for_sender: bool = False
    # Set when Yrs took a part of the update and then failed on the rest: why.
    refused: str | None = None


def _collect(integrated: list[bytes], event: pycrdt.TransactionEvent) -> None:
    update: bytes = event.update
    if update != EMPTY_UPDATE:
        integrated.append(update)


def warm_up() -> None:
    """Pay pycrdt's one-time start-up cost now: its first `Doc` takes about 25 ms
    (measured), which would otherwise fall on the first client to open a document."""
    Document().close()


class Document:
    """A pycrdt `Doc` plus the merged update of everything it has not integrated."""

    def __init__(self) -> None:
        self._integrated: list[bytes] = []
        self._subscription: pycrdt.Subscription | None = None
        self.ydoc: pycrdt.Doc[Any] = pycrdt.Doc()
        self._observe(self.ydoc)
        self._pending: bytes | None = None
        self._types: set[ID] = set()  # ids of items known to be shared types
        self._sv: dict[int, int] | None = None  # the decoded state vector, while current

    def _observe(self, ydoc: pycrdt.Doc[Any]) -> None:
        """Make `ydoc` the document, observed; the one before is let go."""
        self.close()
        self.ydoc = ydoc
        # The callback holds the list, not this object, so that no cycle passes through
        # Rust, where Python's collector cannot see it.
        self._subscription = ydoc.observe(partial(_collect, self._integrated))

    def close(self) -> None:
        """Let the Yrs document go. A pycrdt Doc with an observer is never freed until it
        is unobserved (found: every room ever unloaded stayed in memory)."""
        if self._subscription is not None:
            self.ydoc.unobserve(self._subscription)
            self._subscription = None

    @property
    def has_pending(self) -> bool:
        return self._pending is not None

    def load(self, state: bytes) -> None:
        """Start from a stored full state (a snapshot), before anything else is applied.

        A snapshot that Yrs encodes back byte for byte held nothing waiting when it was
        taken: it needs none of the reading and checks `apply` does, which would cost a
        hundred times what Yrs takes to load it.
        """
        assert self._pending is None and self.ydoc.get_state() == EMPTY_STATE_VECTOR
        try:
            self._integrate(state)
        except UpdateRejected:
            pass
        else:
            if self.ydoc.get_update() == state:
                self._integrated.clear()
                return
        self._observe(pycrdt.Doc())
        self._sv = None
        self.apply(state, stored=True)

    def apply(self, update: bytes, *, stored: bool = False) -> Applied:
        """Apply one update.

        Args:
            stored: the update was accepted once already (it comes from the store).
                Items whose parent turned out to be no type since (they waited for it)
                are collected as garbage instead of refusing the update: they must not
                take the rest of it with them.

        Returns:
            What the document integrated now, which is what peers should be sent: usually
            the new part of `update`; nothing if all of it waits or was known; with the
            earlier pending parts it made ready.

        Raises:
            UpdateRejected: the update cannot be decoded; the document is unchanged.
        """
        had_pending = self._pending is not None
        self._integrated.clear()
        if not had_pending and (simple := self._apply_simple(update)) is not None:
            return simple
        try:
            refs = parent_refs(update)
            if stored:
                update = self._collected(update, refs)
            elif misplaced := refs.misplaced or self._misplaced(refs):
                raise UpdateRejected(f"the parent of the item {misplaced[0]} is not a type")
            ready, held = hold_gaps(update, self._clocks())
            # Merging first also checks that Yrs can read the held part: a refusal must
            # come before anything of the update is integrated.
            pending = self._merged(held)
        except (UpdateFormatError, ValueError) as exc:
            raise UpdateRejected(str(exc)) from exc
        if ready is not None:
            try:
                self._integrate(ready)
            except UpdateRejected:
                # Yrs may have failed on a part it keeps pending itself (an item whose
                # parent turns out not to be a type): without that, try once more. What
                # it integrated before failing is in the rebuilt document too.
                try:
                    if self._pending is None or not self._forget_yrs_pending():
                        raise
                    self._integrate(ready)
                except UpdateRejected as failed:
                    if not self._integrated:
                        raise
                    return self._partly(had_pending, failed)
        self._pending = pending
        if ready is not None:
            self._keep(self._residue(ready))
            if self._pending is not None:
                self._retry()
        return self._done(had_pending)

    def _apply_simple(self, update: bytes) -> Applied | None:
        """Apply a keystroke (one item after its origin) or a deletion of known items,
        which make most of the traffic, without reading the update through; None for
        any other update, or one that is not in order here.

        Raises:
            UpdateRejected: the update cannot be read or applied; nothing changed.
        """
        try:
            item = single_item(update)
            deletions = None if item is not None else deletions_only(update)
        except UpdateFormatError as exc:
            raise UpdateRejected(str(exc)) from exc
        clocks = self._clocks()
        if item is not None:
            client, clock, length = item
            if clock != clocks.get(client, 0):
                return None  # known already, or after a gap
            self._integrate(update)
            if self._integrated:
                clocks[client] = clock + length
                self._sv = clocks
            else:  # its origin has not come: Yrs keeps it waiting, and so do we
                self._keep(update)
            return self._done(False)
        if deletions is None or any(
            clock + length > clocks.get(client, 0) for client, clock, length in deletions
        ):
            return None
        self._integrate(update)
        self._sv = clocks  # deletions leave the state vector as it was
        return self._done(False)

    def _done(self, had_pending: bool, refused: str | None = None) -> Applied:
        applied = Applied(list(self._integrated), for_sender=had_pending, refused=refused)
        self._integrated.clear()
        return applied

    def _partly(self, had_pending: bool, exc: UpdateRejected) -> Applied:
        # Yrs took part of the update before it failed, and cannot give it back: peers
        # and the store get that part like any other, or they would differ from here.
        log.warning("took part of an update that then failed: %s", exc)
        return self._done(had_pending, refused=str(exc))

    def _misplaced(self, refs: ParentRefs) -> list[ID]:
        """The items of `refs.foreign` whose parent here is not a shared type (see
        PARENT_KINDS); those whose parent is not here yet wait for it."""
        misplaced = []
        for parent, items in refs.foreign.items():
            if parent in self._types:
                continue
            kind = self._kind_at(parent)
            if kind == TYPE:
                if len(self._types) >= _MAX_KNOWN_TYPES:
                    self._types.clear()
                self._types.add(parent)
            elif kind is not None and kind not in PARENT_KINDS:
                misplaced += items
        return misplaced

    def _collected(self, update: bytes, refs: ParentRefs | None = None) -> bytes:
        """`update`, accepted once already, with its items that cannot apply here (their
        parent is no type) collected as garbage, so that they take nothing else with them.

        Raises:
            UpdateFormatError: `update` is not readable.
        """
        refs = parent_refs(update) if refs is None else refs
        misplaced = refs.misplaced + self._misplaced(refs)
        if not misplaced:
            return update
        log.warning("collected %d items whose parent is not a type", len(misplaced))
        return collect(update, misplaced)

    def _kind_at(self, item: ID) -> int | None:
        """The kind of the struct at `item` (None if this document does not hold it)."""
        client, clock = item
        clocks = dict(self._clocks())
        if clock >= clocks.get(client, 0):
            return None
        clocks[client] = clock  # what we have of `client` from `item` on, and no other
        try:
            return first_kind(self.ydoc.get_update(encode_state_vector(clocks)))
        except (ValueError, UpdateFormatError):
            return SKIP  # unreadable here: refuse rather than guess

    def _integrate(self, update: bytes) -> None:
        """Hand `update` to Yrs. Raises UpdateRejected for any failure of pycrdt."""
        self._sv = None
        try:
            self.ydoc.apply_update(update)
        except Exception as exc:  # pycrdt raises ValueError and RuntimeError
            raise UpdateRejected(str(exc)) from exc
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":  # pyo3's, a BaseException
                raise
            # Input made pycrdt fail an internal check: refused like any bad update (the
            # peer's close is logged with this reason), not a fault of the server's.
            raise UpdateRejected(f"pycrdt panicked: {exc}") from None

    def _forget_yrs_pending(self) -> bool:
        """Rebuild the Yrs document from its state, which leaves out what Yrs keeps
        pending; all of that is in `self._pending` too, and is retried from there.
        Returns False, changing nothing, if Yrs cannot load its own state (fuzzing
        found such states, see the crafted history test)."""
        fresh: pycrdt.Doc[Any] = pycrdt.Doc()
        try:
            fresh.apply_update(self.ydoc.get_update())
        except Exception as exc:  # noqa: BLE001 - pycrdt raises ValueError and RuntimeError
            log.warning("could not rebuild a document from its own state: %s", exc)
            return False
        self._observe(fresh)
        self._sv = None
        log.warning("rebuilt a document without the pending parts Yrs held")
        return True

    def _merged(self, part: bytes | None) -> bytes | None:
        """The pending update with `part` added. Raises ValueError if Yrs cannot read it."""
        if part is None:
            return self._pending
        if self._pending is None:
            return pycrdt.merge_updates(part)
        return pycrdt.merge_updates(self._pending, part)

    def _keep(self, part: bytes | None) -> None:
        self._pending = self._merged(part)

    def _retry(self) -> None:
        """Integrate what of the pending parts has become ready."""
        for _ in range(_MAX_RETRIES):
            pending, self._pending = self._pending, None
            assert pending is not None
            clocks = self.ydoc.get_state()
            try:
                ready, held = hold_gaps(pending, decode_state_vector(clocks))
            except UpdateFormatError as exc:
                log.warning("dropped pending parts that cannot be read: %s", exc)
                return
            self._keep(held)
            if ready is None:
                return
            try:
                self._integrate(self._collected(ready))
            except (UpdateRejected, UpdateFormatError) as exc:
                # e.g. an item whose parent turned out to be a string: it can never apply.
                log.warning("dropped pending parts that can never apply: %s", exc)
                return
            residue = self._residue(ready)
            self._keep(residue)
            if self._pending is None or (residue is not None and self.ydoc.get_state() == clocks):
                return  # all done, or nothing new came of it

    def _clocks(self) -> dict[int, int]:
        """The state vector, decoded (not to be changed by the caller). Decoding costs in
        proportion to the clients a document ever had, so it is kept while current."""
        if self._sv is None:
            self._sv = decode_state_vector(self.ydoc.get_state())
        return self._sv

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
        except Exception as exc:  # pycrdt raises ValueError and RuntimeError
            raise UpdateRejected(str(exc)) from exc

    def state_vector(self) -> bytes:
        return self.ydoc.get_state()

    def diff(self, state_vector: bytes) -> bytes:
        """Everything this document has integrated that a peer at `state_vector` lacks.

        Pending parts stay out: peers get them when they integrate here, as part of the
        update that unblocks them. Sent early, a Yrs peer integrates a struct after a clock
        gap that this document (and every Yjs peer) holds back, and its copy diverges.

        Raises:
            ProtocolError: `state_vector` is not a valid state vector.
        """
        try:
            return self.ydoc.get_update(state_vector)
        except ValueError as exc:
            raise ProtocolError(f"bad state vector: {exc}") from exc

    def state(self) -> bytes:
        """The full state, the pending parts included: what a snapshot must hold."""
        return self._with_pending(self.ydoc.get_update())

    def _with_pending(self, update: bytes) -> bytes:
        if self._pending is None:
            return update
        # Only what the document lacks: a pending struct whose id it has meanwhile
        # integrated (from another update with the same id) must not win in the merge.
        lacking = pycrdt.get_update(self._pending, self.ydoc.get_state())
        return pycrdt.merge_updates(update, lacking)
