"""The SQLite schema of collab: its ordered migrations and the function that applies
them. A database written by any earlier collab is brought along when it is opened."""

from __future__ import annotations

import logging
import sqlite3

from collab.errors import StoreError

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
    """
    -- Offsets: every update gets its place in its document's log (1, 2, 3...), and a
    -- version records the offset it covers, so pruning deletes only what that version
    -- holds. Before, a snapshot "covered every update so far", by the global id: an
    -- update by another writer missing from the state would have been pruned.
    ALTER TABLE updates ADD COLUMN seq INTEGER;
    UPDATE updates SET seq = ranked.seq FROM (
        SELECT u.id, d.update_count + 1
               - row_number() OVER (PARTITION BY u.doc_id ORDER BY u.id DESC) AS seq
        FROM updates u JOIN docs d ON d.id = u.doc_id
    ) AS ranked WHERE ranked.id = updates.id;
    DROP INDEX updates_by_doc;
    CREATE UNIQUE INDEX updates_by_offset ON updates(doc_id, seq);
    -- An update takes the offset after its document's last: a writer that computed
    -- offsets from a stale view fails instead of leaving a gap or a repeat.
    CREATE TRIGGER updates_in_order BEFORE INSERT ON updates
    WHEN NEW.seq IS NOT (SELECT update_count + 1 FROM docs WHERE id = NEW.doc_id)
    BEGIN
        SELECT RAISE(ABORT, 'collab: an update out of its log order');
    END;
    -- One word for a stored version, as in the API. Each old snapshot covered every
    -- update its document had then: its update_count.
    ALTER TABLE snapshots RENAME TO versions;
    ALTER TABLE versions ADD COLUMN covers INTEGER NOT NULL DEFAULT 0;
    UPDATE versions SET covers = update_count;
    ALTER TABLE versions DROP COLUMN log_id;
    DROP INDEX snapshots_by_doc;
    CREATE INDEX versions_by_doc ON versions(doc_id, covers, id);
    """,
    """
    -- The webhooks' outbox (collab/webhooks.py): a row per event and endpoint, deleted once
    -- delivered or given up. Of an endpoint's rows for one document only the oldest has a
    -- due_at (the head); the next gets one when it is done, so order per document holds
    -- and the sender reads only heads, however long a dead endpoint's queue.
    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        doc TEXT NOT NULL,
        event_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at REAL
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX webhook_deliveries_queue ON webhook_deliveries(endpoint, doc, id);
    -- The offset up to which document.changed was recorded; documents stored before
    -- webhooks existed count as announced.
    ALTER TABLE docs ADD COLUMN changed_mark INTEGER NOT NULL DEFAULT 0;
    UPDATE docs SET changed_mark = update_count;
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; return that version."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    version = row[0] if row else 0
    if version > len(MIGRATIONS):
        raise StoreError(f"database schema {version} is newer than this collab knows")
    for number in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
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
