"""The storage interfaces, one per caller, and the records they return. No I/O here.

A document is an append-only log of Yjs updates plus versions: full compacted states.
Every update in a log has an offset, 1, 2, 3... in the order the store committed it, and
a version records the offset its state covers: it holds every update up to there (and
maybe some after, which a load applies again harmlessly). Saving a version prunes only
the log it covers, so a writer can only prune what it has seen: another writer's updates
that a version lacks stay in the log. Versions are history, not a cache: saving one never
prunes an older version.

    DocumentLog  the journal and the registry: load, append, read after an offset, version
    History      documents: list versions, read one, thin them
    Catalogue    documents and the registry: list documents, delete one
    Revocations  the guard (declared in collab/guard.py, beside its record)
    Outbox       the webhooks: events waiting for their endpoints, and what was announced

`DocumentStore` is the first three at once, what the document operations run on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, get_args

VersionKind = Literal["auto", "named", "pre-restore"]


@dataclass(frozen=True, slots=True)
class Version:
    """A stored version of a document (its state is fetched separately)."""

    id: int
    doc: str
    created_at: float
    kind: VersionKind
    label: str | None
    size: int
    update_count: int  # updates the document had ever received when it was taken

    # The OpenAPI schema of `as_json` (collab/openapi.py serves it).
    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["id", "created_at", "kind", "label", "size", "update_count"],
        "properties": {
            "id": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "kind": {"type": "string", "enum": list(get_args(VersionKind))},
            "label": {"type": "string", "nullable": True},
            "size": {"type": "integer", "description": "Bytes of the stored state"},
            "update_count": {"type": "integer", "description": "Updates it covers"},
        },
    }

    def as_json(self) -> dict[str, Any]:
        """How the API and the CLI show a version (of a document they name already)."""
        return {
            "id": self.id,
            "created_at": iso_time(self.created_at),
            "kind": self.kind,
            "label": self.label,
            "size": self.size,
            "update_count": self.update_count,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], doc: str) -> Version:
        """The version `as_json` gave, of `doc`."""
        kind = data["kind"]
        if kind not in get_args(VersionKind):
            raise ValueError(f"unknown version kind {kind!r}")
        label = data["label"]
        return cls(
            int(data["id"]),
            doc,
            parse_time(data["created_at"]),
            kind,
            None if label is None else str(label),
            int(data["size"]),
            int(data["update_count"]),
        )


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> float:
    """The timestamp `iso_time` wrote as `text`."""
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True, slots=True)
class StoredDoc:
    """What loading a document needs: the state of the version that covers the most of
    its log, the offset that version covers, and the log after it, in order."""

    state: bytes | None
    offset: int
    updates: list[bytes]

    @property
    def end(self) -> int:
        """The offset of the last update in the log (the log has no gaps)."""
        return self.offset + len(self.updates)

    @property
    def exists(self) -> bool:
        return self.state is not None or bool(self.updates)


@dataclass(frozen=True, slots=True)
class DocInfo:
    name: str
    created_at: float
    updated_at: float
    update_count: int
    size: int  # bytes stored: the version loading starts from and the log after it
    log_updates: int  # updates in the log, all written after that version


class DocumentLog(Protocol):
    """A document's log and the versions that compact it. Every method may raise
    `StoreError`."""

    async def load(self, doc: str) -> StoredDoc:
        """The version of `doc` that covers the most, and every update after it."""
        ...

    async def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
        """Append updates to the logs of several documents in one transaction; they are
        durable when this returns. Returns, for each document, the offset its last
        update reached (its updates take the offsets just before it, in order)."""
        ...

    async def read(self, doc: str, after: int) -> list[tuple[int, bytes]]:
        """The updates of `doc` after offset `after`, with their offsets, in order: every
        offset after `after` is covered. Where the log is pruned past `after`, the first
        entry is the state of the version that covers the most, at its offset (it holds
        every update up to there)."""
        ...

    async def save_version(
        self,
        doc: str,
        state: bytes,
        offset: int,
        *,
        kind: VersionKind = "auto",
        label: str | None = None,
    ) -> Version:
        """Store `state` as a version covering the log of `doc` up to `offset`, and
        prune that part of the log.

        The caller guarantees that `state` includes every update up to `offset`.
        """
        ...


class History(Protocol):
    """The versions of documents. Every method may raise `StoreError`."""

    async def versions(self, doc: str) -> list[Version]:
        """The versions of `doc`, oldest first."""
        ...

    async def version_state(self, doc: str, version_id: int) -> bytes:
        """The full state stored in a version of `doc`.

        Raises:
            VersionNotFound: `doc` has no such version.
        """
        ...

    async def delete_versions(self, doc: str, version_ids: Sequence[int]) -> int:
        """Delete versions of `doc` (never the one loading starts from); return how
        many were deleted."""
        ...


class Catalogue(Protocol):
    """Which documents are stored. Every method may raise `StoreError`."""

    async def docs(self) -> list[DocInfo]:
        """Every stored document."""
        ...

    async def doc_info(self, doc: str) -> DocInfo | None:
        """The stored document `doc`, if there is one."""
        ...

    async def delete_doc(self, doc: str) -> bool:
        """Delete `doc`, its log and its versions; return whether it existed."""
        ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event waiting for one endpoint. Of the deliveries of one endpoint and one
    document only the oldest is ever due: the next waits until it is done."""

    id: int  # the outbox's order
    endpoint: str
    doc: str
    event_id: str  # the webhook-id: one per event, the same for every endpoint and try
    body: str  # the JSON that is signed and sent, exactly
    created_at: float
    attempts: int  # tries that failed so far


class Outbox(Protocol):
    """The webhooks' durable outbox (collab/webhooks.py writes it, collab/delivery.py
    sends from it). Every method may raise `StoreError`."""

    async def add_event(
        self,
        endpoints: Sequence[str],
        doc: str,
        event_id: str,
        body: str,
        *,
        changed_to: int | None = None,
    ) -> bool:
        """Store an event for each endpoint, durable when this returns. With
        `changed_to` (document.changed) only if the document exists and its changed
        mark is below `changed_to`, which becomes its mark in the same transaction.
        Returns whether the event was stored."""
        ...

    async def due(self, now: float, limit: int) -> list[Delivery]:
        """At most `limit` deliveries due at `now`, the longest due first."""
        ...

    async def finish(self, delivery_id: int) -> None:
        """Remove a delivery (delivered or given up); the next of its endpoint and
        document becomes due. Nothing if it is gone already."""
        ...

    async def retry(self, delivery_id: int, at: float) -> None:
        """Count a failed try of a delivery and make it due again at `at`."""
        ...

    async def unannounced(self, quiet_since: float, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` documents (name, last offset) changed past their changed mark
        and not since `quiet_since`: their document.changed is yet to be recorded."""
        ...

    async def backlog(self) -> tuple[int, float | None]:
        """Deliveries waiting, and when the oldest of them was created."""
        ...


class DocumentStore(DocumentLog, History, Catalogue, Protocol):
    """Everything the document operations (collab/documents.py) need of a store."""


def past(
    after: int, rows: list[tuple[int, bytes]], version: tuple[int, bytes] | None
) -> list[tuple[int, bytes]]:
    """What `DocumentLog.read(doc, after)` answers, from the log's rows after `after` and,
    if they do not start right after it (pruned), the version covering the most."""
    if (rows and rows[0][0] == after + 1) or version is None or version[0] <= after:
        return rows
    covers = version[0]
    return [version, *(row for row in rows if row[0] > covers)]


async def open_store(db: Path | str, *, sync: str = "normal", shared: bool = False) -> Any:
    """The store of `db`: a SQLite file (a Path), or a PostgreSQL URL (`sync` and
    `shared`, other processes writing the same file, are SQLite's). Returns a
    SQLiteStore or a PostgresStore, which implement every interface above and
    `Revocations`.

    Raises:
        StoreError: the database cannot be opened.
    """
    from collab.errors import StoreError

    if isinstance(db, Path):
        from collab.store.sqlite import SQLiteStore

        return await SQLiteStore.open(db, sync=sync, shared=shared)
    try:
        from collab.store.postgres import PostgresStore
    except ImportError as exc:
        raise StoreError(
            f"a PostgreSQL database needs the cluster extra (pip install 'collab[cluster]'): {exc}"
        ) from exc
    return await PostgresStore.open(str(db))
