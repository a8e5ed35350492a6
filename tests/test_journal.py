"""The commit pipeline (collab/journal.py) on a real SQLite store, with rooms as the
registry makes them and peers that record what they are sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from collab import protocol
from collab.config import Settings
from collab.journal import Journal, version_due
from collab.room import Room
from collab.store import StoredDoc
from collab.store.sqlite import SQLiteStore
from tests.logs import TestLog
from tests.test_room import RecordingPeer, text_update


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(db_path)
    yield store
    await store.close()


def text_of(room: Room) -> str:
    return str(room.document.ydoc.get("t", type=pycrdt.Text))


def test_a_version_is_due_after_enough_updates_or_enough_time() -> None:
    due = {"every_updates": 100, "every_seconds": 30.0}
    assert version_due(0, None, **due) is None
    assert version_due(5, 10.0, **due) == 40.0
    assert version_due(100, 10.0, **due) == 10.0
    assert version_due(100, 10.0, not_before=12.5, **due) == 12.5


async def test_updates_of_many_rooms_are_committed_in_one_call(
    store: SQLiteStore, db_path: Path
) -> None:
    log = TestLog(store)
    settings = Settings(db=db_path)
    journal = Journal(log, settings)
    rooms = [Room(f"doc{i}", settings, journal, await log.load(f"doc{i}")) for i in range(10)]
    peers = [RecordingPeer(f"peer {i}") for i in range(10)]
    for room, peer in zip(rooms, peers, strict=True):
        room.join(peer)
    for _ in range(20):  # 200 updates of 10 documents in one turn of the event loop
        for room, peer in zip(rooms, peers, strict=True):
            room.receive(peer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "x")))
    await asyncio.gather(*(room.ledger.flush() for room in rooms))
    assert log.appends == [{f"doc{i}": 20 for i in range(10)}]
    assert [room.ledger.offset for room in rooms] == [20] * 10
    for room in rooms:
        await room.ledger.close()
        room.stop()
    await journal.close()


async def test_a_commit_that_fails_is_retried_with_what_arrived_meanwhile(
    store: SQLiteStore, db_path: Path
) -> None:
    log = TestLog(store, failing_appends=1)
    settings = Settings(db=db_path)
    journal = Journal(log, settings)
    room = Room("doc", settings, journal, await log.load("doc"))
    writer, reader = RecordingPeer("writer"), RecordingPeer("reader")
    room.join(writer)
    room.join(reader)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    room.receive(writer, protocol.SyncUpdate(text_update(doc, "a")))
    await asyncio.sleep(0.01)  # the first try has failed
    assert log.failing_appends == 0 and reader.updates() == []
    room.receive(writer, protocol.SyncUpdate(text_update(doc, "b")))
    async with asyncio.timeout(5):
        await room.ledger.flush()
    assert log.appends == [{"doc": 1}, {"doc": 2}]
    assert len(reader.updates()) == 1  # both, merged, once both are stored
    assert (await store.load("doc")).end == 2
    await room.ledger.close()
    room.stop()
    await journal.close()


async def test_an_update_committed_elsewhere_is_relayed_at_once_and_not_stored_again(
    store: SQLiteStore, db_path: Path
) -> None:
    settings = Settings(db=db_path)
    journal = Journal(store, settings)
    room = Room("doc", settings, journal, await store.load("doc"))
    reader = RecordingPeer("reader")
    room.join(reader)
    update = text_update(pycrdt.Doc(), "from another node")
    (offset,) = (await store.append({"doc": [update]})).values()  # as another writer
    room.receive_committed(update, offset)
    assert len(reader.updates()) == 1  # synchronously: it is durable already
    assert room.ledger.offset == 1 and room.ledger.committed
    assert text_of(room) == "from another node"
    await room.ledger.close()  # versions it: the version covers offset 1
    room.stop()
    await journal.close()
    assert (await store.read("doc", 1)) == []  # never re-stored
    assert (await store.load("doc")).updates == []  # pruned by that version
    assert [v.update_count for v in await store.versions("doc")] == [1]


@dataclass
class Writer:
    """One of two writers on one SQLite file, as two processes would be: its store,
    journal, room of "doc" and a peer in it."""

    store: SQLiteStore
    journal: Journal
    room: Room
    peer: RecordingPeer


@pytest.fixture
async def writers(db_path: Path) -> AsyncIterator[tuple[Writer, Writer]]:
    settings = Settings(db=db_path)
    made = []
    for name in ("alice", "bob"):
        store = await SQLiteStore.open(db_path)
        journal = Journal(store, settings)
        room = Room("doc", settings, journal, await store.load("doc"))
        peer = RecordingPeer(name)
        room.join(peer)
        made.append(Writer(store, journal, room, peer))
    yield made[0], made[1]
    for writer in made:
        await writer.room.ledger.close()
        writer.room.stop()
        await writer.journal.close()
        await writer.store.close()


async def test_two_writers_on_one_log_catch_up_and_prune_only_what_they_hold(
    writers: tuple[Writer, Writer], db_path: Path
) -> None:
    """Two stores on one file, two journals, one document each side (as two processes
    would have): B's append lands after A's, B reads what it missed, relays it to its
    peers, and its version covers both."""
    a, b = writers
    a.room.receive(a.peer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "A")))
    await a.room.ledger.flush()
    b.room.receive(b.peer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "B")))
    await b.room.ledger.flush()
    async with asyncio.timeout(5):
        while b.room.ledger.offset < 2:  # the gap at offset 1 is read from the log
            await asyncio.sleep(0.01)
    assert sorted(text_of(b.room)) == ["A", "B"]
    assert len(b.peer.updates()) == 1  # A's update, relayed; bob's own is never echoed
    version = await b.room.ledger.save_version("named", "both")
    assert await b.store.version_state("doc", version.id)
    assert await b.store.read("doc", 2) == []  # pruned up to 2
    fresh = await SQLiteStore.open(db_path)
    loaded = await fresh.load("doc")
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    assert loaded.state is not None
    doc.apply_update(loaded.state)
    for update in loaded.updates:
        doc.apply_update(update)
    assert sorted(str(doc.get("t", type=pycrdt.Text))) == ["A", "B"]
    await fresh.close()


async def test_a_writer_behind_catches_up_across_a_log_the_other_pruned(
    writers: tuple[Writer, Writer],
) -> None:
    """A takes a version (pruning the log) while B has not read A's updates yet: B gets
    them from the version's state, and its offset runs on without a hole."""
    a, b = writers
    source: pycrdt.Doc[Any] = pycrdt.Doc()
    for text in ("x", "y"):
        a.room.receive(a.peer, protocol.SyncUpdate(text_update(source, text)))
        await a.room.ledger.flush()
    await a.room.ledger.save_version()
    assert (await a.store.load("doc")).updates == []  # offsets 1 and 2 are pruned
    b.room.receive(b.peer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "B")))
    await b.room.ledger.flush()
    async with asyncio.timeout(5):
        while b.room.ledger.offset < 3:
            await asyncio.sleep(0.01)
    assert sorted(text_of(b.room)) == sorted(text_of(a.room) + "B")
    assert b.peer.updates()  # what B read was relayed to its peer


async def test_a_version_taken_before_catching_up_covers_only_what_the_room_holds(
    db_path: Path,
) -> None:
    one, two = await SQLiteStore.open(db_path), await SQLiteStore.open(db_path)
    settings = Settings(db=db_path)
    journal = Journal(two, settings)
    room = Room("doc", settings, journal, await two.load("doc"))
    await one.append({"doc": [text_update(pycrdt.Doc(), "elsewhere")]})  # offset 1
    room.apply_update(text_update(pycrdt.Doc(), "here"))  # offset 2: a gap before it
    await room.ledger.flush()
    assert room.ledger.offset == 0  # offset 1 is not read yet (that takes a read)
    version = await room.ledger.save_version()
    assert [offset for offset, _ in await one.read("doc", 0)] == [1, 2]  # nothing pruned
    assert "elsewhere" not in str(await two.version_state("doc", version.id))
    async with asyncio.timeout(5):
        while room.ledger.offset < 2:
            await asyncio.sleep(0.01)
    assert "elsewhere" in text_of(room) and "here" in text_of(room)
    await room.ledger.close()
    room.stop()
    await journal.close()
    await one.close()
    await two.close()


async def test_an_answer_held_while_a_commit_is_in_flight_goes_out_with_it(
    store: SQLiteStore, db_path: Path
) -> None:
    log = TestLog(
        store, append_delay=0.005
    )  # the commit takes 5 ms: the joiner's SyncStep1 comes meanwhile
    settings = Settings(db=db_path)
    journal = Journal(log, settings)
    room = Room("doc", settings, journal, await log.load("doc"))
    writer, joiner = RecordingPeer("writer"), RecordingPeer("joiner")
    room.join(writer)
    room.join(joiner)
    room.receive(writer, protocol.SyncUpdate(text_update(pycrdt.Doc(), "x")))
    await asyncio.sleep(0.001)  # the commit has been taken and is in flight
    room.receive(joiner, protocol.SyncStep1(protocol.EMPTY_STATE_VECTOR))
    assert joiner.of_type(protocol.SyncStep2) == []  # it holds "x", not yet durable
    async with asyncio.timeout(5):
        while not joiner.of_type(protocol.SyncStep2):
            await asyncio.sleep(0.001)
    await room.ledger.close()
    room.stop()
    await journal.close()


class BrokenSource:
    """A document whose relaying fails: a bug in one room."""

    name = "broken"

    def state(self) -> bytes:
        return b""

    def committed(self, payloads: list[str], reached: int | None) -> None:
        raise RuntimeError("a bug in this room")

    def catch_up(self, updates: list[tuple[int, bytes]]) -> None:
        pass


async def test_a_room_that_fails_to_relay_stops_no_other_room(
    store: SQLiteStore, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(db=db_path)
    journal = Journal(store, settings)
    broken = journal.open(BrokenSource(), StoredDoc(None, 0, []))
    room = Room("doc", settings, journal, await store.load("doc"))
    reader = RecordingPeer("reader")
    room.join(reader)
    broken.write(b"opaque", "payload")
    async with asyncio.timeout(5):
        await broken.flush()  # its waiters are released all the same
    room.apply_update(text_update(pycrdt.Doc(), "x"))
    async with asyncio.timeout(5):
        await room.ledger.flush()
    assert len(reader.updates()) == 1
    assert "relaying committed updates failed" in caplog.text
    await broken.discard()
    await room.ledger.close()
    room.stop()
    await journal.close()
