"""SQLiteStore: the embedded default store, one SQLite file in WAL mode.

Every write goes through one writer task that commits whatever has queued up while the
previous commit was in flight as a single transaction: many updates of many documents per
fsync. Reads use a second connection, so a room load never waits behind a commit and
always sees a committed, consistent view.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from collab.auth import Revocation
from collab.errors import StoreError, VersionNotFound
from collab.store import DocInfo, StoredDoc, Version, VersionKind

log = logging.getLogger(__name__)

# Ordered migrations: schema version N is reached by running MIGRATIONS[N - 1].
MIGRATIONS: list[str] = [
    """
    CREATE TABLE docs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        update_count INTEGER NOT NULL DEFAULT 0
    );
    -- AUTOINCREMENT: ids never go back, even after pruning, so "after a snapshot's
    -- log_id" always means "written after that snapshot".
    CREATE TABLE updates (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_id INTEGER NOT NULL REFERENCES docs(id) ON DELETE CASCADE,
        data BLOB NOT NULL
    );
    CREATE INDEX updates_by_doc ON updates(doc_id, id);
    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_id INTEGER NOT NULL REFERENCES docs(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        kind TEXT NOT NULL,
        label TEXT,
        log_id INTEGER NOT NULL,
        update_count INTEGER NOT NULL,
        size INTEGER NOT NULL,
        state BLOB NOT NULL
    );
    CREATE INDEX snapshots_by_doc ON snapshots(doc_id, id);
    """,
    """
    -- Lowered grants: of one token (token_id) or of a user's tokens issued before `at`.
    CREATE TABLE revocations (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        permission TEXT NOT NULL,
        token_id TEXT,
        subject TEXT,
        docs TEXT NOT NULL
    );
    """,
    """
    -- A document's last change and update count follow its log, inside the statement that
    -- appends: a commit of appends is then one statement, one trip to the database thread.
    CREATE TRIGGER updates_touch_doc AFTER INSERT ON updates BEGIN
        UPDATE docs SET updated_at = (julianday('now') - 2440587.5) * 86400.0,
                        update_count = update_count + 1
        WHERE id = NEW.doc_id;
    END;
    """,
]

# Documents one load query takes (one variable each).
_DOCS_PER_READ = 500

# Rows one INSERT statement takes (two variables each; SQLite allows 32,766 variables).
_ROWS_PER_INSERT = 10_000


@dataclass(slots=True)
class _Append:
    doc: str
    updates: Sequence[bytes]
    done: asyncio.Future[None]


@dataclass(slots=True)
class _DeleteVersions:
    doc: str
    ids: Sequence[int]
    done: asyncio.Future[int]


@dataclass(slots=True)
class _DeleteDoc:
    doc: str
    done: asyncio.Future[bool]


@dataclass(slots=True)
class _AddRevocation:
    revocation: Revocation
    done: asyncio.Future[None]


@dataclass(slots=True)
class _SaveVersion:
    doc: str
    state: bytes
    kind: VersionKind
    label: str | None
    done: asyncio.Future[Version]
    created_at: float = field(default_factory=time.time)


_Op = _Append | _SaveVersion | _DeleteVersions | _DeleteDoc | _AddRevocation


async def _connect(path: Path, sync: str) -> aiosqlite.Connection:
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
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        await conn.close()
        raise
    return conn


async def migrate(conn: aiosqlite.Connection) -> int:
    """Bring the schema to the newest version; return that version."""
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    async with conn.execute("SELECT version FROM schema_version") as cursor:
        row = await cursor.fetchone()
    version = row[0] if row else 0
    if version > len(MIGRATIONS):
        raise StoreError(f"database schema {version} is newer than this collab knows")
    for number in range(version + 1, len(MIGRATIONS) + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[number - 1]):
                await conn.execute(statement)
            await conn.execute("DELETE FROM schema_version")
            await conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        log.info("database schema migrated to version %d", number)
    return len(MIGRATIONS)


def _statements(script: str) -> list[str]:
    """The statements of a migration, one by one (a trigger's body holds semicolons)."""
    statements, current = [], ""
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


class SQLiteStore:
    """The `Store` on one SQLite file. Create with `await SQLiteStore.open(path)`."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._queue: deque[_Op] = deque()
        self._wakeup = asyncio.Event()
        self._loads: dict[str, list[asyncio.Future[StoredDoc]]] = {}
        self._reads: asyncio.Task[None] | None = None
        self._closing = False
        self._doc_ids: dict[str, int] = {}
        self._task = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    @classmethod
    async def open(cls, path: Path, *, sync: str = "normal") -> SQLiteStore:
        opened: list[aiosqlite.Connection] = []
        try:
            opened.append(await _connect(path, sync))
            await migrate(opened[0])
            opened.append(await _connect(path, sync))
        except (sqlite3.Error, StoreError) as exc:
            for conn in opened:
                await conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        return cls(*opened)

    # --- writes: queued, committed in groups by the writer task

    async def append(self, doc: str, updates: Sequence[bytes]) -> None:
        if updates:
            await self._submit(_Append(doc, updates, self._future()))

    async def save_version(
        self,
        doc: str,
        state: bytes,
        *,
        kind: VersionKind = "auto",
        label: str | None = None,
    ) -> Version:
        snapshot: Version = await self._submit(
            _SaveVersion(doc, state, kind, label, self._future())
        )
        return snapshot

    async def delete_versions(self, doc: str, snapshot_ids: Sequence[int]) -> int:
        if not snapshot_ids:
            return 0
        deleted: int = await self._submit(_DeleteVersions(doc, snapshot_ids, self._future()))
        return deleted

    async def delete_doc(self, doc: str) -> bool:
        existed: bool = await self._submit(_DeleteDoc(doc, self._future()))
        return existed

    async def add_revocation(self, revocation: Revocation) -> None:
        await self._submit(_AddRevocation(revocation, self._future()))

    async def revocations(self) -> list[Revocation]:
        try:
            async with self._reader.execute(
                "SELECT at, permission, token_id, subject, docs FROM revocations ORDER BY id"
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read revocations: {exc}") from exc
        return [Revocation(*row) for row in rows]

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, op: _Op) -> Any:
        if self._closing:
            raise StoreError("store is closed")
        self._queue.append(op)
        self._wakeup.set()
        return await op.done

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = list(self._queue)
                self._queue.clear()
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[_Op]) -> None:
        if await self._append_at_once(batch):
            return
        new_ids: dict[str, int | None] = {}
        results: list[Any] = []
        try:
            await self._writer.execute("BEGIN IMMEDIATE")
            appends: list[_Append] = []
            for op in batch:
                if isinstance(op, _Append):
                    appends.append(op)
                    results.append(None)
                    continue
                # Anything else must see the appends queued before it.
                await self._write_appends(appends, new_ids)
                appends = []
                results.append(await self._write_other(op, new_ids))
            await self._write_appends(appends, new_ids)
            await self._writer.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - any failure must reach the waiters, not hang them
            log.error("commit of %d writes failed: %s", len(batch), exc)
            await self._rollback()
            for op in batch:
                if not op.done.done():
                    op.done.set_exception(StoreError(f"write failed: {exc}"))
            return
        for name, doc_id in new_ids.items():
            if doc_id is None:
                self._doc_ids.pop(name, None)
            else:
                self._doc_ids[name] = doc_id
        for op, result in zip(batch, results, strict=True):
            if not op.done.done():
                op.done.set_result(result)

    async def _append_at_once(self, batch: list[_Op]) -> bool:
        """Commit a batch of appends to known documents as one INSERT statement, which
        is its own transaction (the connection is in autocommit mode): the common case,
        at one round trip to the database thread instead of four. False, having done
        nothing, for any other batch."""
        appends = [op for op in batch if isinstance(op, _Append)]
        if len(appends) < len(batch) or any(op.doc not in self._doc_ids for op in appends):
            return False
        rows: list[int | bytes] = []
        for op in appends:
            doc_id = self._doc_ids[op.doc]
            for update in op.updates:
                rows += (doc_id, update)
        if not rows or len(rows) > 2 * _ROWS_PER_INSERT:
            return False
        values = ",".join(["(?,?)"] * (len(rows) // 2))
        try:
            await self._writer.execute(f"INSERT INTO updates (doc_id, data) VALUES {values}", rows)
        except sqlite3.Error as exc:
            log.error("commit of %d writes failed: %s", len(batch), exc)
            for op in appends:
                if not op.done.done():
                    op.done.set_exception(StoreError(f"write failed: {exc}"))
            return True
        for op in appends:
            if not op.done.done():
                op.done.set_result(None)
        return True

    async def _rollback(self) -> None:
        try:
            await self._writer.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open

    async def _doc_id(self, name: str, new_ids: dict[str, int | None]) -> int:
        # new_ids: ids created in this transaction, and None for documents it deleted.
        known = new_ids[name] if name in new_ids else self._doc_ids.get(name)
        if known is not None:
            return known
        now = time.time()
        await self._writer.execute(
            "INSERT INTO docs (name, created_at, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING",
            (name, now, now),
        )
        async with self._writer.execute("SELECT id FROM docs WHERE name = ?", (name,)) as cur:
            row = await cur.fetchone()
        assert row is not None
        new_ids[name] = row[0]
        return int(row[0])

    async def _write_appends(self, appends: list[_Append], new_ids: dict[str, int | None]) -> None:
        if not appends:
            return
        rows: list[tuple[int, bytes]] = []
        for op in appends:
            doc_id = await self._doc_id(op.doc, new_ids)
            rows.extend((doc_id, update) for update in op.updates)
        # The trigger of schema 3 counts them in their document's row.
        await self._writer.executemany("INSERT INTO updates (doc_id, data) VALUES (?, ?)", rows)

    async def _write_other(
        self,
        op: _SaveVersion | _DeleteVersions | _DeleteDoc | _AddRevocation,
        new_ids: dict[str, int | None],
    ) -> Any:
        if isinstance(op, _SaveVersion):
            return await self._write_version(op, new_ids)
        if isinstance(op, _AddRevocation):
            r = op.revocation
            cursor = await self._writer.execute(
                "INSERT INTO revocations (at, permission, token_id, subject, docs) "
                "VALUES (?, ?, ?, ?, ?)",
                (r.at, r.permission, r.token_id, r.subject, r.docs),
            )
            await cursor.close()
            return None
        if isinstance(op, _DeleteDoc):
            new_ids[op.doc] = None
            cursor = await self._writer.execute("DELETE FROM docs WHERE name = ?", (op.doc,))
            await cursor.close()
            return cursor.rowcount > 0
        cursor = await self._writer.execute(
            "DELETE FROM snapshots WHERE id IN (SELECT s.id FROM snapshots s "
            "JOIN docs d ON d.id = s.doc_id WHERE d.name = ? AND s.id IN "
            f"({','.join('?' * len(op.ids))}) "
            "AND s.id < (SELECT max(id) FROM snapshots WHERE doc_id = d.id))",
            (op.doc, *op.ids),
        )
        await cursor.close()
        return cursor.rowcount

    async def _write_version(self, op: _SaveVersion, new_ids: dict[str, int | None]) -> Version:
        doc_id = await self._doc_id(op.doc, new_ids)
        # Every update of this doc committed or queued before this op is in `state`.
        async with self._writer.execute(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'updates'), 0), "
            "update_count FROM docs WHERE id = ?",
            (doc_id,),
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        log_id, update_count = row
        cursor = await self._writer.execute(
            "INSERT INTO snapshots (doc_id, created_at, kind, label, log_id, update_count, "
            "size, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                doc_id,
                op.created_at,
                op.kind,
                op.label,
                log_id,
                update_count,
                len(op.state),
                op.state,
            ),
        )
        snapshot_id = cursor.lastrowid
        await cursor.close()
        await self._writer.execute(
            "DELETE FROM updates WHERE doc_id = ? AND id <= ?", (doc_id, log_id)
        )
        assert snapshot_id is not None
        return Version(
            snapshot_id, op.doc, op.created_at, op.kind, op.label, len(op.state), update_count
        )

    # --- reads: on their own connection, each in one read transaction

    async def load(self, doc: str) -> StoredDoc:
        # Loads that arrive together are read together, in one read transaction of three
        # queries: a storm of connections to many rooms then costs a few trips to the
        # database thread, not five or more per room (found: 3,000 rooms loaded one after
        # the other took 4.5 s, while the event loop had time to spare).
        if self._closing:
            raise StoreError("store is closed")
        done: asyncio.Future[StoredDoc] = self._future()
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
                        future.set_result(stored.get(name) or StoredDoc(None, [], 0))

    async def _read_docs(self, names: list[str]) -> dict[str, StoredDoc]:
        reader = self._reader
        await reader.execute("BEGIN")
        try:
            rows = await reader.execute_fetchall(
                f"SELECT id, name, update_count FROM docs WHERE name IN ({_marks(names)})",
                names,
            )
            if not rows:
                return {}
            ids = [row[0] for row in rows]
            snapshots = {
                doc_id: (bytes(state), log_id)
                for doc_id, state, log_id in await reader.execute_fetchall(
                    f"SELECT doc_id, state, log_id FROM snapshots WHERE id IN (SELECT max(id) "
                    f"FROM snapshots WHERE doc_id IN ({_marks(ids)}) GROUP BY doc_id)",
                    ids,
                )
            }
            # Each one's log after its latest snapshot.
            after = [(doc_id, snapshots.get(doc_id, (None, 0))[1]) for doc_id in ids]
            logs: dict[int, list[bytes]] = {doc_id: [] for doc_id in ids}
            for doc_id, data in await reader.execute_fetchall(
                f"WITH after(doc_id, log_id) AS (VALUES {','.join(['(?, ?)'] * len(after))}) "
                "SELECT u.doc_id, u.data FROM after a "
                "JOIN updates u ON u.doc_id = a.doc_id AND u.id > a.log_id ORDER BY u.id",
                [value for pair in after for value in pair],
            ):
                logs[doc_id].append(bytes(data))
        finally:
            await reader.execute("COMMIT")
        return {
            name: StoredDoc(snapshots.get(doc_id, (None, 0))[0], logs[doc_id], update_count)
            for doc_id, name, update_count in rows
        }

    async def versions(self, doc: str) -> list[Version]:
        try:
            async with self._reader.execute(
                "SELECT s.id, s.created_at, s.kind, s.label, s.size, s.update_count "
                "FROM snapshots s JOIN docs d ON d.id = s.doc_id WHERE d.name = ? "
                "ORDER BY s.id",
                (doc,),
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot list snapshots of {doc!r}: {exc}") from exc
        return [Version(r[0], doc, r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def version_state(self, doc: str, snapshot_id: int) -> bytes:
        try:
            async with self._reader.execute(
                "SELECT s.state FROM snapshots s JOIN docs d ON d.id = s.doc_id "
                "WHERE d.name = ? AND s.id = ?",
                (doc, snapshot_id),
            ) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read version {snapshot_id} of {doc!r}: {exc}") from exc
        if row is None:
            raise VersionNotFound(f"document {doc!r} has no version {snapshot_id}")
        return bytes(row[0])

    _DOC_INFO = (
        "SELECT name, created_at, updated_at, update_count, "
        "coalesce((SELECT size FROM snapshots s WHERE s.doc_id = d.id "
        "ORDER BY s.id DESC LIMIT 1), 0) + "
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
            async with self._reader.execute(query, args) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot list documents: {exc}") from exc
        return [DocInfo(*row) for row in rows]

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        await self._task
        if self._reads is not None:
            await asyncio.wait([self._reads])
        await self._reader.close()
        await self._writer.close()
