"""The typed keys under which the aiohttp application holds its parts."""

from aiohttp import web

from collab.config import Settings
from collab.documents import Documents
from collab.frames import FrameCache
from collab.guard import Guard
from collab.lockfile import DatabaseLock
from collab.rooms import Rooms
from collab.store import Store

SETTINGS = web.AppKey("settings", Settings)
LOCK = web.AppKey("lock", DatabaseLock)
STORE = web.AppKey("store", Store)
ROOMS = web.AppKey("rooms", Rooms)
DOCUMENTS = web.AppKey("documents", Documents)
GUARD = web.AppKey("guard", Guard)
FRAMES = web.AppKey("frames", FrameCache)
