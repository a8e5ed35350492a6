"""The typed keys under which the aiohttp application holds its parts."""

from aiohttp import web

from collab.config import Settings
from collab.rooms import Rooms
from collab.store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
ROOMS = web.AppKey("rooms", Rooms)
