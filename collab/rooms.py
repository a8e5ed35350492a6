"""Rooms: the registry of loaded documents by name, and their lifecycle.

A room is loaded once however many peers ask for it at the same moment (they share one
load), and unloaded only when it has had no user for the grace period and its state is
safe on disk. A room whose last save fails stays in memory and is tried again later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from collab import hocuspocus
from collab.config import Settings
from collab.edits import edit
from collab.errors import DocNotFound, StoreError
from collab.hooks import DocEvent, Loaded
from collab.journal import Journal
from collab.room import Room
from collab.store import Catalogue

if TYPE_CHECKING:  # redis is the cluster extra's: imported only when a bus is made
    from collab.bus import Bus

log = logging.getLogger(__name__)

_SEED_LEASE = 60.0  # seconds: in a cluster, one server is told a new document is new


class Rooms:
    """Every loaded room, with a lease count per name (one lease per connection)."""

    def __init__(
        self,
        journal: Journal,
        catalogue: Catalogue,
        settings: Settings,
        bus: Bus | None = None,
    ) -> None:
        self._journal = journal
        self._metrics = metrics = journal.metrics
        metrics.rooms_loaded = self.__len__
        metrics.outbox_bytes = self._outbox_bytes
        self._bus = bus
        self._catalogue = catalogue
        self._settings = settings
        self._rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Task[Room]] = {}
        self._unloading: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._deleting: dict[str, asyncio.Future[None]] = {}
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()  # forgetting deleted rooms
        if bus is not None:
            bus.on_deleted = self._deleted_elsewhere
            bus.on_stateless = self._send_stateless_here
            bus.on_missed.append(self._look_for_deleted)

    @property
    def journal(self) -> Journal:
        """The commit pipeline the rooms write to."""
        return self._journal

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)

    def _outbox_bytes(self) -> int:
        return sum(peer.outbox_bytes for room in self._rooms.values() for peer in room.peers)

    @property
    def closed(self) -> bool:
        """Whether the server is shutting down: rooms no longer load."""
        return self._closed

    def get(self, name: str) -> Room | None:
        """The room of `name` if it is loaded."""
        return self._rooms.get(name)

    async def acquire(self, name: str) -> Room:
        """The loaded room of `name`, loading it if needed. Pair with `release(name)`.

        Raises:
            StoreError: the document could not be loaded.
        """
        if self._closed:
            raise StoreError("server is shutting down")
        self._leases[name] = self._leases.get(name, 0) + 1
        try:
            return await self._room(name)
        except BaseException:
            self.release(name)
            raise

    async def _room(self, name: str) -> Room:
        while True:
            if timer := self._timers.pop(name, None):
                timer.cancel()
            if busy := self._unloading.get(name) or self._deleting.get(name):
                await asyncio.wait([busy])
                continue
            if room := self._rooms.get(name):
                return room
            loading = self._loading.get(name)
            if loading is None:
                loading = asyncio.create_task(self._load(name), name=f"load {name}")
                self._loading[name] = loading
            return await asyncio.shield(loading)

    async def _load(self, name: str) -> Room:
        started = time.perf_counter()
        try:
            try:
                stored = await self._journal.log.load(name)
            except StoreError:
                self._metrics.store_errors["read"] += 1
                raise
            room = Room(name, self._settings, self._journal, stored)
            if self._bus is not None:
                # From here the bus relays what other servers commit; what they
                # committed since the load is in the log.
                room.presence_out = partial(self._bus.publish_presence, name)
                await self._bus.watch(_Watched(room))
                await room.ledger.read_log()
            if self._journal.hooks and self._journal.hooks.wants("on_load"):
                await self._tell_loaded(room)
        finally:
            del self._loading[name]
        self._rooms[name] = room
        took = time.perf_counter() - started
        self._metrics.room_loads += 1
        self._metrics.room_load_seconds.observe(took)
        log.debug("%s: loaded in %.1f ms", name, took * 1000)
        return room

    async def _tell_loaded(self, room: Room) -> None:
        """Run the on_load hooks (bounded) before anyone joins: a new document may be
        seeded. In a cluster only the server that takes the seed lease hears it is new."""
        assert self._journal.hooks is not None
        new = room.is_empty and (
            self._bus is None
            or await self._bus.hold("seed:" + room.name, _SEED_LEASE, unreachable=True)
        )
        await self._journal.hooks.load(Loaded(room.name, new, partial(edit, room, "load")))

    def release(self, name: str) -> None:
        """Give back a lease; the room unloads after the grace period without leases."""
        left = self._leases[name] - 1
        if left:
            self._leases[name] = left
            return
        del self._leases[name]
        if name in self._rooms and not self._closed:
            self._schedule_unload(name)

    def _schedule_unload(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(
            self._settings.room_grace_seconds, self._start_unload, name
        )

    def _start_unload(self, name: str) -> None:
        self._timers.pop(name, None)
        if self._leases.get(name) or name not in self._rooms or name in self._unloading:
            return
        self._unloading[name] = asyncio.create_task(self._unload(name), name=f"unload {name}")

    async def _unload(self, name: str) -> None:
        room = self._rooms[name]
        try:
            async with asyncio.timeout(self._settings.shutdown_seconds):
                await room.ledger.close()
        except (StoreError, TimeoutError) as exc:
            log.error("%s: could not save before unloading, keeping it loaded: %r", name, exc)
            if not self._leases.get(name) and not self._closed:
                self._schedule_unload(name)
            return
        finally:
            del self._unloading[name]
        del self._rooms[name]
        if self._bus is not None:
            self._bus.unwatch(name)
        room.stop()
        self._metrics.room_unloads += 1
        log.debug("%s: unloaded", name)

    async def delete(self, name: str) -> bool:
        """Disconnect everyone from `name`, forget its room unsaved, delete it from the
        store; joins wait meanwhile. Returns whether the store had the document.

        Raises:
            StoreError: the store could not delete it.
        """
        async with self._alone(name):
            live = await self._drop(name)
            # Appends already handed to the store still complete; the delete is queued
            # after them.
            existed = await self._catalogue.delete_doc(name) or live
            if self._bus is not None:
                self._bus.publish_deleted(name)
            if hooks := self._journal.hooks:
                hooks.forget(name)
                if existed:
                    hooks.call("on_delete", DocEvent(name))
            return existed

    @asynccontextmanager
    async def _alone(self, name: str) -> AsyncIterator[None]:
        """While the room of `name` is taken out: no load, unload or other delete of it
        runs, and joins wait."""
        while busy := self._deleting.get(name) or self._loading.get(name):
            await asyncio.wait([busy])
        done = asyncio.get_running_loop().create_future()
        self._deleting[name] = done
        try:
            if unloading := self._unloading.get(name):
                await asyncio.wait([unloading])
            if timer := self._timers.pop(name, None):
                timer.cancel()
            yield
        finally:
            del self._deleting[name]
            done.set_result(None)

    async def _drop(self, name: str) -> bool:
        """Close the peers of `name`'s room (4404) and forget it unsaved; whether it held
        anything."""
        room = self._rooms.pop(name, None)
        if self._bus is not None:
            self._bus.unwatch(name)
        if room is None:
            return False
        room.close_peers(DocNotFound.close_code, "document deleted")
        live = not room.is_empty
        await room.ledger.discard()
        room.stop()
        return live

    def _deleted_elsewhere(self, name: str) -> None:
        """Another server deleted `name`: close its clients here too and forget the room
        unsaved (the store has nothing of it left to save to)."""
        room = self._rooms.get(name)
        if room is None or name in self._deleting:
            return
        log.info("%s: deleted by another server; closing its connections", name)
        if hooks := self._journal.hooks:
            hooks.forget(name)
        self._spawn(self._forget(name), f"forget {name}")

    def _look_for_deleted(self) -> None:
        """A deletion may have been missed (pub/sub was lost): ask the store about every
        room that has committed anything, so none lives on for a deleted document."""
        self._spawn(self._find_deleted(), "look for deleted documents")

    async def _find_deleted(self) -> None:
        for room in list(self._rooms.values()):
            if room.ledger.offset == 0 or room.name in self._deleting:
                continue  # nothing committed: it has no row to be missing
            try:
                gone = await self._catalogue.doc_info(room.name) is None
            except StoreError as exc:
                log.warning("%s: cannot tell whether it was deleted: %s", room.name, exc)
                continue
            if gone:
                self._deleted_elsewhere(room.name)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forget(self, name: str) -> None:
        async with self._alone(name):
            if name in self._rooms:
                await self._drop(name)

    def send_stateless(self, name: str, payload: str) -> int:
        """Send a stateless message to every Hocuspocus client of `name`, on every server
        of the cluster; returns how many of this server's it went to."""
        if self._bus is not None:
            self._bus.publish_stateless(name, payload)
        return self._send_stateless_here(name, payload)

    def _send_stateless_here(self, name: str, payload: str) -> int:
        room = self._rooms.get(name)
        peers = [peer for peer in room.peers if peer.hocuspocus] if room is not None else []
        frame = hocuspocus.encode_stateless(payload)
        for peer in peers:
            peer.send(frame)
        return len(peers)

    def close_peers(self, code: int, reason: str) -> None:
        """Ask every connection in every room to close."""
        for room in self:
            room.close_peers(code, reason)

    async def close(self) -> None:
        """Save every room and unload it; call once no connection is left."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        pending = [*self._unloading.values(), *self._loading.values()]
        if pending:
            await asyncio.wait(pending)
        await asyncio.gather(*(self._close_room(room) for room in self))
        self._rooms.clear()

    async def _close_room(self, room: Room) -> None:
        try:
            async with asyncio.timeout(self._settings.shutdown_seconds):
                await room.ledger.close()
            room.stop()
        except (StoreError, TimeoutError) as exc:
            log.error(
                "%s: could not save on shutdown; updates not yet committed were never "
                "sent to any other client: %r",
                room.name,
                exc,
            )


class _Watched:
    """A loaded room as the bus sees it."""

    def __init__(self, room: Room) -> None:
        self.name = room.name
        self.receive_committed = room.catch_up
        self.receive_presence = room.receive_presence
        self.presence = room.presence
        self.drop_presence_of = room.drop_presence_of
        self._ledger = room.ledger

    async def read_log(self) -> None:
        await self._ledger.read_log()
