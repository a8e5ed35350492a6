"""The typed keys under which the aiohttp application holds its parts, and the type of
the store it is given: every storage interface at once."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from collab.config import Settings
from collab.documents import Documents
from collab.frames import FrameCache
from collab.guard import Guard, Revocations
from collab.journal import Journal
from collab.lockfile import DatabaseLock
from collab.metrics import Metrics
from collab.rooms import Rooms
from collab.store import Catalogue, DocumentLog, History, Outbox


class Store(DocumentLog, History, Catalogue, Revocations, Outbox, Protocol):
    """A store for a whole server (SQLiteStore is one)."""

    async def ping(self) -> None:
        """Raise StoreError if the database does not answer."""
        ...

    async def writable(self) -> None:
        """Raise StoreError if the database could not take a write now."""
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
# What /readyz asks, the same way: whether the server can take edits now.
READY = web.AppKey("ready", dict[str, Callable[[], Awaitable[None]]])
# Sockets open outside any room (a Hocuspocus socket, one waiting for its first frame or
# refused): a shutdown closes them itself, as rooms close their peers.
LOOSE = web.AppKey("loose", set[web.WebSocketResponse])
STOPPING = web.AppKey("stopping", asyncio.Event)  # set once the server starts shutting down
METRICS = web.AppKey("metrics", Metrics)
REGISTRY = web.AppKey("registry", CollectorRegistry)  # METRICS and the process's
# A request's key: the path the host app mounted collab under ("" at the root), as the
# client sees it; the editor's pages prefix their links with it.
MOUNT = web.RequestKey("mount", str)
