"""The webhooks' outbox on SQLite (`Outbox` of collab/store/__init__.py), mixed into
SQLiteStore: writes go through its one writer, each one transaction, reads through its
reader connection. Table and ordering: schema.py's migration 5."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite

from collab.errors import StoreError
from collab.store import Delivery

# A new row is due at once unless an earlier one of its endpoint and document waits.
_ADD = (
    "INSERT INTO webhook_deliveries (endpoint, doc, event_id, body, created_at, due_at) "
    "SELECT ?1, ?2, ?3, ?4, ?5, CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries "
    "WHERE endpoint = ?1 AND doc = ?2) THEN NULL ELSE ?5 END"
)
_NEXT_DUE = (
    "UPDATE webhook_deliveries SET due_at = ? WHERE id = (SELECT min(id) "
    "FROM webhook_deliveries WHERE endpoint = ? AND doc = ?)"
)


class SQLiteOutbox:
    """The Outbox methods of SQLiteStore."""

    _reader: aiosqlite.Connection

    async def _submit(self, run: Callable[[sqlite3.Connection, Any], Any], size: int) -> Any:
        raise NotImplementedError  # SQLiteStore's

    async def add_event(
        self,
        endpoints: Sequence[str],
        doc: str,
        event_id: str,
        body: str,
        *,
        changed_to: int | None = None,
    ) -> bool:
        now = time.time()

        def run(conn: sqlite3.Connection, docs: Any) -> bool:
            if (
                changed_to is not None
                and not conn.execute(
                    "UPDATE docs SET changed_mark = ? WHERE name = ? AND changed_mark < ?",
                    (changed_to, doc, changed_to),
                ).rowcount
            ):
                return False
            for endpoint in endpoints:
                conn.execute(_ADD, (endpoint, doc, event_id, body, now))
            return True

        added: bool = await self._submit(run, len(body) * len(endpoints))
        return added

    async def finish(self, delivery_id: int) -> None:
        def run(conn: sqlite3.Connection, docs: Any) -> None:
            row = conn.execute(
                "DELETE FROM webhook_deliveries WHERE id = ? RETURNING endpoint, doc",
                (delivery_id,),
            ).fetchone()
            if row is not None:
                conn.execute(_NEXT_DUE, (time.time(), *row))

        await self._submit(run, 0)

    async def retry(self, delivery_id: int, at: float) -> None:
        def run(conn: sqlite3.Connection, docs: Any) -> None:
            conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, due_at = ? WHERE id = ?",
                (at, delivery_id),
            )

        await self._submit(run, 0)

    async def due(self, now: float, limit: int) -> list[Delivery]:
        rows = await self._outbox_read(
            "SELECT id, endpoint, doc, event_id, body, created_at, attempts "
            "FROM webhook_deliveries WHERE due_at <= ? ORDER BY due_at, id LIMIT ?",
            (now, limit),
        )
        return [Delivery(*row) for row in rows]

    async def unannounced(self, quiet_since: float, limit: int) -> list[tuple[str, int]]:
        rows = await self._outbox_read(
            "SELECT name, update_count FROM docs WHERE update_count > changed_mark "
            "AND updated_at < ? ORDER BY updated_at LIMIT ?",
            (quiet_since, limit),
        )
        return [(str(name), int(offset)) for name, offset in rows]

    async def backlog(self) -> tuple[int, float | None]:
        rows = await self._outbox_read(
            "SELECT count(*), min(created_at) FROM webhook_deliveries", ()
        )
        count, oldest = rows[0]
        return int(count), oldest

    async def _outbox_read(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            return list(await self._reader.execute_fetchall(query, args))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the webhooks' outbox: {exc}") from exc
