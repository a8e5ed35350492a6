"""How a command reaches documents: straight to the database when no server runs, or
through the running server's REST API when one does, so live editors see the change.

`connect` decides by the database's lock (see lockfile.py): if it can take the lock, no
server runs and it works on the database while holding the lock (a server cannot start
meanwhile); if a server holds it, the lock file says where that server listens.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from collab.config import Settings
from collab.documents import Documents, Format
from collab.errors import CollabError, DatabaseInUse, StoreError, Unauthorized, error_from_json
from collab.lockfile import DatabaseLock, holder
from collab.rooms import Rooms
from collab.store.sqlite import SQLiteStore

Progress = Callable[[int, int, str], None]


class DocumentAccess(Protocol):
    """The operations the CLI offers, answered in the API's JSON shapes."""

    where: str

    async def docs(self) -> list[dict[str, Any]]: ...

    async def export(self, name: str, fmt: Format, version: int | None = None) -> bytes: ...

    async def import_update(self, name: str, update: bytes) -> None: ...

    async def versions(self, name: str) -> list[dict[str, Any]]: ...

    async def take_version(self, name: str, label: str) -> dict[str, Any]: ...

    async def restore(self, name: str, version: int) -> dict[str, Any]: ...

    async def compact(self, progress: Progress | None = None) -> int: ...


class LocalAccess:
    """Straight to the database, through the same `Documents` a server uses."""

    def __init__(self, documents: Documents, where: str) -> None:
        self._documents = documents
        self.where = where

    async def docs(self) -> list[dict[str, Any]]:
        return [summary.as_json() for summary in await self._documents.summaries()]

    async def export(self, name: str, fmt: Format, version: int | None = None) -> bytes:
        return (await self._documents.export(name, fmt, version)).body

    async def import_update(self, name: str, update: bytes) -> None:
        await self._documents.import_update(name, update)

    async def versions(self, name: str) -> list[dict[str, Any]]:
        return [version.as_json() for version in await self._documents.versions(name)]

    async def take_version(self, name: str, label: str) -> dict[str, Any]:
        return (await self._documents.take_version(name, label)).as_json()

    async def restore(self, name: str, version: int) -> dict[str, Any]:
        done = await self._documents.restore(name, version)
        return {"restored": done.restored.as_json(), "pre_restore": done.pre_restore.as_json()}

    async def compact(self, progress: Progress | None = None) -> int:
        return await self._documents.compact(progress)


class RemoteAccess:
    """Through a running server's REST API."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self.where = f"server {self._base}"

    def _doc(self, name: str, *rest: str) -> str:
        return "/".join([f"{self._base}/api/docs/{quote(name, safe='')}", *rest])

    async def _call(self, method: str, url: str, **kwargs: Any) -> bytes:
        try:
            async with self._session.request(method, url, **kwargs) as response:
                body = await response.read()
                if response.status >= 400:
                    raise _error(response.status, body)
                return body
        except aiohttp.ClientError as exc:
            raise DatabaseInUse(f"the server at {self._base} does not answer: {exc}") from exc

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return json.loads(await self._call(method, url, **kwargs))

    async def docs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self._json("GET", f"{self._base}/api/docs"))["docs"]
        return found

    async def export(self, name: str, fmt: Format, version: int | None = None) -> bytes:
        url = self._doc(name) if version is None else self._doc(name, "versions", str(version))
        return await self._call("GET", url, params={"format": fmt})

    async def import_update(self, name: str, update: bytes) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        await self._call("POST", self._doc(name, "updates"), data=update, headers=headers)

    async def versions(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self._json("GET", self._doc(name, "versions")))[
            "versions"
        ]
        return found

    async def take_version(self, name: str, label: str) -> dict[str, Any]:
        made: dict[str, Any] = await self._json(
            "POST", self._doc(name, "versions"), json={"label": label}
        )
        return made

    async def restore(self, name: str, version: int) -> dict[str, Any]:
        done: dict[str, Any] = await self._json(
            "POST", self._doc(name, "versions", str(version), "restore")
        )
        return done

    async def compact(self, progress: Progress | None = None) -> int:
        deleted: int = (await self._json("POST", f"{self._base}/api/compact"))["deleted_versions"]
        return deleted


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
) -> AsyncIterator[DocumentAccess]:
    """Reach the documents of `settings.db`: through `server` if given, else through the
    server holding the database, else straight to the database.

    Args:
        create: create the database if it does not exist (else that is an error).
        token: sent to a server as a Bearer token (the database itself needs none).

    Raises:
        DatabaseInUse: another command holds the database, or its server does not answer.
        StoreError: there is no database at `settings.db` (and `create` is false).
    """
    if server is None:
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
        yield RemoteAccess(session, server)


async def _server_of(settings: Settings, busy: DatabaseInUse) -> str:
    # A server that has just started holds the lock a moment before it says its address.
    for _ in range(20):
        url = (holder(settings.db) or {}).get("url")
        if isinstance(url, str):
            return url
        await asyncio.sleep(0.1)
    raise busy


@asynccontextmanager
async def _local(settings: Settings, create: bool) -> AsyncIterator[LocalAccess]:
    if not create and not settings.db.exists():
        raise StoreError(f"there is no database at {settings.db}")
    store = await SQLiteStore.open(settings.db, sync=settings.db_sync)
    try:
        # No connection will come: save and unload rooms as soon as a command is done.
        rooms = Rooms(store, replace(settings, room_grace_seconds=0))
        try:
            yield LocalAccess(Documents(rooms, store, settings), f"database {settings.db}")
        finally:
            await rooms.close()
    finally:
        await store.close()
