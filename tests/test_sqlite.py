"""SQLiteStore on a real SQLite file, what is its own: migrations from older schemas,
where commits run, grouped reads, a writer with a stale count. (What every store keeps is
in test_store.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from collab.errors import StoreError
from collab.store.schema import MIGRATIONS
from collab.store.sqlite import SQLiteStore


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


async def test_a_writer_with_a_stale_count_fails_and_then_appends_after_the_other(
    db_path: Path,
) -> None:
    """Two stores on one file, as two processes: each counts offsets from what it saw;
    the database refuses an offset that is not the next, and the refused writer reads
    the count again."""
    one, two = await SQLiteStore.open(db_path), await SQLiteStore.open(db_path)
    assert await one.append({"a": [b"1"]}) == {"a": 1}
    assert await two.append({"a": [b"2"]}) == {"a": 2}  # two has never counted "a"
    with pytest.raises(StoreError, match="out of its log order"):
        await one.append({"a": [b"3"]})  # one still counts 1
    assert await one.append({"a": [b"3"]}) == {"a": 3}  # as the journal retries
    assert await two.read("a", 0) == [(1, b"1"), (2, b"2"), (3, b"3")]
    await one.close()
    await two.close()


async def test_the_nodes_of_a_cluster_on_one_file_read_the_count_in_each_commit(
    db_path: Path,
) -> None:
    """Shared (the nodes of a cluster): two writers alternating on one document never
    fail on a stale count, so no commit waits for a retry."""
    one = await SQLiteStore.open(db_path, shared=True)
    two = await SQLiteStore.open(db_path, shared=True)
    for turn in range(1, 7):
        writer = one if turn % 2 else two
        assert await writer.append({"a": [b"%d" % turn], "b": [b"x"]}) == {"a": turn, "b": turn}
    assert [offset for offset, _ in await one.read("a", 0)] == [1, 2, 3, 4, 5, 6]
    await one.close()
    await two.close()


async def test_a_shared_writer_never_appends_to_a_row_id_another_writer_gave_away(
    db_path: Path,
) -> None:
    """Another node deleted the document this writer knows, and its row id went to a
    new document (SQLite reuses the largest id): the next append starts the document
    again, and the other document is left as it was."""
    one = await SQLiteStore.open(db_path, shared=True)
    two = await SQLiteStore.open(db_path, shared=True)
    assert await one.append({"gone": [b"1", b"2"]}) == {"gone": 2}
    assert await two.delete_doc("gone")
    assert await two.append({"new": [b"n"]}) == {"new": 1}
    assert await one.append({"gone": [b"3"]}) == {"gone": 1}
    assert await one.read("new", 0) == [(1, b"n")]
    assert await two.read("gone", 0) == [(1, b"3")]
    await one.close()
    await two.close()


async def test_a_version_queued_between_appends_covers_only_those_before(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    results = await asyncio.gather(
        store.append({"a": [b"1"]}),
        store.save_version("a", b"state-1", 1),
        store.append({"a": [b"2"]}),
    )
    assert results[1].update_count == 1
    loaded = await store.load("a")
    assert (loaded.state, loaded.updates) == (b"state-1", [b"2"])
    await store.close()


async def test_writes_queued_behind_a_large_one_commit_together(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    commits: list[str] = []
    store._writer.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    # The large state goes to a thread; everything arriving meanwhile queues behind it.
    await asyncio.gather(
        store.save_version("big", b"x" * (1 << 20), 0),
        *(store.append({f"doc{i % 10}": [b"u"]}) for i in range(200)),
    )
    assert sum(d.update_count for d in await store.docs()) == 200
    assert 1 <= len(commits) <= 3
    await store.close()


async def test_a_small_append_commits_on_the_event_loop(db_path: Path) -> None:
    """With synchronous=NORMAL a commit does not fsync: it is cheaper than the trip to a
    thread, and the one commit-before-relay costs (measured in docs/benchmarks.md)."""
    store = await SQLiteStore.open(db_path)
    threads: set[int] = set()
    store._writer.set_trace_callback(lambda sql: threads.add(threading.get_ident()))
    await store.append({"doc": [b"u"]})
    assert threads == {threading.get_ident()}
    await store.close()


async def test_with_full_sync_every_commit_runs_off_the_event_loop(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path, sync="full")
    threads: set[int] = set()
    store._writer.set_trace_callback(lambda sql: threads.add(threading.get_ident()))
    await store.append({"doc": [b"u"]})
    await store.save_version("doc", b"s", 1)
    assert threads and threading.get_ident() not in threads
    assert store._writer.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    await store.close()


async def test_the_wal_is_checkpointed_and_truncated_on_close(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    for _ in range(50):
        await store.append({"doc": [b"u" * 1000]})
    wal = db_path.with_name(db_path.name + "-wal")
    assert wal.stat().st_size > 0  # the writer never checkpoints on the loop
    await store.close()
    assert not wal.exists() or wal.stat().st_size == 0


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
    assert await store.append({"a": [b"1", b"2"]}) == {"a": 3}
    (info,) = await store.docs()
    assert info.update_count == 3 and info.updated_at > 1_000_000_000
    await store.close()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]


async def test_unwritable_database_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await SQLiteStore.open(tmp_path / "missing-dir" / "collab.db")


async def test_delete_doc_sees_appends_queued_before_it_and_not_after(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.append({"a": [b"old"]})
    existed, _ = await asyncio.gather(store.delete_doc("a"), store.append({"a": [b"new"]}))
    assert existed
    loaded = await store.load("a")
    assert (loaded.updates, loaded.end) == ([b"new"], 1)
    assert not await store.delete_doc("missing")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM updates").fetchone() == (1,)
    await store.close()


async def test_loads_that_arrive_together_are_read_in_one_transaction(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    for i in range(0, 1200, 3):  # every third document exists; some have snapshots
        await store.append({f"doc{i}": [b"a%d" % i, b"b%d" % i]})
        if i % 2:
            await store.save_version(f"doc{i}", b"s%d" % i, 2)
            await store.append({f"doc{i}": [b"c%d" % i]})

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
    assert [(d.state, d.updates, d.end) for d in loaded] == list(map(expected, numbers))
    assert 1 <= len(begins) <= 4  # 500 documents per read
    await store.close()


async def test_a_failed_read_fails_every_load_waiting_for_it(db_path: Path) -> None:
    store = await SQLiteStore.open(db_path)
    await store.append({"doc": [b"u"]})
    await store._reader.close()
    results = await asyncio.gather(
        *(store.load(f"doc{i}") for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, StoreError) and "cannot load" in str(r) for r in results), results
    await store.close()


async def test_a_database_of_schema_3_comes_along_with_nothing_lost(db_path: Path) -> None:
    """A database as collab wrote it before offsets: global update ids, a snapshot
    recording the last global id it covered, two documents' logs interleaved."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for script in MIGRATIONS[:3]:
            conn.executescript(script)
        conn.execute("INSERT INTO schema_version VALUES (3)")
        conn.execute("INSERT INTO docs (name, created_at, updated_at) VALUES ('a', 1, 1)")
        conn.execute("INSERT INTO docs (name, created_at, updated_at) VALUES ('b', 1, 1)")
        for doc_id, data in [(1, "a1"), (1, "a2"), (2, "b1"), (1, "a3"), (2, "b2")]:
            conn.execute(
                "INSERT INTO updates (doc_id, data) VALUES (?, ?)", (doc_id, data.encode())
            )
        # A snapshot of "a" after its third update (global id 4), which pruned the log.
        conn.execute(
            "INSERT INTO snapshots (doc_id, created_at, kind, label, log_id, update_count, "
            "size, state) VALUES (1, 2, 'named', 'first', 4, 3, 3, x'736133')"
        )
        conn.execute("DELETE FROM updates WHERE doc_id = 1 AND id <= 4")
        for doc_id, data in [(1, "a4"), (1, "a5")]:
            conn.execute(
                "INSERT INTO updates (doc_id, data) VALUES (?, ?)", (doc_id, data.encode())
            )
        conn.execute(
            "INSERT INTO revocations (at, permission, token_id, subject, docs) "
            "VALUES (3, 'read', 'tok', NULL, '*')"
        )
    store = await SQLiteStore.open(db_path)
    a, b = await store.load("a"), await store.load("b")
    assert (a.state, a.offset, a.updates, a.end) == (b"sa3", 3, [b"a4", b"a5"], 5)
    assert (b.state, b.offset, b.updates, b.end) == (None, 0, [b"b1", b"b2"], 2)
    assert await store.read("a", 3) == [(4, b"a4"), (5, b"a5")]
    (version,) = await store.versions("a")
    assert (version.kind, version.label, version.update_count) == ("named", "first", 3)
    assert await store.version_state("a", version.id) == b"sa3"
    assert [(r.permission, r.token_id) for r in await store.revocations()] == [("read", "tok")]
    assert await store.append({"a": [b"a6"], "b": [b"b3"]}) == {"a": 6, "b": 3}
    await store.save_version("a", b"sa6", 6)
    assert (await store.load("a")).updates == []
    assert (await store.load("b")).updates == [b"b1", b"b2", b"b3"]  # untouched
    await store.close()
