"""The typed keys under which the aiohttp application holds its parts, and the type of
the store it is given: every storage interface at once."""

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from collab.config import Settings
from collab.documents import Documents
from collab.frames import FrameCache
from collab.guard import Guard, Revocations
from collab.journal import Journal
from collab.lockfile import DatabaseLock
from collab.rooms import Rooms
from collab.store import Catalogue, DocumentLog, History


class Store(DocumentLog, History, Catalogue, Revocations, Protocol):
    """A store for a whole server (SQLiteStore is one)."""

    async def ping(self) -> None:
        """Raise StoreError if the database does not answer."""
        ...

    async def close(self) -> None:
        """Finish pending writes and release the database."""
        ...


SETTINGS = web.AppKey("settings", Settings)
LOCK = web.AppKey("lock", DatabaseLock)
STORE = web.AppKey("store", Store)
JOURNAL = web.AppKey("journal", Journal)
ROOMS = web.AppKey("rooms", Rooms)
DOCUMENTS = web.AppKey("documents", Documents)
GUARD = web.AppKey("guard", Guard)
FRAMES = web.AppKey("frames", FrameCache)
# What /healthz asks, by name: each raises StoreError when its service does not answer.
CHECKS = web.AppKey("checks", dict[str, Callable[[], Awaitable[None]]])
