"""Documents: list, export, import, version, restore, delete and compact documents, over
the rooms and the store. The REST API calls it, and so does the CLI when no server runs,
so both do exactly the same. Every change goes through a room, as a client's edit would:
applied, committed before anyone sees it, broadcast to whoever is connected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pycrdt

from collab.config import Settings
from collab.edits import edit
from collab.errors import (
    BadRequest,
    Conflict,
    DocNotFound,
    QuotaExceeded,
    StoreError,
    UpdateRejected,
)
from collab.formats import (
    DEFAULT_FIELD,
    Exported,
    Format,
    RichFormat,
    check_field,
    check_format,
    check_rich_format,
    export,
    target_state,
)
from collab.hooks import HookRunner, Hooks, VersionEvent
from collab.journal import Journal
from collab.logs import redact
from collab.metrics import Metrics
from collab.protocol import EMPTY_UPDATE
from collab.room import Room
from collab.rooms import Rooms
from collab.store import Catalogue, DocInfo, DocumentStore, History, Version, iso_time, parse_time
from collab.store.retention import expired, parse_policy
from collab.yjs.restore import RootTypeConflict, restore_updates
from collab.yjs.roots import parse_hints
from collab.yjs.update import UpdateFormatError

if TYPE_CHECKING:  # redis is the cluster extra's: imported only when a bus is made
    from collab.bus import Bus
    from collab.webhooks import Webhooks

log = logging.getLogger(__name__)

MAX_LABEL_LENGTH = 200


@dataclass(frozen=True, slots=True)
class DocSummary:
    """A stored document as the API lists it (and the CLI, over the API or not)."""

    name: str
    created_at: float
    updated_at: float
    size: int  # bytes stored now
    update_count: int  # updates ever stored
    clients: int  # connections open now

    # The OpenAPI schema of `as_json` (collab/openapi.py serves it).
    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["name", "created_at", "updated_at", "size", "update_count", "clients"],
        "properties": {
            "name": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "size": {"type": "integer", "description": "Bytes stored for the document now"},
            "update_count": {"type": "integer", "description": "Updates ever stored"},
            "clients": {"type": "integer", "description": "Connections open right now"},
        },
    }

    @classmethod
    def of(cls, info: DocInfo, clients: int) -> DocSummary:
        return cls(
            info.name, info.created_at, info.updated_at, info.size, info.update_count, clients
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created_at": iso_time(self.created_at),
            "updated_at": iso_time(self.updated_at),
            "size": self.size,
            "update_count": self.update_count,
            "clients": self.clients,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DocSummary:
        return cls(
            str(data["name"]),
            parse_time(data["created_at"]),
            parse_time(data["updated_at"]),
            int(data["size"]),
            int(data["update_count"]),
            int(data["clients"]),
        )


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restore did: the version it restored, and the one it kept of the state
    before (restoring that undoes the restore)."""

    restored: Version
    pre_restore: Version

    def as_json(self) -> dict[str, Any]:
        return {"restored": self.restored.as_json(), "pre_restore": self.pre_restore.as_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], doc: str) -> Restored:
        return cls(
            Version.from_json(data["restored"], doc), Version.from_json(data["pre_restore"], doc)
        )


def _plan_restore(
    live: bytes, target: bytes, hints: dict[str, Any], roots: tuple[str, ...] | None
) -> tuple[list[bytes], int]:
    """A restore's updates, and the size of the state they make: a restore writes the
    version anew, so the quota is a matter of that state, not of the live state plus the
    copy (which would refuse any version over half the quota). CPU-bound: run in a thread.
    """
    updates = restore_updates(live, target, hints, roots)
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(live)
    for update in updates:
        doc.apply_update(update)
    return updates, len(doc.get_update())


def check_label(label: Any) -> str:
    """A version label: 1 to 200 characters, not all blank, no control characters."""
    if (
        not isinstance(label, str)
        or not label.strip()
        or len(label) > MAX_LABEL_LENGTH
        or any(unicodedata.category(char) == "Cc" for char in label)
    ):
        raise BadRequest(
            f"a label is 1 to {MAX_LABEL_LENGTH} characters, not all blank, "
            "without control characters"
        )
    return label.strip()


async def open_bus(settings: Settings, metrics: Metrics | None = None) -> Bus | None:
    """The bus of `settings.redis` (None without): the cluster this process is a node
    of, a server's or a command's.

    Raises:
        StoreError: Redis does not answer, or the cluster extra is not installed.
    """
    if not settings.redis:
        return None
    try:
        from collab.bus import Bus, key_prefix  # the cluster extra's redis
    except ImportError as exc:
        raise StoreError(
            f"--redis needs the cluster extra (pip install 'collab[cluster]'): {exc}"
        ) from exc
    node_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
    # The nodes of one cluster name one database, a file maybe by different paths.
    db = settings.db.resolve() if isinstance(settings.db, Path) else settings.db
    bus = await Bus.open(settings.redis, node_id, key_prefix(str(db)), metrics)
    log.info("cluster node %s, bus %s", node_id, redact(settings.redis))
    return bus


@asynccontextmanager
async def open_documents(
    store: DocumentStore,
    settings: Settings,
    bus: Bus | None = None,
    metrics: Metrics | None = None,
    webhooks: Webhooks | None = None,
) -> AsyncIterator[Documents]:
    """The documents of `store`, for a server or a command: a journal, the rooms over
    it, and the operations; with `bus`, they hear of and announce other servers'
    updates; `settings.hooks` hear of what happens; with `webhooks`, their events are
    recorded for the endpoints. On exit every room is saved and unloaded, the hooks get
    their last calls, then the journal stops (the store, the bus and the webhooks stay
    open: their opener closes them)."""
    metrics = metrics or Metrics()
    subscribers: list[Hooks] = [settings.hooks] if settings.hooks else []
    if webhooks is not None:
        subscribers.append(webhooks.hooks())
    hooks = HookRunner(
        subscribers,
        timeout=settings.hook_timeout,
        debounce=settings.change_debounce,
        metrics=metrics,
    )
    journal = Journal(store, settings, bus, metrics, hooks)
    rooms = Rooms(journal, store, settings, bus)
    try:
        documents = Documents(rooms, store, store, settings, webhooks)
        await hooks.start(documents)
        yield documents
    finally:
        try:
            await rooms.close()
            await hooks.close(settings.hook_timeout)
        finally:
            await journal.close()


class Documents:
    """Operations on whole documents, for the API and the CLI."""

    def __init__(
        self,
        rooms: Rooms,
        history: History,
        catalogue: Catalogue,
        settings: Settings,
        webhooks: Webhooks | None = None,
    ) -> None:
        self.rooms = rooms
        # Each operation records its event before it answers (after it took effect: a
        # crash in between loses the event, never announces what did not happen).
        self.webhooks = webhooks
        self._rooms = rooms
        self._history = history
        self._catalogue = catalogue
        self._hints = parse_hints(settings.root_types)
        self._tiers = parse_policy(settings.retention)
        self._max_body = settings.max_message_bytes

    @asynccontextmanager
    async def _room(self, name: str, *, must_exist: bool = True) -> AsyncIterator[Room]:
        room = await self._rooms.acquire(name)
        try:
            if must_exist and room.is_empty:
                raise DocNotFound(f"no document named {name!r}")
            yield room
        finally:
            self._rooms.release(name)

    async def summaries(self) -> list[DocSummary]:
        summaries = []
        for info in await self._catalogue.docs():
            room = self._rooms.get(info.name)
            summaries.append(DocSummary.of(info, len(room.peers) if room else 0))
        return summaries

    async def state(self, name: str, version: int | None = None) -> bytes:
        """The full state of `name` now (everything committed), or at a version.

        Raises:
            DocNotFound, VersionNotFound
        """
        if version is not None:
            await self._ensure_exists(name)
            state: bytes = await self._history.version_state(name, version)
            return state
        async with self._room(name) as room:
            await room.ledger.flush()
            return room.document.state()

    async def export(
        self, name: str, fmt: Format, version: int | None = None, field: str = DEFAULT_FIELD
    ) -> Exported:
        """`name`'s content (now, or at a version) as `fmt`; the rich formats show the
        root `field`."""
        fmt, field = check_format(fmt), check_field(field)
        state = await self.state(name, version)
        try:
            return await asyncio.to_thread(export, state, fmt, self._hints, field)
        except UpdateFormatError as exc:
            raise Conflict(f"cannot read the state of {name!r}: {exc}") from exc

    def send_stateless(self, name: str, payload: str) -> int:
        """Send a stateless message to every Hocuspocus client of `name` (their
        provider's `stateless` event), on every server of a cluster; returns how many of
        this server's it went to."""
        return self._rooms.send_stateless(name, payload)

    async def import_update(self, name: str, update: bytes) -> None:
        """Merge a binary Yjs update into `name` (creating it), as a client's edit.

        Raises:
            BadRequest: `update` is not a Yjs update; nothing changed.
        """
        if not update or update == EMPTY_UPDATE:
            raise BadRequest("the body is empty: send a binary Yjs update")
        async with self._room(name, must_exist=False) as room:
            try:
                room.apply_update(update)
            except UpdateRejected as exc:
                raise BadRequest(f"not a Yjs update: {exc}") from exc
            await room.ledger.flush()

    async def replace(
        self, name: str, fmt: RichFormat, body: bytes, field: str = DEFAULT_FIELD
    ) -> bool:
        """Make the root `field` of `name` hold the content `body` gives, as edits every
        client receives (a restore of that root: the other roots keep theirs, and no
        editor's undo takes the new content away). Creates the document; returns
        whether it did.

        Raises:
            BadRequest: the body is not content of `fmt` the schema holds; nothing changed.
            QuotaExceeded: the body or the document it makes is too large.
            Conflict: the root holds something other than rich text.
        """
        fmt, field = check_rich_format(fmt), check_field(field)
        if len(body) > self._max_body:
            raise QuotaExceeded(f"the content is over {self._max_body} bytes")
        target = await asyncio.to_thread(target_state, fmt, body, field)
        created = await self._catalogue.doc_info(name) is None
        async with self._room(name, must_exist=False) as room:
            created = created and room.is_empty
            await room.ledger.flush()
            await self._apply_target(room, target, "replace", (field,))
        log.info("%s: replaced %r with %s content of %d bytes", name, field, fmt, len(body))
        return created

    async def _apply_target(
        self, room: Room, target: bytes, origin: str, roots: tuple[str, ...] | None = None
    ) -> None:
        """Make `room`'s document (its `roots`, or all) equal to the state `target`, as
        edits hooks hear of with `origin`."""
        try:
            updates, size = await asyncio.to_thread(
                _plan_restore, room.document.state(), target, self._hints, roots
            )
        except (RootTypeConflict, UpdateFormatError) as exc:
            raise Conflict(str(exc)) from exc
        room.apply_update(*updates, size_after=size, origin=origin)
        await room.ledger.flush()

    @asynccontextmanager
    async def edit(self, name: str, origin: str = "app") -> AsyncIterator[pycrdt.Doc[Any]]:
        """Change `name` (creating it) in-process, as a pycrdt `Doc`: when the block ends
        what changed is committed and relayed to every client like any edit, and hooks
        hear of it with `origin`. Raising in the block changes nothing.

        >>> async with documents.edit("notes") as doc:  # doctest: +SKIP
        ...     doc.get("title", type=pycrdt.Text).insert(0, "Minutes")

        Raises:
            QuotaExceeded: the change would pass the document's quota; nothing changed.
        """
        async with self._room(name, must_exist=False) as room, edit(room, origin) as doc:
            yield doc

    async def delete(self, name: str) -> None:
        if not await self._rooms.delete(name):
            raise DocNotFound(f"no document named {name!r}")
        if self.webhooks is not None:
            await self.webhooks.emit("document.deleted", name, {})

    async def versions(self, name: str) -> list[Version]:
        """The versions of `name`, newest first."""
        await self._ensure_exists(name)
        return sorted(await self._history.versions(name), key=lambda s: s.id, reverse=True)

    async def take_version(self, name: str, label: str) -> Version:
        label = check_label(label)
        async with self._room(name) as room:
            await room.ledger.flush()
            version = await room.ledger.save_version("named", label)
        if self.webhooks is not None:
            await self.webhooks.emit("version.created", name, {"version": version.as_json()})
        return version

    async def restore(self, name: str, version: int) -> Restored:
        """Make `name` equal to `version` again, as edits every client receives; the
        state before is kept as a pre-restore version, so restoring that undoes this."""
        target = await self.state(name, version)
        async with self._room(name) as room:
            await room.ledger.flush()
            before = await room.ledger.save_version(
                "pre-restore", f"before restoring version {version}"
            )
            await self._apply_target(room, target, "restore")
        restored = next(s for s in await self._history.versions(name) if s.id == version)
        if hooks := self._rooms.journal.hooks:
            hooks.call("on_restore", VersionEvent(name, restored, before))
        log.info("%s: restored version %d (pre-restore version %d)", name, version, before.id)
        done = Restored(restored, before)
        if self.webhooks is not None:
            # The pre-restore version is in this event, not in a version.created of its own.
            data = {"version": restored.as_json(), "pre_restore": before.as_json()}
            await self.webhooks.emit("version.restored", name, data)
        return done

    async def thin(self) -> int:
        """Delete the versions the retention policy no longer keeps; return how many."""
        deleted = 0
        for info in await self._catalogue.docs():
            versions = await self._history.versions(info.name)
            deleted += await self._history.delete_versions(
                info.name, expired(versions, self._tiers, time.time())
            )
        return deleted

    async def compact(self, progress: Callable[[int, int, str], None] | None = None) -> int:
        """Version every document that has a log (so the log is pruned), then thin
        versions by the retention policy. Returns the versions deleted."""
        docs = await self._catalogue.docs()
        for index, info in enumerate(docs, 1):
            if info.log_updates:
                async with self._room(info.name, must_exist=False) as room:
                    await room.ledger.save_version()
            if progress:
                progress(index, len(docs), info.name)
        return await self.thin()

    async def _ensure_exists(self, name: str) -> None:
        room = self._rooms.get(name)
        if (room is None or room.is_empty) and await self._catalogue.doc_info(name) is None:
            raise DocNotFound(f"no document named {name!r}")
