"""SQLiteStore on a real SQLite file: log, snapshots, migrations, grouped commits."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from collab.errors import StoreError, VersionNotFound
from collab.store.sqlite import MIGRATIONS, SQLiteStore


async def test_fresh_database_is_created_at_the_newest_schema(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_database_from_a_newer_collab_is_refused(db_path: Path) -> None:
    await (await SQLiteStore.open(db_path)).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore.open(db_path)


async def test_appended_updates_load_in_order_after_reopening(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.append("a", [b"1", b"2"])
    await store.append("b", [b"x"])
    await store.append("a", [b"3"])
    await store.close()
    store = await SQLiteStore.open(db_path)
    loaded = await store.load("a")
    assert (loaded.state, loaded.updates, loaded.update_count) == (None, [b"1", b"2", b"3"], 3)
    assert [(d.name, d.update_count) for d in await store.docs()] == [("a", 3), ("b", 1)]
    await store.close()


async def test_unknown_document_loads_empty_and_is_not_created(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    loaded = await store.load("nobody")
    assert not loaded.exists
    assert await store.docs() == []
    await store.close()


async def test_snapshot_covers_and_prunes_the_log_before_it(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.append("a", [b"1", b"2"])
    first = await store.save_version("a", b"state-12")
    await store.append("a", [b"3"])
    loaded = await store.load("a")
    assert (loaded.state, loaded.updates) == (b"state-12", [b"3"])
    second = await store.save_version("a", b"state-123", kind="named", label="v2")
    loaded = await store.load("a")
    assert (loaded.state, loaded.updates) == (b"state-123", [])
    versions = await store.versions("a")
    assert [(s.id, s.kind, s.label, s.size, s.update_count) for s in versions] == [
        (first.id, "auto", None, 8, 2),
        (second.id, "named", "v2", 9, 3),
    ]
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM updates").fetchone() == (0,)
    await store.close()


async def test_pruning_never_reuses_update_ids(db_path: Path) -> None:
    # With plain rowids, an update appended after pruning the highest row could get an
    # id the snapshot already covers, and be skipped at load.
    store = await SQLiteStore.open(db_path)
    await store.append("a", [b"1"])
    await store.save_version("a", b"s1")
    await store.append("a", [b"2"])
    assert (await store.load("a")).updates == [b"2"]
    await store.close()


async def test_snapshot_queued_between_appends_covers_only_those_before(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    results = await asyncio.gather(
        store.append("a", [b"1"]),
        store.save_version("a", b"state-1"),
        store.append("a", [b"2"]),
    )
    assert results[1].update_count == 1
    loaded = await store.load("a")
    assert (loaded.state, loaded.updates) == (b"state-1", [b"2"])
    await store.close()


async def test_concurrent_appends_are_committed_in_few_transactions(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    commits: list[str] = []
    await store._writer.set_trace_callback(
        lambda sql: commits.append(sql) if sql == "COMMIT" else None
    )
    await asyncio.gather(*(store.append(f"doc{i % 10}", [b"u"]) for i in range(200)))
    assert sum(d.update_count for d in await store.docs()) == 200
    assert 1 <= len(commits) <= 5
    await store.close()


async def test_appends_to_known_documents_are_one_statement_per_batch(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.append("doc", [b"first"])  # creates the document's row
    statements: list[str] = []
    await store._writer.set_trace_callback(statements.append)
    await asyncio.gather(*(store.append("doc", [b"u"]) for _ in range(100)))
    # (SQLite traces a statement again at each run of its trigger.)
    inserts = {s for s in statements if s.startswith("INSERT INTO updates")}
    assert 1 <= len(inserts) <= 5 and "COMMIT" not in statements
    loaded = await store.load("doc")
    assert len(loaded.updates) == loaded.update_count == 101
    await store.close()


async def test_a_schema_2_database_is_migrated_and_keeps_counting(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:  # as collab left it before schema 3
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for script in MIGRATIONS[:2]:
            conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (2)")
        conn.execute(
            "INSERT INTO docs (name, created_at, updated_at, update_count) VALUES ('a', 1, 1, 1)"
        )
        conn.execute("INSERT INTO updates (doc_id, data) VALUES (1, x'00')")
    store = await SQLiteStore.open(db_path)
    await store.append("a", [b"1", b"2"])
    (info,) = await store.docs()
    assert info.update_count == 3 and info.updated_at > 1_000_000_000
    await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(3,)]


async def test_writes_after_close_raise_store_error(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.close()
    with pytest.raises(StoreError):
        await store.append("a", [b"1"])


async def test_unwritable_database_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await SQLiteStore.open(tmp_path / "missing-dir" / "collab.db")


async def test_version_state_is_read_back_and_unknown_ids_are_not_found(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.append("a", [b"1"])
    snapshot = await store.save_version("a", b"state-1", kind="named", label="one")
    assert await store.version_state("a", snapshot.id) == b"state-1"
    with pytest.raises(VersionNotFound):
        await store.version_state("a", snapshot.id + 1)
    with pytest.raises(VersionNotFound):
        await store.version_state("b", snapshot.id)  # another document's id
    await store.close()


async def test_deleting_versions_never_deletes_the_newest(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    ids = []
    for i in range(3):
        await store.append("a", [b"%d" % i])
        ids.append((await store.save_version("a", b"s%d" % i)).id)
    assert await store.delete_versions("a", ids) == 2
    assert [s.id for s in await store.versions("a")] == [ids[-1]]
    assert (await store.load("a")).state == b"s2"
    await store.close()


async def test_delete_doc_sees_appends_queued_before_it_and_not_after(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.append("a", [b"old"])
    existed, _ = await asyncio.gather(store.delete_doc("a"), store.append("a", [b"new"]))
    assert existed
    loaded = await store.load("a")
    assert (loaded.updates, loaded.update_count) == ([b"new"], 1)
    assert not await store.delete_doc("missing")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM updates").fetchone() == (1,)
    await store.close()


async def test_doc_info_reports_size_and_log(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    assert await store.doc_info("a") is None
    await store.append("a", [b"12345", b"678"])
    info = await store.doc_info("a")
    assert info is not None and (info.size, info.log_updates, info.update_count) == (8, 2, 2)
    await store.save_version("a", b"abcd")
    info = await store.doc_info("a")
    assert info is not None and (info.size, info.log_updates) == (4, 0)
    await store.close()


async def test_many_documents_load_at_the_same_moment(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    for i in range(20):
        await store.append(f"doc{i}", [b"%d" % i])
        await store.save_version(f"doc{i}", b"s%d" % i)
        await store.append(f"doc{i}", [b"after%d" % i])
    loaded = await asyncio.gather(*(store.load(f"doc{i}") for i in range(20)))
    assert [(d.state, d.updates) for d in loaded] == [
        (b"s%d" % i, [b"after%d" % i]) for i in range(20)
    ]
    await store.close()


async def test_loads_that_arrive_together_are_read_in_one_transaction(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    for i in range(0, 1200, 3):  # every third document exists; some have snapshots
        await store.append(f"doc{i}", [b"a%d" % i, b"b%d" % i])
        if i % 2:
            await store.save_version(f"doc{i}", b"s%d" % i)
            await store.append(f"doc{i}", [b"c%d" % i])

    def expected(i: int) -> tuple[bytes | None, list[bytes], int]:
        if i % 3:
            return None, [], 0
        if i % 2:
            return b"s%d" % i, [b"c%d" % i], 3
        return None, [b"a%d" % i, b"b%d" % i], 2

    begins: list[str] = []
    await store._reader.set_trace_callback(
        lambda sql: begins.append(sql) if sql == "BEGIN" else None
    )
    numbers = [*range(1200), 3, 4]  # two names asked for twice
    loaded = await asyncio.gather(*(store.load(f"doc{i}") for i in numbers))
    assert [(d.state, d.updates, d.update_count) for d in loaded] == list(map(expected, numbers))
    assert 1 <= len(begins) <= 4  # 500 documents per read
    await store.close()


async def test_a_failed_read_fails_every_load_waiting_for_it(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.append("doc", [b"u"])
    await store._reader.close()
    results = await asyncio.gather(
        *(store.load(f"doc{i}") for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, StoreError) and "cannot load" in str(r) for r in results), results
    await store.close()
