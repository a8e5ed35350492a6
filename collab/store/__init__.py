"""The storage interface rooms depend on, and the records it returns. No I/O here.

A document is an append-only log of Yjs updates plus snapshots: full compacted states,
each covering the log written before it. A snapshot is also a version users can browse
later, so snapshots are history, not a cache: saving one prunes the log it covers, never
an older snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol, get_args

from collab.auth import Revocation

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
    update_count: int

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
    """What loading a document needs: its latest snapshot's state and the log after it."""

    state: bytes | None
    updates: list[bytes]
    update_count: int

    @property
    def exists(self) -> bool:
        return self.state is not None or bool(self.updates)


@dataclass(frozen=True, slots=True)
class DocInfo:
    name: str
    created_at: float
    updated_at: float
    update_count: int
    size: int  # bytes stored: the latest snapshot and the log after it
    log_updates: int  # updates in the log, all written since the latest snapshot


class Store(Protocol):
    """Durable document storage. Every method may raise `StoreError`."""

    async def load(self, doc: str) -> StoredDoc:
        """The latest snapshot of `doc` and every update appended after it."""
        ...

    async def append(self, doc: str, updates: Sequence[bytes]) -> None:
        """Append updates to the log of `doc`; they are durable when this returns."""
        ...

    async def save_version(
        self,
        doc: str,
        state: bytes,
        *,
        kind: VersionKind = "auto",
        label: str | None = None,
    ) -> Version:
        """Store `state` as a snapshot covering every update appended to `doc` so far.

        The caller guarantees that `state` includes all of those updates.
        """
        ...

    async def versions(self, doc: str) -> list[Version]:
        """The versions of `doc`, oldest first."""
        ...

    async def version_state(self, doc: str, snapshot_id: int) -> bytes:
        """The full state stored in a version of `doc`.

        Raises:
            VersionNotFound: `doc` has no such version.
        """
        ...

    async def delete_versions(self, doc: str, snapshot_ids: Sequence[int]) -> int:
        """Delete versions of `doc` (never its latest, which loading starts from); return
        how many were deleted."""
        ...

    async def delete_doc(self, doc: str) -> bool:
        """Delete `doc`, its log and its versions; return whether it existed."""
        ...

    async def add_revocation(self, revocation: Revocation) -> None:
        """Keep a revocation (it lasts across restarts)."""
        ...

    async def revocations(self) -> list[Revocation]:
        """Every revocation kept, oldest first."""
        ...

    async def docs(self) -> list[DocInfo]:
        """Every stored document."""
        ...

    async def doc_info(self, doc: str) -> DocInfo | None:
        """The stored document `doc`, if there is one."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release the database."""
        ...
