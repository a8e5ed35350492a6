"""The webhooks' outbox on PostgreSQL (`Outbox` of collab/store/__init__.py), mixed into
PostgresStore; the tables are SQLite's (collab/store/schema.py, migration 5). Several
nodes write it at once: what adds to or removes from one endpoint's queue of one
document holds a transaction lock on that pair, so one head is due at a time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from collab.store import Delivery

# Held until the transaction ends; two keys, so no clash with the migration's lock.
_LOCK_QUEUE = "SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))"
_ADD = """
    INSERT INTO webhook_deliveries (endpoint, doc, event_id, body, created_at, due_at)
    SELECT $1::text, $2::text, $3::text, $4::text, $5::float8, CASE WHEN EXISTS (
        SELECT FROM webhook_deliveries WHERE endpoint = $1 AND doc = $2) THEN NULL ELSE $5 END
"""
_NEXT_DUE = """
    UPDATE webhook_deliveries SET due_at = $1 WHERE id = (SELECT min(id)
        FROM webhook_deliveries WHERE endpoint = $2 AND doc = $3)
"""


class PostgresOutbox:
    """The Outbox methods of PostgresStore."""

    def _connection(self, failure: str) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError  # PostgresStore's

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
        async with self._connection("write failed") as conn, conn.transaction():
            if changed_to is not None:
                status = await conn.execute(
                    "UPDATE docs SET changed_mark = $1 WHERE name = $2 AND changed_mark < $1",
                    changed_to,
                    doc,
                )
                if status.endswith(" 0"):
                    return False
            for endpoint in sorted(endpoints):  # one order of locks: no deadlock
                await conn.execute(_LOCK_QUEUE, endpoint, doc)
                await conn.execute(_ADD, endpoint, doc, event_id, body, now)
        return True

    async def finish(self, delivery_id: int) -> None:
        async with self._connection("write failed") as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT endpoint, doc FROM webhook_deliveries WHERE id = $1", delivery_id
            )
            if row is None:
                return
            await conn.execute(_LOCK_QUEUE, row["endpoint"], row["doc"])
            status = await conn.execute("DELETE FROM webhook_deliveries WHERE id = $1", delivery_id)
            if not status.endswith(" 0"):
                await conn.execute(_NEXT_DUE, time.time(), row["endpoint"], row["doc"])

    async def retry(self, delivery_id: int, at: float) -> None:
        async with self._connection("write failed") as conn:
            await conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, due_at = $1 WHERE id = $2",
                at,
                delivery_id,
            )

    async def due(self, now: float, limit: int) -> list[Delivery]:
        async with self._connection("cannot read the webhooks' outbox") as conn:
            rows = await conn.fetch(
                "SELECT id, endpoint, doc, event_id, body, created_at, attempts "
                "FROM webhook_deliveries WHERE due_at <= $1 ORDER BY due_at, id LIMIT $2",
                now,
                limit,
            )
        return [Delivery(*row) for row in rows]

    async def unannounced(self, quiet_since: float, limit: int) -> list[tuple[str, int]]:
        async with self._connection("cannot read the webhooks' outbox") as conn:
            rows = await conn.fetch(
                "SELECT name, update_count FROM docs WHERE update_count > changed_mark "
                "AND updated_at < $1 ORDER BY updated_at LIMIT $2",
                quiet_since,
                limit,
            )
        return [(str(name), int(offset)) for name, offset in rows]

    async def backlog(self) -> tuple[int, float | None]:
        async with self._connection("cannot read the webhooks' outbox") as conn:
            count, oldest = await conn.fetchrow(
                "SELECT count(*), min(created_at) FROM webhook_deliveries"
            )
        return int(count), oldest
