"""SQLiteStore: the embedded default store, one SQLite file in WAL mode. It implements
every storage interface of collab/store/__init__.py.

Writes are serialised on one connection, each batch of them one transaction. With
`synchronous=NORMAL` a commit does not fsync, and one costs ~14 us here, less than the
trip to a database thread and back (measured: that trip was the cost of committing
before relaying), so small batches commit right on the event loop. With `--db-sync full`
(every commit fsyncs) and for large writes they run in a thread. Checkpoints, which do
fsync, never run inline: the writer's automatic checkpoint is off and the store moves
the WAL into the database from a thread of its own. Reads use another connection on
aiosqlite's thread, so a room load never waits behind a commit and sees a consistent view.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from collab.auth import Revocation
from collab.errors import StoreError, VersionNotFound
from collab.store import DocInfo, StoredDoc, Version, VersionKind, past
from collab.store.schema import migrate
from collab.store.sqlite_outbox import SQLiteOutbox

log = logging.getLogger(__name__)

# Documents one load query takes (one variable each).
_DOCS_PER_READ = 500

# Writes of more bytes than this go to a thread rather than commit on the event loop.
_INLINE_BYTES = 256 * 1024

# Commits between two checkpoints (each commit adds a page or a few to the WAL), and
# the most seconds between two while anything is written.
_CHECKPOINT_COMMITS = 500
_CHECKPOINT_SECONDS = 2.0
_PROBE_SECONDS = 1.0  # how long the readiness probe waits for the write lock

# The version loading starts from: the one covering most of the log (a late writer's
# version may cover less than an earlier one), the newest of those.
_BASE_VERSION = (
    "SELECT id FROM versions w WHERE w.doc_id = {doc} ORDER BY covers DESC, id DESC LIMIT 1"
)


@dataclass(slots=True)
class _Write:
    """One queued write: `run` does it on the writer connection, inside the batch's
    transaction; `done` gets what it returns."""

    run: Callable[[sqlite3.Connection, _Docs], Any]
    size: int
    done: asyncio.Future[Any]


@dataclass(slots=True)
class _Docs:
    """Known documents, name -> (row id, updates ever appended): the offset of the next
    update is that count + 1. Changes of a transaction are staged, kept if it commits."""

    known: dict[str, tuple[int, int]] = field(default_factory=dict)
    staged: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    # The nodes of a cluster share the file: a count kept from an earlier transaction
    # may be stale, so each transaction reads it (under its write lock) instead of
    # failing on the offset check and retrying.
    shared: bool = False

    def get(self, conn: sqlite3.Connection, name: str) -> tuple[int, int]:
        if name in self.staged:
            found = self.staged[name]
        else:
            found = self.known.get(name)
            if found is not None and self.shared:
                found = self._count(conn, name, found[0])
        if found is None:
            now = time.time()
            conn.execute(
                "INSERT INTO docs (name, created_at, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, now, now),
            )
            row = conn.execute(
                "SELECT id, update_count FROM docs WHERE name = ?", (name,)
            ).fetchone()
            found = (int(row[0]), int(row[1]))
            self.staged[name] = found
        return found

    def _count(self, conn: sqlite3.Connection, name: str, doc_id: int) -> tuple[int, int] | None:
        """The row's count now, None if another writer deleted the document (its id may
        be another's since): for a document known already, a read without the insert."""
        row = conn.execute(
            "SELECT update_count FROM docs WHERE id = ? AND name = ?", (doc_id, name)
        ).fetchone()
        return None if row is None else (doc_id, int(row[0]))

    def commit(self) -> None:
        for name, value in self.staged.items():
            if value is None:
                self.known.pop(name, None)
            else:
                self.known[name] = value
        self.staged.clear()

    def rollback(self) -> None:
        # After a failure the counts may be stale (another writer): read them again.
        self.staged.clear()
        self.known.clear()


def _connect_writer(path: Path, sync: str) -> sqlite3.Connection:
    # check_same_thread off: the writer runs on the event loop or, for large or fsyncing
    # writes, in a thread; the store never uses it from two at once.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        _configure(conn, sync)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints fsync: done off the loop
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, sync: str) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")


async def _connect_reader(path: Path, sync: str) -> aiosqlite.Connection:
    conn = aiosqlite.connect(path, isolation_level=None)
    try:
        await conn
    except BaseException:
        # aiosqlite stops its worker thread after a failed connect but does not wait for
        # it; if the event loop closed first, the thread would die on it. Wait here.
        worker = getattr(conn, "_thread", None)
        if worker is not None and worker.is_alive():
            await asyncio.to_thread(worker.join, 5.0)
        raise
    try:
        await conn.execute("PRAGMA synchronous=" + ("FULL" if sync == "full" else "NORMAL"))
        await conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        await conn.close()
        raise
    return conn


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _open(path: Path, sync: str) -> sqlite3.Connection:
    writer = _connect_writer(path, sync)
    try:
        migrate(writer)
    except BaseException:
        writer.close()
        raise
    return writer


class SQLiteStore(SQLiteOutbox):
    """The store on one SQLite file (the webhooks' outbox: sqlite_outbox.py). Create
    with `await SQLiteStore.open(path)`."""

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        reader: aiosqlite.Connection,
        sync: str,
        shared: bool = False,
    ) -> None:
        self._path = path
        self._writer = writer
        self._reader = reader
        self._sync = sync
        self._docs = _Docs(shared=shared)
        self._queue: deque[_Write] = deque()
        self._wakeup = asyncio.Event()
        self._writing = False  # a batch is being written in a thread
        self._loads: dict[str, list[asyncio.Future[StoredDoc]]] = {}
        self._reads: asyncio.Task[None] | None = None
        self._closing = False
        self._commits = 0  # since the last checkpoint
        self._checkpointed = time.monotonic()
        self._checkpoint: asyncio.Task[None] | None = None
        self._task = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    @classmethod
    async def open(cls, path: Path, *, sync: str = "normal", shared: bool = False) -> SQLiteStore:
        """`shared`: other processes (the nodes of a cluster) write the file too."""
        try:
            writer = await asyncio.to_thread(_open, path, sync)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        try:
            reader = await _connect_reader(path, sync)
        except sqlite3.Error as exc:
            writer.close()
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        return cls(path, writer, reader, sync, shared)

    # --- writes: one at a time on the writer, each batch one transaction

    async def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
        batch = {doc: updates for doc, updates in batch.items() if updates}
        if not batch:
            return {}
        size = sum(len(u) for updates in batch.values() for u in updates)
        reached: dict[str, int] = await self._submit(_append_write(batch), size)
        return reached

    async def save_version(
        self,
        doc: str,
        state: bytes,
        offset: int,
        *,
        kind: VersionKind = "auto",
        label: str | None = None,
    ) -> Version:
        created_at = time.time()

        def run(conn: sqlite3.Connection, docs: _Docs) -> Version:
            doc_id, update_count = docs.get(conn, doc)
            cursor = conn.execute(
                "INSERT INTO versions (doc_id, created_at, kind, label, covers, update_count, "
                "size, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, created_at, kind, label, offset, update_count, len(state), state),
            )
            version_id = cursor.lastrowid
            assert version_id is not None
            conn.execute("DELETE FROM updates WHERE doc_id = ? AND seq <= ?", (doc_id, offset))
            return Version(version_id, doc, created_at, kind, label, len(state), update_count)

        version: Version = await self._submit(run, len(state))
        return version

    async def delete_versions(self, doc: str, version_ids: Sequence[int]) -> int:
        if not version_ids:
            return 0
        ids = list(version_ids)

        def run(conn: sqlite3.Connection, docs: _Docs) -> int:
            cursor = conn.execute(
                "DELETE FROM versions WHERE id IN (SELECT v.id FROM versions v "
                f"JOIN docs d ON d.id = v.doc_id WHERE d.name = ? AND v.id IN ({_marks(ids)}) "
                f"AND v.id IS NOT ({_BASE_VERSION.format(doc='d.id')}))",
                (doc, *ids),
            )
            return cursor.rowcount

        deleted: int = await self._submit(run, 0)
        return deleted

    async def delete_doc(self, doc: str) -> bool:
        def run(conn: sqlite3.Connection, docs: _Docs) -> bool:
            docs.staged[doc] = None
            return conn.execute("DELETE FROM docs WHERE name = ?", (doc,)).rowcount > 0

        existed: bool = await self._submit(run, 0)
        return existed

    async def add_revocation(self, revocation: Revocation) -> None:
        r = revocation

        def run(conn: sqlite3.Connection, docs: _Docs) -> None:
            conn.execute(
                "INSERT INTO revocations (at, permission, token_id, subject, docs) "
                "VALUES (?, ?, ?, ?, ?)",
                (r.at, r.permission, r.token_id, r.subject, r.docs),
            )

        await self._submit(run, 0)

    async def _submit(self, run: Callable[[sqlite3.Connection, _Docs], Any], size: int) -> Any:
        if self._closing:
            raise StoreError("store is closed")
        done = asyncio.get_running_loop().create_future()
        write = _Write(run, size, done)
        if not self._queue and not self._writing and self._inline(size):
            # Nothing before it: commit now, without waking the writer task (the common
            # case of a room's commit, at no trip through the event loop).
            self._write([write])
        else:
            self._queue.append(write)
            self._wakeup.set()
        return await done

    def _inline(self, size: int) -> bool:
        return self._sync != "full" and size <= _INLINE_BYTES

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                if self._inline(sum(write.size for write in batch)):
                    self._write(batch)
                    continue
                self._writing = True
                try:
                    results = await asyncio.to_thread(self._transact, batch)
                finally:
                    self._writing = False
                self._settle(batch, results)
            if self._closing:
                return

    def _write(self, batch: list[_Write]) -> None:
        self._settle(batch, self._transact(batch))

    def _transact(self, batch: list[_Write]) -> list[Any] | Exception:
        """Run a batch as one transaction (on the loop or in a thread: no futures here)."""
        conn = self._writer
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [write.run(conn, self._docs) for write in batch]
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - any failure must reach the waiters, not hang them
            log.error("commit of %d writes failed: %s", len(batch), exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # no transaction was open
            self._docs.rollback()
            return exc
        self._docs.commit()
        return results

    def _settle(self, batch: list[_Write], results: list[Any] | Exception) -> None:
        for index, write in enumerate(batch):
            if write.done.done():
                continue
            if isinstance(results, Exception):
                error = StoreError(f"write failed: {results}")
                error.__cause__ = results
                write.done.set_exception(error)
            else:
                write.done.set_result(results[index])
        self._commits += 1
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        now = time.monotonic()
        if self._commits < _CHECKPOINT_COMMITS and now - self._checkpointed < _CHECKPOINT_SECONDS:
            return
        self._commits = 0
        self._checkpointed = now
        self._checkpoint = asyncio.create_task(self._run_checkpoint(), name="sqlite-checkpoint")

    async def _run_checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self._checkpoint_now, "PASSIVE")
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed, will try again: %s", exc)

    def _checkpoint_now(self, mode: str) -> None:
        # Its own connection: the writer may be in use on the loop meanwhile.
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(f"PRAGMA wal_checkpoint({mode})")
        finally:
            conn.close()

    # --- reads: on their own connection, each in one read transaction

    async def load(self, doc: str) -> StoredDoc:
        # Loads that arrive together are read together, in one read transaction of three
        # queries: a storm of connections to many rooms then costs a few trips to the
        # database thread, not five or more per room (found: 3,000 rooms loaded one after
        # the other took 4.5 s, while the event loop had time to spare).
        if self._closing:
            raise StoreError("store is closed")
        done: asyncio.Future[StoredDoc] = asyncio.get_running_loop().create_future()
        self._loads.setdefault(doc, []).append(done)
        if self._reads is None or self._reads.done():
            self._reads = asyncio.create_task(self._read_loop(), name="sqlite-reader")
        return await done

    async def _read_loop(self) -> None:
        while self._loads:
            names = list(itertools.islice(self._loads, _DOCS_PER_READ))
            waiting = [(name, self._loads.pop(name)) for name in names]
            try:
                stored = await self._read_docs(names)
            # Whatever failed, every waiting load must hear of it, or its room never opens.
            except Exception as exc:  # noqa: BLE001
                for name, futures in waiting:
                    error = StoreError(f"cannot load {name!r}: {exc}")
                    error.__cause__ = exc
                    for future in futures:
                        if not future.done():  # unless its caller gave up waiting
                            future.set_exception(error)
                continue
            for name, futures in waiting:
                for future in futures:
                    if not future.done():
                        future.set_result(stored.get(name) or StoredDoc(None, 0, []))

    async def _read_docs(self, names: list[str]) -> dict[str, StoredDoc]:
        reader = self._reader
        await reader.execute("BEGIN")
        try:
            rows = await reader.execute_fetchall(
                f"SELECT id, name FROM docs WHERE name IN ({_marks(names)})", names
            )
            if not rows:
                return {}
            ids = [row[0] for row in rows]
            bases = {
                doc_id: (bytes(state), covers)
                for doc_id, state, covers in await reader.execute_fetchall(
                    f"SELECT doc_id, state, covers FROM versions v WHERE doc_id IN "
                    f"({_marks(ids)}) AND id = ({_BASE_VERSION.format(doc='v.doc_id')})",
                    ids,
                )
            }
            # Each one's log after the version it starts from.
            after = [(doc_id, bases.get(doc_id, (None, 0))[1]) for doc_id in ids]
            logs: dict[int, list[bytes]] = {doc_id: [] for doc_id in ids}
            for doc_id, data in await reader.execute_fetchall(
                f"WITH after(doc_id, seq) AS (VALUES {','.join(['(?, ?)'] * len(after))}) "
                "SELECT u.doc_id, u.data FROM after a "
                "JOIN updates u ON u.doc_id = a.doc_id AND u.seq > a.seq ORDER BY u.seq",
                [value for pair in after for value in pair],
            ):
                logs[doc_id].append(bytes(data))
        finally:
            await reader.execute("COMMIT")
        loaded = {}
        for doc_id, name in rows:
            state, covers = bases.get(doc_id, (None, 0))
            loaded[name] = StoredDoc(state, covers, logs[doc_id])
        return loaded

    async def read(self, doc: str, after: int) -> list[tuple[int, bytes]]:
        try:
            rows = await self._reader.execute_fetchall(
                "SELECT u.seq, u.data FROM updates u JOIN docs d ON d.id = u.doc_id "
                "WHERE d.name = ? AND u.seq > ? ORDER BY u.seq",
                (doc, after),
            )
            found = [(int(seq), bytes(data)) for seq, data in rows]
            version = None
            if not found or found[0][0] != after + 1:
                versions = await self._reader.execute_fetchall(
                    "SELECT v.covers, v.state FROM versions v JOIN docs d ON d.id = v.doc_id "
                    "WHERE d.name = ? AND v.covers > ? ORDER BY v.covers DESC LIMIT 1",
                    (doc, after),
                )
                version = next(((int(c), bytes(state)) for c, state in versions), None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the log of {doc!r}: {exc}") from exc
        return past(after, found, version)

    async def versions(self, doc: str) -> list[Version]:
        try:
            rows = await self._reader.execute_fetchall(
                "SELECT v.id, v.created_at, v.kind, v.label, v.size, v.update_count "
                "FROM versions v JOIN docs d ON d.id = v.doc_id WHERE d.name = ? "
                "ORDER BY v.id",
                (doc,),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot list the versions of {doc!r}: {exc}") from exc
        return [Version(r[0], doc, r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def version_state(self, doc: str, version_id: int) -> bytes:
        try:
            rows = await self._reader.execute_fetchall(
                "SELECT v.state FROM versions v JOIN docs d ON d.id = v.doc_id "
                "WHERE d.name = ? AND v.id = ?",
                (doc, version_id),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read version {version_id} of {doc!r}: {exc}") from exc
        if not rows:
            raise VersionNotFound(f"document {doc!r} has no version {version_id}")
        return bytes(next(iter(rows))[0])

    _DOC_INFO = (
        "SELECT name, created_at, updated_at, update_count, "
        "coalesce((SELECT size FROM versions v WHERE v.id = "
        f"({_BASE_VERSION.format(doc='d.id')})), 0) + "
        "coalesce((SELECT sum(length(data)) FROM updates u WHERE u.doc_id = d.id), 0), "
        "(SELECT count(*) FROM updates u WHERE u.doc_id = d.id) "
        "FROM docs d"
    )

    async def docs(self) -> list[DocInfo]:
        return await self._doc_infos(f"{self._DOC_INFO} ORDER BY name", ())

    async def doc_info(self, doc: str) -> DocInfo | None:
        found = await self._doc_infos(f"{self._DOC_INFO} WHERE name = ?", (doc,))
        return found[0] if found else None

    async def _doc_infos(self, query: str, args: tuple[Any, ...]) -> list[DocInfo]:
        try:
            rows = await self._reader.execute_fetchall(query, args)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot list documents: {exc}") from exc
        return [DocInfo(*row) for row in rows]

    async def revocations(self) -> list[Revocation]:
        try:
            rows = await self._reader.execute_fetchall(
                "SELECT at, permission, token_id, subject, docs FROM revocations ORDER BY id"
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read revocations: {exc}") from exc
        return [Revocation(*row) for row in rows]

    async def ping(self) -> None:
        """Raises: StoreError: the database does not answer."""
        if self._closing:
            raise StoreError("store is closed")
        try:
            await self._reader.execute_fetchall("SELECT 1")
        except sqlite3.Error as exc:
            raise StoreError(f"the database does not answer: {exc}") from exc

    async def writable(self) -> None:
        """Raises: StoreError: a write could not start now (another process holds the
        write lock past a second, the file or its directory is read-only...)."""
        if self._closing:
            raise StoreError("store is closed")
        await asyncio.to_thread(self._try_write)

    def _try_write(self) -> None:
        # Its own connection, in a thread: the writer's may be in use on the loop.
        try:
            conn = sqlite3.connect(self._path, timeout=_PROBE_SECONDS, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")  # takes the write lock, writes nothing
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"the database cannot be written: {exc}") from exc

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        await self._task
        if self._reads is not None:
            await asyncio.wait([self._reads])
        if self._checkpoint is not None:
            await asyncio.wait([self._checkpoint])
        await self._reader.close()
        try:
            await asyncio.to_thread(self._checkpoint_now, "TRUNCATE")
        except sqlite3.Error as exc:
            log.warning("final WAL checkpoint failed (the WAL is kept, nothing lost): %s", exc)
        self._writer.close()


def _append_write(
    batch: Mapping[str, Sequence[bytes]],
) -> Callable[[sqlite3.Connection, _Docs], dict[str, int]]:
    """The write of an append: each document's updates at the offsets after its last."""

    def run(conn: sqlite3.Connection, docs: _Docs) -> dict[str, int]:
        rows: list[tuple[int, int, bytes]] = []
        reached: dict[str, int] = {}
        for name, updates in batch.items():
            doc_id, count = docs.get(conn, name)
            rows.extend((doc_id, count + i, update) for i, update in enumerate(updates, 1))
            reached[name] = count + len(updates)
            docs.staged[name] = (doc_id, reached[name])
        # The triggers check each offset and count it in its document's row.
        conn.executemany("INSERT INTO updates (doc_id, seq, data) VALUES (?, ?, ?)", rows)
        return reached

    return run
