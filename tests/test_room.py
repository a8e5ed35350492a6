"""Room with a real SQLite store and peers that record what they are sent."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from collab import protocol
from collab.config import Settings
from collab.errors import QuotaExceeded, UpdateRejected
from collab.journal import Journal
from collab.peer import Peer
from collab.room import Room
from collab.store import DocumentLog
from collab.store.sqlite import SQLiteStore
from tests.logs import TestLog

Hook = Callable[[bytes], None]


class RecordingPeer(Peer):
    """A peer that keeps every frame it is sent, decoded, and can run a check on each."""

    def __init__(self, label: str, on_send: Hook | None = None) -> None:
        super().__init__(label, max_outbox_bytes=1 << 30)
        self.received: list[protocol.Message] = []
        self.on_send = on_send

    def send(self, frame: bytes) -> None:
        if self.on_send is not None:
            self.on_send(frame)
        self.received.append(protocol.decode(frame))

    def updates(self) -> list[bytes]:
        return [m.update for m in self.received if isinstance(m, protocol.SyncUpdate)]

    def of_type(self, kind: type) -> list[Any]:
        return [m for m in self.received if isinstance(m, kind)]


def text_update(doc: pycrdt.Doc[Any], text: str) -> bytes:
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    doc.get("t", type=pycrdt.Text).insert(0, text)
    doc.unobserve(subscription)
    return updates[0]


def stored_update_count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT coalesce(sum(update_count), 0) FROM docs").fetchone()
    return int(row[0])


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


_journals: dict[Room, Journal] = {}


async def load_room(log: DocumentLog, settings: Settings, name: str = "doc") -> Room:
    """A room as the registry makes one: its journal, the stored document, the room."""
    journal = Journal(log, settings)
    room = Room(name, settings, journal, await log.load(name))
    _journals[room] = journal
    return room


async def close_room(room: Room) -> None:
    """As the registry unloads a room: commit and version what is left, then stop."""
    await room.ledger.close()
    room.stop()
    await _journals.pop(room).close()


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(db_path)
    yield store
    await store.close()


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db=db_path)


async def test_join_sends_state_vector_then_presence(
    store: SQLiteStore, settings: Settings
) -> None:
    room = await load_room(store, settings)
    first, second = RecordingPeer("first"), RecordingPeer("second")
    room.join(first)
    room.receive(first, protocol.AwarenessUpdate((protocol.AwarenessEntry(7, 1, b"{}"),)))
    room.join(second)
    assert isinstance(second.received[0], protocol.SyncStep1)
    assert second.received[1] == protocol.AwarenessUpdate((protocol.AwarenessEntry(7, 1, b"{}"),))
    await close_room(room)


async def test_update_reaches_others_only_once_it_is_on_disk(
    store: SQLiteStore, settings: Settings, db_path: Path
) -> None:
    room = await load_room(store, settings)
    writer = RecordingPeer("writer")
    seen_on_disk: list[int] = []
    reader = RecordingPeer(
        "reader", on_send=lambda frame: seen_on_disk.append(stored_update_count(db_path))
    )
    room.join(writer)
    room.join(reader)
    reader.received.clear()
    seen_on_disk.clear()
    room.receive(writer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "hello")))
    assert reader.received == []  # not before the commit
    await room.ledger.flush()
    assert len(reader.updates()) == 1
    assert seen_on_disk == [1]
    assert writer.updates() == []  # never echoed to its sender
    await close_room(room)


async def test_sync_answer_waits_for_the_commit_of_what_it_contains(
    store: SQLiteStore, settings: Settings, db_path: Path
) -> None:
    room = await load_room(store, settings)
    writer = RecordingPeer("writer")
    on_disk_at_answer: list[int] = []

    def check(frame: bytes) -> None:
        if isinstance(protocol.decode(frame), protocol.SyncStep2):
            on_disk_at_answer.append(stored_update_count(db_path))

    joiner = RecordingPeer("joiner", on_send=check)
    room.join(writer)
    room.join(joiner)
    room.receive(writer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "x")))
    room.receive(joiner, protocol.SyncStep1(protocol.EMPTY_STATE_VECTOR))
    assert joiner.of_type(protocol.SyncStep2) == []
    await room.ledger.flush()
    assert on_disk_at_answer == [1]
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(joiner.of_type(protocol.SyncStep2)[0].update)
    assert str(doc.get("t", type=pycrdt.Text)) == "x"
    await close_room(room)


async def test_every_sync_step1_gets_a_sync_step2(store: SQLiteStore, settings: Settings) -> None:
    room = await load_room(store, settings)
    peer = RecordingPeer("peer")
    room.join(peer)
    for _ in range(3):
        room.receive(peer, protocol.SyncStep1(protocol.EMPTY_STATE_VECTOR))
    assert len(peer.of_type(protocol.SyncStep2)) == 3
    await close_room(room)


async def test_updates_committed_together_are_broadcast_as_one(
    store: SQLiteStore, settings: Settings
) -> None:
    room = await load_room(store, settings)
    alice, bob, reader = RecordingPeer("alice"), RecordingPeer("bob"), RecordingPeer("reader")
    for peer in (alice, bob, reader):
        room.join(peer)
    alice_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    bob_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for i in range(5):
        room.receive(alice, protocol.SyncUpdate(text_update(alice_doc, f"a{i}")))
    room.receive(bob, protocol.SyncUpdate(text_update(bob_doc, "b")))
    await room.ledger.flush()
    assert len(reader.updates()) == 1  # one merged frame for all six
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(reader.updates()[0])
    assert len(str(doc.get("t", type=pycrdt.Text))) == 11
    # Each writer gets the other's updates, not its own.
    alice_view: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in alice.updates():
        alice_view.apply_update(update)
    assert str(alice_view.get("t", type=pycrdt.Text)) == "b"
    await close_room(room)


async def test_the_servers_own_updates_are_committed_together_and_sent_one_by_one(
    store: SQLiteStore, settings: Settings, db_path: Path
) -> None:
    """A restore is a copy, then a deletion: both are stored by one commit, and every
    peer gets each as it is, in order, never merged with each other or with a peer's."""
    room = await load_room(store, settings)
    alice, reader = RecordingPeer("alice"), RecordingPeer("reader")
    for peer in (alice, reader):
        room.join(peer)
    alice_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    server_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    first, second = text_update(server_doc, "one"), text_update(server_doc, "two")
    room.receive(alice, protocol.SyncUpdate(text_update(alice_doc, "a")))
    room.apply_update(first, second)
    await room.ledger.flush()
    assert reader.updates() == [reader.updates()[0], first, second]
    assert alice.updates() == [first, second]
    assert stored_update_count(db_path) == 3
    await close_room(room)


async def test_the_servers_updates_that_would_pass_the_quota_together_change_nothing(
    store: SQLiteStore, db_path: Path
) -> None:
    room = await load_room(store, Settings(db=db_path, max_doc_bytes=4096))
    server_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    small, large = text_update(server_doc, "x"), text_update(server_doc, "y" * 3000)
    with pytest.raises(QuotaExceeded):
        room.apply_update(small, large, large)  # each fits, all three do not
    await room.ledger.flush()
    assert str(room.document.ydoc.get("t", type=pycrdt.Text)) == ""
    assert stored_update_count(db_path) == 0
    await close_room(room)


async def test_undecodable_update_is_rejected_before_store_and_peers(
    store: SQLiteStore, settings: Settings, db_path: Path
) -> None:
    room = await load_room(store, settings)
    sender, reader = RecordingPeer("sender"), RecordingPeer("reader")
    room.join(sender)
    room.join(reader)
    with pytest.raises(UpdateRejected):
        room.receive(sender, protocol.SyncUpdate(b"\x01\x01\x05\x00\x04junk"))
    await settle()
    assert reader.updates() == []
    assert stored_update_count(db_path) == 0
    await close_room(room)


async def test_awareness_is_relayed_to_all_and_removed_when_its_owner_leaves(
    store: SQLiteStore, settings: Settings
) -> None:
    room = await load_room(store, settings)
    alice, bob = RecordingPeer("alice"), RecordingPeer("bob")
    room.join(alice)
    room.join(bob)
    state = protocol.AwarenessEntry(11, 1, b'{"user":"alice"}')
    room.receive(alice, protocol.AwarenessUpdate((state,)))
    await asyncio.sleep(0)  # presence goes out when this turn of the loop ends
    assert alice.of_type(protocol.AwarenessUpdate)[-1].entries == (state,)
    assert bob.of_type(protocol.AwarenessUpdate)[-1].entries == (state,)
    # Bob re-sends what he learned (stock clients do): no news, not relayed.
    count = len(alice.received)
    room.receive(bob, protocol.AwarenessUpdate((state,)))
    await asyncio.sleep(0)
    assert len(alice.received) == count
    room.leave(alice)
    await asyncio.sleep(0)
    assert bob.of_type(protocol.AwarenessUpdate)[-1].entries == (
        protocol.AwarenessEntry(11, 2, b"null"),
    )
    assert room.awareness.states == []
    await close_room(room)


async def test_leaving_peer_removes_only_the_states_it_announced(
    store: SQLiteStore, settings: Settings
) -> None:
    room = await load_room(store, settings)
    alice, bob = RecordingPeer("alice"), RecordingPeer("bob")
    room.join(alice)
    room.join(bob)
    room.receive(alice, protocol.AwarenessUpdate((protocol.AwarenessEntry(1, 1, b"{}"),)))
    room.receive(bob, protocol.AwarenessUpdate((protocol.AwarenessEntry(2, 1, b"{}"),)))
    room.receive(bob, protocol.AwarenessUpdate((protocol.AwarenessEntry(1, 1, b"{}"),)))
    room.leave(bob)
    assert [entry.client_id for entry in room.awareness.states] == [1]
    await close_room(room)


async def test_presence_arriving_in_one_turn_goes_out_as_one_message(
    store: SQLiteStore, settings: Settings
) -> None:
    room = await load_room(store, settings)
    peers = [RecordingPeer(f"peer {i}") for i in range(3)]
    for peer in peers:
        room.join(peer)
    for i, peer in enumerate(peers):  # everyone moves a cursor in the same turn
        for clock in (1, 2):
            state = f'{{"cursor":{clock}}}'.encode()
            room.receive(
                peer, protocol.AwarenessUpdate((protocol.AwarenessEntry(i, clock, state),))
            )
    await asyncio.sleep(0)
    for peer in peers:
        (message,) = peer.of_type(protocol.AwarenessUpdate)
        assert [(e.client_id, e.clock) for e in message.entries] == [(0, 2), (1, 2), (2, 2)]
    await close_room(room)


async def test_presence_of_other_servers_clients_is_relayed_here_and_only_ours_goes_out(
    store: SQLiteStore, settings: Settings
) -> None:
    room = await load_room(store, settings)
    shared: list[protocol.Message] = []
    room.presence_out = lambda frame: shared.append(protocol.decode(frame))
    alice = RecordingPeer("alice")
    room.join(alice)
    ours = protocol.AwarenessEntry(1, 1, b'{"name":"alice"}')
    room.receive(alice, protocol.AwarenessUpdate((ours,)))
    theirs = [protocol.AwarenessEntry(2, 1, b'{"name":"bob"}')]
    room.receive_presence("b", protocol.encode_awareness(theirs), now=100.0)
    await asyncio.sleep(0)
    assert alice.of_type(protocol.AwarenessUpdate)[-1].entries == (ours, theirs[0])
    assert [m.entries for m in shared] == [(ours,)]  # never echoed back to the bus
    assert room.presence() == protocol.encode_awareness([ours])  # what a query is told
    # Not renewed for long: dropped (a lost removal is repaired so).
    room.drop_presence_of(renewed_before=99.0)
    assert len(room.awareness.states) == 2
    room.drop_presence_of(renewed_before=131.0)
    assert [e.client_id for e in room.awareness.states] == [1]
    # A server gone: all its clients' states go, and only those.
    room.receive_presence(
        "c",
        protocol.encode_awareness(
            [protocol.AwarenessEntry(3, 1, b"{}"), protocol.AwarenessEntry(4, 1, b"{}")]
        ),
        now=200.0,
    )
    room.receive_presence(
        "d", protocol.encode_awareness([protocol.AwarenessEntry(5, 1, b"{}")]), now=200.0
    )
    room.drop_presence_of("c")
    assert sorted(e.client_id for e in room.awareness.states) == [1, 5]
    # Garbage from another server changes nothing.
    room.receive_presence("d", b"\x01\x05", now=201.0)
    assert sorted(e.client_id for e in room.awareness.states) == [1, 5]
    await asyncio.sleep(0)
    assert [m.entries for m in shared] == [(ours,)]
    await close_room(room)


async def test_reconnected_client_id_moves_to_the_new_connection(
    store: SQLiteStore, settings: Settings
) -> None:
    room = await load_room(store, settings)
    old, new = RecordingPeer("old"), RecordingPeer("new")
    room.join(old)
    room.receive(old, protocol.AwarenessUpdate((protocol.AwarenessEntry(5, 3, b"{}"),)))
    room.join(new)
    room.receive(new, protocol.AwarenessUpdate((protocol.AwarenessEntry(5, 4, b"{}"),)))
    room.leave(old)  # the old socket is found dead later
    assert [entry.client_id for entry in room.awareness.states] == [5]
    await close_room(room)


async def test_snapshot_after_the_configured_number_of_updates(
    store: SQLiteStore, db_path: Path
) -> None:
    room = await load_room(store, Settings(db=db_path, version_updates=10))
    peer = RecordingPeer("peer")
    room.join(peer)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for i in range(25):
        room.receive(peer, protocol.SyncUpdate(text_update(doc, str(i % 10))))
        await room.ledger.flush()
    await settle()
    snapshots = await store.versions("doc")
    assert [s.update_count for s in snapshots] == [10, 20]
    loaded = await store.load("doc")
    assert len(loaded.updates) == 5
    await close_room(room)
    assert len(await store.versions("doc")) == 3  # closing snapshots the rest
    reloaded = await load_room(store, Settings(db=db_path))
    assert str(reloaded.document.ydoc.get("t", type=pycrdt.Text)) == str(
        doc.get("t", type=pycrdt.Text)
    )
    await close_room(reloaded)


async def test_a_version_after_the_configured_time(store: SQLiteStore, db_path: Path) -> None:
    room = await load_room(store, Settings(db=db_path, version_seconds=0.2))
    peer = RecordingPeer("peer")
    room.join(peer)
    room.receive(peer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "x")))
    async with asyncio.timeout(5):
        while not await store.versions("doc"):
            await asyncio.sleep(0.05)
    await close_room(room)


async def test_versions_are_taken_while_updates_keep_coming(
    store: SQLiteStore, db_path: Path
) -> None:
    """Found by the cold-load benchmark: when updates come faster than commits, there is
    always something to commit, and snapshots waited for the stream to stop; after a
    crash, loading replayed the whole history."""
    slow = TestLog(store, append_delay=0.005)
    room = await load_room(slow, Settings(db=db_path, version_updates=50))
    peer = RecordingPeer("peer")
    room.join(peer)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for _ in range(400):  # an update every millisecond, a commit every 5
        room.receive(peer, protocol.SyncUpdate(text_update(doc, "x")))
        await asyncio.sleep(0.001)
    assert len(await store.versions("doc")) >= 3  # taken before the stream ended
    await close_room(room)


async def test_failed_commit_is_retried_and_nothing_is_relayed_before(
    store: SQLiteStore, settings: Settings, db_path: Path
) -> None:
    failing = TestLog(store, failing_appends=2)
    room = await load_room(failing, settings)
    writer, reader = RecordingPeer("writer"), RecordingPeer("reader")
    room.join(writer)
    room.join(reader)
    room.receive(writer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "kept")))
    await asyncio.sleep(0.15)
    assert reader.updates() == [] and failing.failing_appends < 2
    async with asyncio.timeout(5):
        await room.ledger.flush()
    assert len(reader.updates()) == 1
    assert stored_update_count(db_path) == 1
    await close_room(room)
