"""Room: one live document, the peers editing it, and their presence. It decides what goes
to whom and hands frames to peers' outboxes, synchronously; it never awaits.

The durability promise: an update is applied at once (that validates it, and later
updates build on it) but reaches other peers only once it is committed, and an answer to
SyncStep1 computed from the document waits for the same commit. The room hands updates
to its ledger (collab/journal.py), which calls `committed` back when they are durable;
whatever a peer receives is therefore on disk. Updates committed together go out as one
merged update. Updates another writer committed (`receive_committed`) are applied and
relayed at once, and never stored again.

Presence crosses servers too (with a bus): what this room's peers announce goes out
through `presence_out`, and `receive_presence` takes the states of other servers' clients,
each remembered with its server and when it was last renewed, so that they can be dropped
when that server is gone or they go stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pycrdt

from collab import protocol
from collab.auth import allows
from collab.awareness import Awareness
from collab.config import Settings
from collab.errors import ProtocolError, QuotaExceeded, UnsupportedMessage, UpdateRejected
from collab.hooks import Change, DocEvent, Origin
from collab.journal import Journal, Ledger
from collab.peer import Peer
from collab.store import StoredDoc
from collab.yjs.document import Document
from collab.yjs.update import UpdateFormatError, split_update

log = logging.getLogger(__name__)

_MERGE_GROUP = 32  # merge_updates is cheap for tens of updates, superlinear for hundreds
_DENIAL_INTERVAL = 1.0  # seconds between two "not saved" notices to one peer

_Part = tuple["Peer | None", bytes]  # an integrated update, and who sent it (None: all)


@dataclass(frozen=True, slots=True)
class _Relay:
    """An update's parts, to broadcast once it is committed; `sender` None: the server
    (`by` says what in it). `update` is what the store keeps, for the hooks."""

    sender: Peer | None
    parts: list[_Part]
    update: bytes
    by: str = ""


@dataclass(frozen=True, slots=True)
class _Answer:
    """A SyncStep2 answer, to send once what it holds is committed."""

    peer: Peer
    frames: list[bytes]


class Room:
    """A document while it is loaded: made by the registry from what the store holds."""

    def __init__(self, name: str, settings: Settings, journal: Journal, stored: StoredDoc) -> None:
        self.name = name
        self._metrics = journal.metrics  # the server's counts
        self._hooks = journal.hooks
        self.document = Document()
        self.awareness = Awareness()
        self.peers: dict[Peer, None] = {}  # insertion-ordered set
        self._settings = settings
        self._owners: dict[int, Peer] = {}
        # Presence news not sent yet, by client id, and the call that will send it.
        self._presence_out: dict[int, protocol.AwarenessEntry] = {}
        self._presence_handle: asyncio.Handle | None = None
        # With a bus: where this room's own peers' presence news goes to other servers,
        # what is to go there, and the other servers' clients: id -> (server, renewed).
        self.presence_out: Callable[[bytes], None] | None = None
        self._shared_out: dict[int, protocol.AwarenessEntry] = {}
        self._remote: dict[int, tuple[str, float]] = {}
        self._revision = 0  # updates applied: what a cached sync answer was made from
        self._sync_cache: tuple[bytes, int, list[bytes]] | None = None
        self._load(stored)
        self.ledger: Ledger[_Relay | _Answer] = journal.open(self, stored)

    def _load(self, stored: StoredDoc) -> None:
        if stored.state:
            self.document.load(stored.state)
        for update in stored.updates:
            try:
                applied = self.document.apply(update, stored=True)
            except UpdateRejected as exc:
                log.error("%s: skipped a stored update that does not apply: %s", self.name, exc)
            else:
                if applied.refused is not None:
                    log.warning(
                        "%s: a stored update applied in part: %s", self.name, applied.refused
                    )

    def __repr__(self) -> str:
        return f"<Room {self.name!r} peers={len(self.peers)}>"

    # --- peers

    def join(self, peer: Peer) -> None:
        """Add `peer`: send it our state vector, then everyone's presence."""
        self.peers[peer] = None
        frame = protocol.encode_sync_step1(self.document.state_vector())
        peer.send(frame)
        self._metrics.sent_bytes += len(frame)
        if states := self.awareness.states:
            frame = protocol.encode_awareness(states)
            peer.send(frame)
            self._metrics.awareness_sent += 1
            self._metrics.sent_bytes += len(frame)

    def leave(self, peer: Peer) -> None:
        """Remove `peer` and, at once, the awareness states it owned."""
        self.peers.pop(peer, None)
        owned = [cid for cid in peer.awareness_ids if self._owners.get(cid) is peer]
        for client_id in owned:
            del self._owners[client_id]
        peer.awareness_ids.clear()
        self._announce(self.awareness.remove(owned), shared=True)

    def receive(self, peer: Peer, message: protocol.Message) -> bool:
        """Act on one message from `peer`; False if it was an update the room refused
        (read-only, or past the quota: the peer has been told).

        Raises:
            ProtocolError: the message is invalid; nothing was changed.
        """
        match message:
            case protocol.SyncUpdate(update):
                return self._apply_from(peer, update, live=True)
            case protocol.SyncStep2(update):
                return self._apply_from(peer, update, live=False)
            case protocol.SyncStep1(state_vector):
                self._answer_sync(peer, state_vector)
            case protocol.AwarenessUpdate(entries):
                self._metrics.awareness_received += 1
                self._apply_awareness(peer, entries)
            case protocol.QueryAwareness():
                frame = protocol.encode_awareness(self.awareness.states)
                peer.send(frame)
                self._metrics.awareness_sent += 1
                self._metrics.sent_bytes += len(frame)
            case protocol.PermissionDenied():
                raise UnsupportedMessage("clients do not send auth messages")
        return True

    def close_peers(self, code: int, reason: str) -> None:
        for peer in list(self.peers):
            peer.close(code, reason)

    # --- document updates

    def downgrade(self, peer: Peer) -> None:
        """Make `peer` read-only from now on, and tell it."""
        peer.access = "read"
        self._deny(peer, "your access to this document is now read-only")

    def apply_update(
        self, *updates: bytes, size_after: int | None = None, origin: str = "api"
    ) -> None:
        """Apply updates that come from the server itself (API, restore), not a peer:
        committed together, and sent on one after another, each as it is, never merged
        with another (a restore is a copy, then a deletion: see collab/yjs/restore.py).

        Args:
            size_after: for updates that replace the content (a restore), the size of the
                document's state with them, which the quota is checked against instead
                of what they add to the log.
            origin: what made them, as hooks are told (`Origin.by`).

        Raises:
            QuotaExceeded: nothing was changed (the quota is checked for all of them).
            UpdateRejected: an update cannot be applied. Nothing of it was changed, unless
                Yrs took a part of it before failing: that part is then stored and sent on
                like any update.
        """
        added = sum(len(update) for update in updates)
        self._check_quota(self.ledger.size + added if size_after is None else size_after)
        for update in updates:
            self._apply(None, update, check_quota=False, by=origin)
        if size_after is not None:
            # What the next version makes of the log: the measure the quota holds a
            # document to (a restore's copy would otherwise count twice until then).
            self.ledger.assume_size(size_after)

    def receive_committed(self, update: bytes, offset: int) -> None:
        """Apply an update another writer has committed at `offset` of this document's
        log, and relay it to every peer at once: it is durable, so it is not stored
        again. One the room holds already (heard twice, or read from the log) is ignored."""
        self.catch_up([(offset, update)])

    def _apply_from(self, peer: Peer, update: bytes, *, live: bool) -> bool:
        """Apply `peer`'s update; False if refused (the peer is told)."""
        writes = allows(peer.access, "write")
        if update == protocol.EMPTY_UPDATE:
            return writes
        metrics = self._metrics
        metrics.updates_received += 1
        if not writes:
            # A read-only client answers our SyncStep1 with its whole delete set even when
            # it changed nothing; only an attempt to add something is worth telling it about.
            if live or self.document.holds_new_structs(update):
                metrics.updates_refused["read_only"] += 1
                self._deny(peer, "read-only: your changes to this document are not saved")
            return False
        try:
            self._apply(peer, update)
        except QuotaExceeded as exc:
            metrics.updates_refused["quota"] += 1
            log.warning("%s: refused an update of %s: %s", self.name, peer, exc)
            self._deny(peer, str(exc))
            return False
        except UpdateRejected:
            metrics.updates_refused["invalid"] += 1
            raise
        return True

    def _deny(self, peer: Peer, reason: str) -> None:
        now = time.monotonic()
        if now - peer.denied_at >= _DENIAL_INTERVAL:
            peer.denied_at = now
            frame = protocol.encode_permission_denied(reason)
            peer.send(frame)
            self._metrics.sent_bytes += len(frame)

    def _apply(
        self, sender: Peer | None, update: bytes, *, check_quota: bool = True, by: str = ""
    ) -> None:
        if update == protocol.EMPTY_UPDATE:
            return
        if check_quota:
            self._check_quota(self.ledger.size + len(update))
        applied = self.document.apply(update)
        if applied.updates and sender is not None:
            self._metrics.updates_applied += 1
        # Peers get what the document integrated. When parts that waited here came with
        # it, they may not be the sender's own: then the sender gets it all too.
        owner = None if applied.for_sender else sender
        parts: list[_Part] = [(owner, integrated) for integrated in applied.updates]
        if applied.refused is not None:
            # Only a part was taken: that part is what the store keeps.
            update = pycrdt.merge_updates(*applied.updates)
        self._revision += 1
        self.ledger.write(update, _Relay(sender, parts, update, by))
        if applied.refused is not None:
            raise UpdateRejected(applied.refused)

    def _check_quota(self, size: int) -> None:
        """Refuse what would make the document `size` bytes, past its quota."""
        quota = self._settings.max_doc_bytes
        if size > quota:
            raise QuotaExceeded(f"the document would pass its size quota of {quota} bytes")

    def _answer_sync(self, peer: Peer, state_vector: bytes) -> None:
        frames = self._sync_frames(state_vector)
        size = sum(len(frame) for frame in frames)
        self._metrics.sync_answers += 1
        self._metrics.sync_answer_bytes.observe(size)
        self._metrics.sent_bytes += size
        self.acknowledge(peer, *frames)

    def acknowledge(self, peer: Peer, *frames: bytes) -> None:
        """Send `frames` to `peer` once every update applied so far is committed (at once
        if they are): an answer that speaks of them must not run ahead of the disk."""
        if not self.ledger.hold(_Answer(peer, list(frames))):
            for frame in frames:
                peer.send(frame)

    def _sync_frames(self, state_vector: bytes) -> list[bytes]:
        """SyncStep2 for `state_vector`, large states cut into Updates before it."""
        cached = self._sync_cache
        if cached and cached[0] == state_vector and cached[1] == self._revision:
            return cached[2]
        pieces = self._split(self.document.diff(state_vector))
        frames = [protocol.encode_update(piece) for piece in pieces[:-1]]
        frames.append(protocol.encode_sync_step2(pieces[-1]))
        self._sync_cache = (state_vector, self._revision, frames)
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
        # Counted once for the room, not per peer: the loop runs for every reader.
        senders_here = own_frames = own_bytes = 0
        for peer in self.peers:
            if peer not in senders:
                for frame in frames:
                    peer.send(frame)
                continue
            senders_here += 1
            others = [update for sender, update in parts if sender is not peer]
            for frame in self._update_frames(others) if others else ():
                peer.send(frame)
                own_frames += 1
                own_bytes += len(frame)
        readers = len(self.peers) - senders_here
        metrics = self._metrics
        metrics.updates_relayed += readers * len(frames) + own_frames
        metrics.sent_bytes += readers * sum(len(frame) for frame in frames) + own_bytes

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
            self._remote.pop(entry.client_id, None)  # a client come here from elsewhere
        # To the sender too: stock clients close a socket that hears nothing for 30 s.
        self._announce(news, shared=True)

    def _announce(
        self, entries: Iterable[protocol.AwarenessEntry], *, shared: bool = False
    ) -> None:
        """Tell the room `entries` once this turn of the event loop ends: what arrives
        meanwhile (many cursors move at once in a busy room) goes out in one message,
        and of one client only its newest state. `shared`: this room's own peers'
        news, which other servers hear of too."""
        for entry in entries:
            self._presence_out[entry.client_id] = entry
            if shared and self.presence_out is not None:
                self._shared_out[entry.client_id] = entry
        if self._presence_out and self._presence_handle is None:
            loop = asyncio.get_running_loop()
            self._presence_handle = loop.call_soon(self._send_presence)

    def _send_presence(self) -> None:
        self._presence_handle = None
        entries, self._presence_out = list(self._presence_out.values()), {}
        frame = protocol.encode_awareness(entries) if entries else b""
        if frame:
            self._send_all(frame)
        shared, self._shared_out = list(self._shared_out.values()), {}
        if shared and self.presence_out is not None:
            # Usually all of it is this room's own news: the same frame, encoded once.
            self.presence_out(frame if shared == entries else protocol.encode_awareness(shared))

    def _drop_presence(self) -> None:
        if self._presence_handle is not None:
            self._presence_handle.cancel()
            self._presence_handle = None
        self._presence_out.clear()
        self._shared_out.clear()

    # --- presence of other servers' clients (with a bus)

    def receive_presence(self, server: str, frame: bytes, now: float) -> None:
        """Take the presence news of another server's clients (an awareness message)."""
        try:
            message = protocol.decode(frame)
            if not isinstance(message, protocol.AwarenessUpdate):
                raise UnsupportedMessage("not an awareness message")
            news = self.awareness.apply(message.entries)
        except ProtocolError as exc:
            log.warning("%s: presence from server %s ignored: %s", self.name, server, exc)
            return
        for entry in news:
            if owner := self._owners.pop(entry.client_id, None):
                owner.awareness_ids.discard(entry.client_id)  # the client went over there
            if entry.removed:
                self._remote.pop(entry.client_id, None)
            else:
                self._remote[entry.client_id] = (server, now)
        self._announce(news)

    def presence(self) -> bytes | None:
        """The states of this room's own peers, as one awareness message (for a server
        that has just loaded the room); None if there are none."""
        own = [entry for entry in self.awareness.states if entry.client_id in self._owners]
        return protocol.encode_awareness(own) if own else None

    def drop_presence_of(self, server: str | None = None, *, renewed_before: float = 0.0) -> int:
        """Remove the states of another server's clients: all those of `server` (it is
        gone), or of any server not renewed since `renewed_before` (they are stale).
        Returns how many it removed."""
        gone = [
            client_id
            for client_id, (owner, renewed) in self._remote.items()
            if owner == server or renewed < renewed_before
        ]
        for client_id in gone:
            del self._remote[client_id]
        if gone:
            self._announce(self.awareness.remove(gone))
        return len(gone)

    def _send_all(self, frame: bytes) -> None:
        for peer in self.peers:
            peer.send(frame)
        self._metrics.awareness_sent += len(self.peers)
        self._metrics.sent_bytes += len(frame) * len(self.peers)

    # --- what the ledger calls back (collab/journal.py `Source`)

    def state(self) -> bytes:
        """The full state of the document now."""
        return self.document.state()

    def committed(self, payloads: list[_Relay | _Answer], reached: int | None) -> None:
        """Updates handed to the ledger are durable (the last at offset `reached`): send
        them on. Peers' updates go out merged; one the server made goes out on its own,
        in order; held answers after. Then the hooks hear of them."""
        merged: list[_Part] = []
        answers: list[_Answer] = []
        for payload in payloads:
            if isinstance(payload, _Answer):
                answers.append(payload)
            elif payload.sender is None:
                self._broadcast(merged)
                self._broadcast(payload.parts)
                merged = []
            else:
                merged.extend(payload.parts)
        self._broadcast(merged)
        for answer in answers:
            if answer.peer in self.peers:
                for frame in answer.frames:
                    answer.peer.send(frame)
        if self._hooks and reached is not None:
            self._tell_hooks([p for p in payloads if isinstance(p, _Relay)], reached)

    def _tell_hooks(self, relays: list[_Relay], reached: int) -> None:
        hooks = self._hooks
        assert hooks is not None
        if not relays:
            return
        first = reached - len(relays) + 1
        if first == 1:
            hooks.call("on_create", DocEvent(self.name))
        if not hooks.wants_changes:
            # Only the pause is waited for (the webhooks' document.changed): no Change
            # per update for nobody.
            hooks.touched(self.name, reached, mine=True)
            return
        hooks.changed(
            [
                Change(self.name, offset, relay.update, _origin(relay))
                for offset, relay in enumerate(relays, first)
            ]
        )

    def catch_up(self, updates: list[tuple[int, bytes]]) -> None:
        """Updates of this document's log that another writer committed, with their
        offsets: applied, and relayed one by one (one may be a server's own, such as a
        restore's two updates, which must not go out merged)."""
        for offset, update in updates:
            if self.ledger.holds(offset):
                continue
            try:
                applied = self.document.apply(update, stored=True)
            except UpdateRejected as exc:
                log.error("%s: skipped a committed update that does not apply: %s", self.name, exc)
            else:
                self._revision += 1
                self._broadcast([(None, integrated) for integrated in applied.updates])
            self.ledger.seen(offset, len(update))
            if self._hooks:
                self._hooks.touched(self.name, offset, mine=False)

    # --- the end

    @property
    def is_empty(self) -> bool:
        """Whether the document has never held anything (its state vector is empty)."""
        return (
            self.document.state_vector() == protocol.EMPTY_STATE_VECTOR
            and not self.document.has_pending
        )

    def stop(self) -> None:
        """Drop what is left of presence and free the document; the registry calls it
        once the ledger is closed (or discarded)."""
        self._drop_presence()
        self.document.close()


def _origin(relay: _Relay) -> Origin:
    if relay.sender is None:
        return Origin("server", relay.by or "api")
    peer = relay.sender
    return Origin("client", str(peer.log_fields.get("peer", peer.label)), peer.grant.subject)
