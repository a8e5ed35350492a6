"""How a command reaches documents: straight to the database when no server runs, or
through the running server's REST API when one does, so live editors see the change.

`connect` decides by the database's lock (see lockfile.py): if it can take the lock, no
server runs and it works on the database while holding the lock (a server cannot start
meanwhile); if a server holds it, the lock file says where that server listens. Either
way a command gets the same records and errors: the local way is `Documents` itself, the
remote one rebuilds them from the API's JSON (`from_json`, `error_from_json`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp

from collab.config import Settings, describe_db
from collab.documents import DocSummary, Restored, open_bus, open_documents
from collab.errors import CollabError, DatabaseInUse, StoreError, Unauthorized, error_from_json
from collab.formats import (
    CONTENT_TYPES,
    DEFAULT_FIELD,
    Exported,
    Format,
    RichFormat,
    check_rich_format,
)
from collab.lockfile import DatabaseLock, holder
from collab.store import Version, open_store
from collab.webhooks import Webhooks

Progress = Callable[[int, int, str], None]
T = TypeVar("T")


class DocumentAccess(Protocol):
    """The operations the CLI offers, as `Documents` does them (and so the API)."""

    async def summaries(self) -> list[DocSummary]: ...

    async def export(
        self, name: str, fmt: Format, version: int | None = None, field: str = DEFAULT_FIELD
    ) -> Exported: ...

    async def import_update(self, name: str, update: bytes) -> None: ...

    async def replace(
        self, name: str, fmt: RichFormat, body: bytes, field: str = DEFAULT_FIELD
    ) -> bool: ...

    async def versions(self, name: str) -> list[Version]: ...

    async def take_version(self, name: str, label: str) -> Version: ...

    async def restore(self, name: str, version: int) -> Restored: ...

    async def compact(self, progress: Progress | None = None) -> int: ...


@dataclass(frozen=True, slots=True)
class Reach:
    """The documents a command works on, and where they are (for its notes)."""

    documents: DocumentAccess
    where: str  # "database PATH" or "server URL"


class RemoteAccess:
    """`Documents` through a running server's REST API: the same records, the same errors."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")

    def _doc(self, name: str, *rest: str) -> str:
        return "/".join([f"{self._base}/api/docs/{quote(name, safe='')}", *rest])

    async def _call(self, method: str, url: str, **kwargs: Any) -> Exported:
        try:
            async with self._session.request(method, url, **kwargs) as response:
                body = await response.read()
                if response.status >= 400:
                    raise _error(response.status, body)
                return Exported(body, response.headers.get("Content-Type", ""))
        except aiohttp.ClientError as exc:
            raise DatabaseInUse(f"the server at {self._base} does not answer: {exc}") from exc

    async def _json(self, read: Callable[[Any], T], method: str, url: str, **kwargs: Any) -> T:
        answer = await self._call(method, url, **kwargs)
        try:
            return read(json.loads(answer.body))
        except (ValueError, KeyError, TypeError) as exc:
            raise CollabError(f"the server at {self._base} answered {url} with {exc!r}") from exc

    async def summaries(self) -> list[DocSummary]:
        return await self._json(
            lambda data: [DocSummary.from_json(doc) for doc in data["docs"]],
            "GET",
            f"{self._base}/api/docs",
        )

    async def export(
        self, name: str, fmt: Format, version: int | None = None, field: str = DEFAULT_FIELD
    ) -> Exported:
        url = self._doc(name) if version is None else self._doc(name, "versions", str(version))
        return await self._call("GET", url, params={"format": fmt, "field": field})

    async def import_update(self, name: str, update: bytes) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        await self._call("POST", self._doc(name, "updates"), data=update, headers=headers)

    async def replace(
        self, name: str, fmt: RichFormat, body: bytes, field: str = DEFAULT_FIELD
    ) -> bool:
        fmt = check_rich_format(fmt)
        return await self._json(
            lambda data: bool(data["created"]),
            "PUT",
            self._doc(name),
            params={"field": field},
            data=body,
            headers={"Content-Type": CONTENT_TYPES[fmt]},
        )

    async def versions(self, name: str) -> list[Version]:
        return await self._json(
            lambda data: [Version.from_json(version, name) for version in data["versions"]],
            "GET",
            self._doc(name, "versions"),
        )

    async def take_version(self, name: str, label: str) -> Version:
        return await self._json(
            lambda data: Version.from_json(data, name),
            "POST",
            self._doc(name, "versions"),
            json={"label": label},
        )

    async def restore(self, name: str, version: int) -> Restored:
        return await self._json(
            lambda data: Restored.from_json(data, name),
            "POST",
            self._doc(name, "versions", str(version), "restore"),
        )

    async def compact(self, progress: Progress | None = None) -> int:
        return await self._json(
            lambda data: int(data["deleted_versions"]), "POST", f"{self._base}/api/compact"
        )


def _error(status: int, body: bytes) -> CollabError:
    """The error the server answered with, of the class it raised (by its code)."""
    try:
        decoded: Any = json.loads(body)
    except ValueError:
        decoded = body.decode(errors="replace")[:200]
    error = error_from_json(status, decoded)
    if isinstance(error, Unauthorized):
        return type(error)(f"{error} (give --token, or --auth-secret to mint one)")
    return error


@asynccontextmanager
async def connect(
    settings: Settings, *, server: str | None = None, create: bool = False, token: str = ""
) -> AsyncIterator[Reach]:
    """Reach the documents of `settings.db`: through `server` if given, else through the
    server holding the database, else straight to the database.

    Args:
        create: create the database if it does not exist (else that is an error).
        token: sent to a server as a Bearer token (the database itself needs none).

    Raises:
        DatabaseInUse: another command holds the database, or its server does not answer.
        StoreError: there is no database at `settings.db` (and `create` is false).
    """
    if server is None and not isinstance(settings.db, Path):
        # PostgreSQL: no lock (nodes share it); straight to the database. A server's room
        # finds what a command wrote as a gap in the log's offsets and reads it.
        async with _local(settings, create) as local:
            yield local
        return
    if server is None:
        assert isinstance(settings.db, Path)
        try:
            lock = DatabaseLock.acquire(settings.db, role="cli")
        except DatabaseInUse as busy:
            server = await _server_of(settings, busy)
        else:
            try:
                async with _local(settings, create) as local:
                    yield local
            finally:
                lock.release()
            return
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(headers=headers) as session:
        yield Reach(RemoteAccess(session, server), f"server {server.rstrip('/')}")


async def _server_of(settings: Settings, busy: DatabaseInUse) -> str:
    # A server that has just started holds the lock a moment before it says its address.
    assert isinstance(settings.db, Path)
    for _ in range(20):
        url = (holder(settings.db) or {}).get("url")
        if isinstance(url, str):
            return url
        await asyncio.sleep(0.1)
    raise busy


@asynccontextmanager
async def _local(settings: Settings, create: bool) -> AsyncIterator[Reach]:
    if isinstance(settings.db, Path) and not create and not settings.db.exists():
        raise StoreError(f"there is no database at {settings.db}")
    store = await open_store(settings.db, sync=settings.db_sync)
    try:
        # With --redis the command is a node of the cluster for as long as it runs: its
        # changes reach the servers' clients at once, as a server's would.
        bus = await open_bus(settings)
        try:
            # No connection will come: save and unload rooms as soon as a command is done.
            quick = replace(settings, room_grace_seconds=0)
            # Its events go to the outbox (with COLLAB_WEBHOOK set, as the server's is);
            # a server sends them.
            webhooks = Webhooks(store, settings) if settings.webhook else None
            async with open_documents(store, quick, bus, webhooks=webhooks) as documents:
                yield Reach(documents, f"database {describe_db(settings.db)}")
        finally:
            if bus is not None:
                await bus.close()
    finally:
        await store.close()
