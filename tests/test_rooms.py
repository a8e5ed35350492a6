"""The rooms registry's lifecycle on a real SQLite store: a room loads once however many
ask for it at once, unloads after the grace period once its state is saved, and stays
loaded (nothing lost) while its save fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from collab.config import Settings
from collab.journal import Journal
from collab.rooms import Rooms
from collab.store import Catalogue, DocumentLog
from collab.store.sqlite import SQLiteStore
from tests.logs import TestLog

GRACE = 0.05


@pytest.fixture
async def sqlite(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(db_path)
    yield store
    await store.close()


def settings(db_path: Path) -> Settings:
    return Settings(db=db_path, room_grace_seconds=GRACE)


_journals: dict[Rooms, Journal] = {}


def registry(log: DocumentLog, catalogue: Catalogue, db_path: Path) -> Rooms:
    """The registry as the app makes it, over a journal on `log`."""
    journal = Journal(log, settings(db_path))
    rooms = Rooms(journal, catalogue, settings(db_path))
    _journals[rooms] = journal
    return rooms


async def close(rooms: Rooms) -> None:
    await rooms.close()
    await _journals.pop(rooms).close()


def edit(text: str) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("t", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


async def unloaded(rooms: Rooms, name: str, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while rooms.get(name) is not None:
            await asyncio.sleep(0.01)


async def test_joins_that_arrive_together_share_one_load(
    sqlite: SQLiteStore, db_path: Path
) -> None:
    store = TestLog(sqlite, load_delay=0.01)  # every join arrives meanwhile
    rooms = registry(store, sqlite, db_path)
    found = await asyncio.gather(*(rooms.acquire("doc") for _ in range(20)))
    assert store.loads == 1 and len({id(room) for room in found}) == 1
    for _ in found:
        rooms.release("doc")
    await close(rooms)


async def test_a_room_unloads_after_the_grace_period_with_its_state_saved(
    sqlite: SQLiteStore, db_path: Path
) -> None:
    store = TestLog(sqlite, load_delay=0.01)  # every join arrives meanwhile
    rooms = registry(store, sqlite, db_path)
    room = await rooms.acquire("doc")
    room.apply_update(edit("kept"))
    await room.ledger.flush()
    rooms.release("doc")
    assert rooms.get("doc") is room  # the grace period: a reconnect finds it loaded
    again = await rooms.acquire("doc")  # and a join within it cancels the unload
    assert again is room and store.loads == 1
    rooms.release("doc")
    await unloaded(rooms, "doc")
    stored = await sqlite.load("doc")
    assert stored.state is not None and stored.updates == []  # snapshotted, log pruned
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(stored.state)
    assert str(doc.get("t", type=pycrdt.Text)) == "kept"
    await close(rooms)


async def test_a_room_whose_save_fails_stays_loaded_and_unloads_once_it_succeeds(
    sqlite: SQLiteStore, db_path: Path
) -> None:
    store = TestLog(sqlite, load_delay=0.01, failing_versions=2)
    rooms = registry(store, sqlite, db_path)
    room = await rooms.acquire("doc")
    room.apply_update(edit("not lost"))
    await room.ledger.flush()
    rooms.release("doc")
    async with asyncio.timeout(5):
        while store.failing_versions > 1:  # the first unload failed to save...
            await asyncio.sleep(0.01)
    assert rooms.get("doc") is room  # ...and kept the room loaded
    async with asyncio.timeout(5):
        while store.failing_versions:
            await asyncio.sleep(0.01)
    await unloaded(rooms, "doc")  # the third attempt saves
    reloaded = await rooms.acquire("doc")
    assert reloaded is not room and store.loads == 2
    assert str(reloaded.document.ydoc.get("t", type=pycrdt.Text)) == "not lost"
    rooms.release("doc")
    await close(rooms)
