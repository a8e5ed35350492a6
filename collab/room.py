"""Room: one live document, the peers editing it, and their presence. It decides what goes
to whom and hands frames to peers' outboxes; it never awaits a socket.

The durability promise lives here. An update is applied at once (that validates it, and
later updates build on it) but reaches other peers only after the store has committed it,
and an answer to SyncStep1 computed from the document waits for the same commit. Whatever
a peer receives is therefore on disk. Updates that arrive while a commit is in flight are
committed together and broadcast as one merged update.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import pycrdt

from collab import protocol
from collab.auth import allows
from collab.awareness import Awareness
from collab.config import Settings
from collab.errors import QuotaExceeded, StoreError, UnsupportedMessage, UpdateRejected
from collab.peer import Peer
from collab.store import Store, Version, VersionKind
from collab.yjs.document import Document
from collab.yjs.update import UpdateFormatError, split_update

log = logging.getLogger(__name__)

_MERGE_GROUP = 32  # merge_updates is cheap for tens of updates, superlinear for hundreds
_DENIAL_INTERVAL = 1.0  # seconds between two "not saved" notices to one peer

_Part = tuple["Peer | None", bytes]  # an integrated update, and who sent it (None: all)


class Room:
    """A document while it is loaded. Create with `await Room.load(...)`."""

    def __init__(self, name: str, store: Store, settings: Settings) -> None:
        self.name = name
        self.document = Document()
        self.awareness = Awareness()
        self.peers: dict[Peer, None] = {}  # insertion-ordered set
        self._store = store
        self._settings = settings
        self._owners: dict[int, Peer] = {}
        # Presence news not sent yet, by client id, and the call that will send it.
        self._presence_out: dict[int, protocol.AwarenessEntry] = {}
        self._presence_handle: asyncio.Handle | None = None
        # Applied but not yet committed: (sender, update as received, what to broadcast).
        self._unsaved: list[tuple[Peer | None, bytes, list[_Part]]] = []
        self._applied = 0  # updates applied to the document
        self._durable = 0  # ... of which committed to the store
        self._held: list[tuple[int, Peer, list[bytes]]] = []
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._since_snapshot = 0
        self._snapshot_due: float | None = None
        # Bytes the document takes, for its quota: the last snapshot plus the updates
        # since, which overstates it (updates repeat what they share) but never misses.
        self._size = 0
        self._sync_cache: tuple[bytes, int, list[bytes]] | None = None
        self._closing = False
        # Runs while there is something to commit or a snapshot to take, then ends; the
        # timer starts it again when a snapshot falls due. An idle room holds no task.
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def load(cls, name: str, store: Store, settings: Settings) -> Room:
        """Load `name` from the store (latest snapshot, then the log after it)."""
        stored = await store.load(name)
        room = cls(name, store, settings)
        if stored.state:
            room.document.load(stored.state)
            room._size += len(stored.state)
        for update in stored.updates:
            try:
                applied = room.document.apply(update, stored=True)
            except UpdateRejected as exc:
                log.error("%s: skipped a stored update that does not apply: %s", name, exc)
            else:
                if applied.refused is not None:
                    log.warning("%s: a stored update applied in part: %s", name, applied.refused)
            room._size += len(update)
        room._count_unsnapshotted(len(stored.updates))
        room._schedule()
        return room

    def __repr__(self) -> str:
        return f"<Room {self.name!r} peers={len(self.peers)}>"

    # --- peers

    def join(self, peer: Peer) -> None:
        """Add `peer`: send it our state vector, then everyone's presence."""
        self.peers[peer] = None
        peer.send(protocol.encode_sync_step1(self.document.state_vector()))
        if states := self.awareness.states:
            peer.send(protocol.encode_awareness(states))

    def leave(self, peer: Peer) -> None:
        """Remove `peer` and, at once, the awareness states it owned."""
        self.peers.pop(peer, None)
        owned = [cid for cid in peer.awareness_ids if self._owners.get(cid) is peer]
        for client_id in owned:
            del self._owners[client_id]
        peer.awareness_ids.clear()
        self._announce(self.awareness.remove(owned))

    def receive(self, peer: Peer, message: protocol.Message) -> None:
        """Act on one message from `peer`.

        Raises:
            ProtocolError: the message is invalid; nothing was changed.
        """
        match message:
            case protocol.SyncUpdate(update):
                self._apply_from(peer, update, live=True)
            case protocol.SyncStep2(update):
                self._apply_from(peer, update, live=False)
            case protocol.SyncStep1(state_vector):
                self._answer_sync(peer, state_vector)
            case protocol.AwarenessUpdate(entries):
                self._apply_awareness(peer, entries)
            case protocol.QueryAwareness():
                peer.send(protocol.encode_awareness(self.awareness.states))
            case protocol.PermissionDenied():
                raise UnsupportedMessage("clients do not send auth messages")

    def close_peers(self, code: int, reason: str) -> None:
        for peer in list(self.peers):
            peer.close(code, reason)

    # --- document updates

    def downgrade(self, peer: Peer) -> None:
        """Make `peer` read-only from now on, and tell it."""
        peer.access = "read"
        self._deny(peer, "your access to this document is now read-only")

    def apply_update(self, *updates: bytes, size_after: int | None = None) -> None:
        """Apply updates that come from the server itself (API, restore), not a peer:
        committed together, and sent on one after another, each as it is, never merged
        with another (a restore is a copy, then a deletion: see collab/yjs/restore.py).

        Args:
            size_after: for updates that replace the content (a restore), the size of the
                document's state with them, which the quota is checked against instead
                of what they add to the log.

        Raises:
            QuotaExceeded: nothing was changed (the quota is checked for all of them).
            UpdateRejected: an update cannot be applied. Nothing of it was changed, unless
                Yrs took a part of it before failing: that part is then stored and sent on
                like any update.
        """
        added = sum(len(update) for update in updates)
        self._check_quota(self._size + added if size_after is None else size_after)
        for update in updates:
            self._apply(None, update, check_quota=False)
        if size_after is not None:
            # What the next snapshot makes of the log: the measure the quota holds a
            # document to (a restore's copy would otherwise count twice until then).
            self._size = size_after

    def _apply_from(self, peer: Peer, update: bytes, *, live: bool) -> None:
        if update == protocol.EMPTY_UPDATE:
            return
        if not allows(peer.access, "write"):
            # A read-only client answers our SyncStep1 with its whole delete set even when
            # it changed nothing; only an attempt to add something is worth telling it about.
            if live or self.document.holds_new_structs(update):
                self._deny(peer, "read-only: your changes to this document are not saved")
            return
        try:
            self._apply(peer, update)
        except QuotaExceeded as exc:
            log.warning("%s: refused an update of %s: %s", self.name, peer, exc)
            self._deny(peer, str(exc))

    def _deny(self, peer: Peer, reason: str) -> None:
        now = time.monotonic()
        if now - peer.denied_at >= _DENIAL_INTERVAL:
            peer.denied_at = now
            peer.send(protocol.encode_permission_denied(reason))

    def _apply(self, sender: Peer | None, update: bytes, *, check_quota: bool = True) -> None:
        if update == protocol.EMPTY_UPDATE:
            return
        if check_quota:
            self._check_quota(self._size + len(update))
        applied = self.document.apply(update)
        # Peers get what the document integrated. When parts that waited here came with
        # it, they may not be the sender's own: then the sender gets it all too.
        owner = None if applied.for_sender else sender
        parts: list[_Part] = [(owner, integrated) for integrated in applied.updates]
        if applied.refused is not None:
            # Only a part was taken: that part is what the store keeps.
            update = pycrdt.merge_updates(*applied.updates)
        self._size += len(update)
        self._unsaved.append((sender, update, parts))
        self._applied += 1
        self._schedule()
        if applied.refused is not None:
            raise UpdateRejected(applied.refused)

    def _check_quota(self, size: int) -> None:
        """Refuse what would make the document `size` bytes, past its quota."""
        quota = self._settings.max_doc_bytes
        if size > quota:
            raise QuotaExceeded(f"the document would pass its size quota of {quota} bytes")

    def _answer_sync(self, peer: Peer, state_vector: bytes) -> None:
        frames = self._sync_frames(state_vector)
        if self._durable == self._applied:
            for frame in frames:
                peer.send(frame)
        else:
            self._held.append((self._applied, peer, frames))

    def _sync_frames(self, state_vector: bytes) -> list[bytes]:
        """SyncStep2 for `state_vector`, large states cut into Updates before it."""
        cached = self._sync_cache
        if cached and cached[0] == state_vector and cached[1] == self._applied:
            return cached[2]
        pieces = self._split(self.document.diff(state_vector))
        frames = [protocol.encode_update(piece) for piece in pieces[:-1]]
        frames.append(protocol.encode_sync_step2(pieces[-1]))
        self._sync_cache = (state_vector, self._applied, frames)
        return frames

    def _split(self, update: bytes) -> list[bytes]:
        try:
            return split_update(update, self._settings.sync_chunk_bytes)
        except UpdateFormatError as exc:
            log.warning("%s: sending a %d-byte update whole: %s", self.name, len(update), exc)
            return [update]

    def _update_frames(self, updates: list[bytes]) -> list[bytes]:
        merged = updates[0]
        if len(updates) > 1:
            while len(updates) > 1:
                updates = [
                    pycrdt.merge_updates(*updates[i : i + _MERGE_GROUP])
                    for i in range(0, len(updates), _MERGE_GROUP)
                ]
            merged = updates[0]
        return [protocol.encode_update(piece) for piece in self._split(merged)]

    def _broadcast(self, parts: list[_Part]) -> None:
        """Send committed updates to every peer, each without its own."""
        if not self.peers or not parts:
            return
        senders = {sender for sender, _ in parts}
        frames = self._update_frames([update for _, update in parts])
        for peer in self.peers:
            if peer not in senders:
                for frame in frames:
                    peer.send(frame)
                continue
            others = [update for sender, update in parts if sender is not peer]
            for frame in self._update_frames(others) if others else ():
                peer.send(frame)

    # --- awareness

    def _apply_awareness(self, peer: Peer, entries: Iterable[protocol.AwarenessEntry]) -> None:
        news = self.awareness.apply(entries)
        if not news:
            return
        for entry in news:
            owner = self._owners.get(entry.client_id)
            if owner is not None and (entry.removed or owner is not peer):
                owner.awareness_ids.discard(entry.client_id)
                del self._owners[entry.client_id]
            if not entry.removed:
                self._owners[entry.client_id] = peer
                peer.awareness_ids.add(entry.client_id)
        # To the sender too: stock clients close a socket that hears nothing for 30 s.
        self._announce(news)

    def _announce(self, entries: Iterable[protocol.AwarenessEntry]) -> None:
        """Tell the room `entries` once this turn of the event loop ends: what arrives
        meanwhile (many cursors move at once in a busy room) goes out in one message,
        and of one client only its newest state."""
        for entry in entries:
            self._presence_out[entry.client_id] = entry
        if self._presence_out and self._presence_handle is None:
            loop = asyncio.get_running_loop()
            self._presence_handle = loop.call_soon(self._send_presence)

    def _send_presence(self) -> None:
        self._presence_handle = None
        entries, self._presence_out = list(self._presence_out.values()), {}
        if entries:
            self._send_all(protocol.encode_awareness(entries))

    def _drop_presence(self) -> None:
        if self._presence_handle is not None:
            self._presence_handle.cancel()
            self._presence_handle = None
        self._presence_out.clear()

    def _send_all(self, frame: bytes) -> None:
        for peer in self.peers:
            peer.send(frame)

    # --- durability and snapshots

    def _schedule(self) -> None:
        """Start the flush task if there is work now, else set the timer for when a
        snapshot falls due. A running flush task looks for more work before it ends."""
        if self._flusher is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unsaved or (not self._closing and self._snapshot_is_due()):
            self._flusher = asyncio.create_task(self._flush(), name=f"room {self.name}")
        elif self._snapshot_due is not None and not self._closing:
            delay = max(0.0, self._snapshot_due - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._schedule)

    async def _flush(self) -> None:
        try:
            while self._unsaved or (not self._closing and self._snapshot_is_due()):
                if self._unsaved:
                    await self._commit()
                # Between commits too: under a steady stream of updates there is always
                # something unsaved, and the log must not grow until the stream stops.
                if self._closing or not self._snapshot_is_due():
                    continue
                try:
                    await self.snapshot()
                except StoreError as exc:
                    log.error("%s: snapshot failed, will retry: %s", self.name, exc)
                    self._snapshot_due = time.monotonic() + 5.0
                    break
        finally:
            self._flusher = None
        self._schedule()

    async def _commit(self) -> None:
        batch, self._unsaved = self._unsaved, []
        delay = 0.1
        while True:
            try:
                await self._store.append(self.name, [update for _, update, _ in batch])
                break
            except StoreError as exc:
                log.error("%s: %d updates not stored yet, retrying: %s", self.name, len(batch), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._durable += len(batch)
        self._count_unsnapshotted(len(batch))
        # Peers' updates go out merged; one the server made goes out on its own, in order.
        merged: list[_Part] = []
        for sender, _, parts in batch:
            if sender is None:
                self._broadcast(merged)
                self._broadcast(parts)
                merged = []
            else:
                merged.extend(parts)
        self._broadcast(merged)
        while self._held and self._held[0][0] <= self._durable:
            _, peer, frames = self._held.pop(0)
            if peer in self.peers:
                for frame in frames:
                    peer.send(frame)
        waiting, self._flush_waiters = self._flush_waiters, []
        for target, future in waiting:
            if target <= self._durable:
                if not future.done():
                    future.set_result(None)
            else:
                self._flush_waiters.append((target, future))

    async def flush(self) -> None:
        """Return when every update applied so far is committed."""
        if self._durable >= self._applied:
            return
        future = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((self._applied, future))
        await future

    def _count_unsnapshotted(self, count: int) -> None:
        if count:
            self._since_snapshot += count
            if self._snapshot_due is None:
                self._snapshot_due = time.monotonic() + self._settings.snapshot_seconds

    def _snapshot_is_due(self) -> bool:
        if not self._since_snapshot or self._snapshot_due is None:
            return False
        return (
            self._since_snapshot >= self._settings.snapshot_updates
            or time.monotonic() >= self._snapshot_due
        )

    @property
    def needs_snapshot(self) -> bool:
        """Whether the store's latest snapshot misses some committed update."""
        return self._since_snapshot > 0

    async def snapshot(self, kind: VersionKind = "auto", label: str | None = None) -> Version:
        """Store the current state as a version; the log it covers is pruned."""
        counted = self._since_snapshot
        state = self.document.state()
        size_then = self._size
        # No await between taking the state and queueing the write: the snapshot then
        # holds every update the store had been given before it.
        snapshot = await self._store.save_version(self.name, state, kind=kind, label=label)
        self._size = len(state) + self._size - size_then
        self._since_snapshot -= counted
        self._snapshot_due = None
        if self._since_snapshot:
            self._snapshot_due = time.monotonic() + self._settings.snapshot_seconds
        log.debug("%s: snapshot %d (%d bytes)", self.name, snapshot.id, snapshot.size)
        return snapshot

    @property
    def is_empty(self) -> bool:
        """Whether the document has never held anything (its state vector is empty)."""
        return (
            self.document.state_vector() == protocol.EMPTY_STATE_VECTOR
            and not self.document.has_pending
        )

    async def discard(self, code: int, reason: str) -> None:
        """Close every peer and stop, saving nothing more (the document is being deleted).

        Writes already handed to the store still complete; the caller deletes after them.
        """
        self.close_peers(code, reason)
        self._closing = True
        self._unsaved.clear()
        self._drop_presence()
        if self._timer is not None:
            self._timer.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.wait([self._flusher])
        for _, future in self._flush_waiters:
            future.cancel()
        self._flush_waiters.clear()
        self.document.close()

    async def close(self) -> None:
        """Commit everything, snapshot if anything is not in one, stop. Raises StoreError."""
        await self.flush()
        if self.needs_snapshot:
            await self.snapshot()
        self._closing = True
        self._drop_presence()
        if self._timer is not None:
            self._timer.cancel()
        if self._flusher is not None:
            # Shielded: a caller's timeout must not kill the task that commits updates.
            await asyncio.shield(self._flusher)
        self.document.close()
