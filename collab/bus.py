"""Bus: tells a server, over Redis, what the other servers of its cluster committed to
the documents it has loaded, so it can relay it to its own clients at once.

The database stays the system of record: an update reaches the bus only after its
commit, with its offset, and a server that misses one finds the gap in the offsets and
reads it from the database (collab/journal.py). One Redis stream per document, trimmed by
length: a relay, not a store. Only documents a server has loaded are read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from collab.errors import StoreError

log = logging.getLogger(__name__)

_BLOCK_MS = 1000  # how long one read waits for news
_SOCKET_SECONDS = 5.0  # above the block time: a blocking read is not a dead socket
_RETRY_SECONDS = 0.5  # after a failure to publish
# While Redis is away, how often the database is read instead; also how soon after Redis
# is back the relay resumes.
_POLL_SECONDS = 1.0
_STREAM_LENGTH = 10_000  # entries kept per document (approximately): a relay, not the log
_OUTBOX_LIMIT = 100_000  # unpublished updates kept while Redis is away (the rest: gaps)


class Receiver(Protocol):
    """What the bus hands other servers' updates to (a room, through the registry)."""

    name: str

    def receive_committed(self, update: bytes, offset: int) -> None:
        """Apply and relay an update committed elsewhere (one it holds is ignored)."""
        ...

    async def read_log(self) -> None:
        """Read from the database whatever the log has that the room lacks: what the
        bus may have missed (Redis was away, or lost its content)."""
        ...


def key_prefix(db: str) -> str:
    """The prefix of one cluster's keys: the servers that share a database share it, and
    two clusters on one Redis never mix."""
    return "collab:" + hashlib.sha256(db.encode()).hexdigest()[:12] + ":"


class Bus:
    """One server's side of the bus. Create with `await Bus.open(...)`."""

    def __init__(self, client: Any, reader: Any, node_id: str, prefix: str) -> None:
        self.node_id = node_id
        self._client = client
        self._reader = reader
        self._prefix = prefix
        self._node = node_id.encode()
        self._watched: dict[str, Receiver] = {}
        self._positions: dict[str, bytes] = {}  # stream key -> last entry id read
        self._outbox: deque[tuple[str, int, bytes]] = deque()
        self._wakeup = asyncio.Event()
        self._news = asyncio.Event()
        self._closing = False
        self.connected = True  # whether reading from Redis works (else the database is)
        self._tasks = [
            asyncio.create_task(self._publish_forever(), name="bus publisher"),
            asyncio.create_task(self._read_forever(), name="bus reader"),
        ]

    @classmethod
    async def open(cls, url: str, node_id: str, prefix: str) -> Bus:
        """Raises: StoreError: Redis does not answer."""
        client = aioredis.Redis.from_url(url, protocol=2, socket_timeout=_SOCKET_SECONDS)
        # A blocking read gets a connection of its own.
        reader = aioredis.Redis.from_url(url, protocol=2, socket_timeout=_SOCKET_SECONDS)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            await reader.aclose()
            raise StoreError(f"cannot reach Redis at {url}: {exc}") from exc
        return cls(client, reader, node_id, prefix)

    # --- publishing: after the commit, never before

    def publish(self, doc: str, first: int, updates: list[bytes]) -> None:
        """Tell the other servers of updates committed at offsets first, first + 1..."""
        for offset, update in enumerate(updates, first):
            self._outbox.append((doc, offset, update))
        self._wakeup.set()

    async def _publish_forever(self) -> None:
        while not self._closing or self._outbox:
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = list(self._outbox)
            self._outbox.clear()
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for doc, offset, update in batch:
                        pipe.xadd(
                            self._prefix + doc,
                            {"node": self._node, "offset": offset, "update": update},
                            maxlen=_STREAM_LENGTH,
                            approximate=True,
                        )
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                if self._closing:
                    return  # the others read it from the database
                # Kept to be sent once Redis is back: a server that has heard of nothing
                # newer would otherwise not look for it. Past the limit the oldest go:
                # others find those as gaps in the offsets, read from the database.
                self._outbox.extendleft(reversed(batch))
                while len(self._outbox) > _OUTBOX_LIMIT:
                    self._outbox.popleft()
                log.warning("bus: %d updates not published yet: %s", len(self._outbox), exc)
                await asyncio.sleep(_RETRY_SECONDS)

    # --- reading: only the documents loaded here

    async def watch(self, room: Receiver) -> None:
        """Relay other servers' updates of `room` to it from now on. Whatever was
        committed before this returns the caller reads from the database."""
        key = self._prefix + room.name
        try:
            last = await self._client.xrevrange(key, count=1)
        except (RedisError, OSError) as exc:
            log.warning("bus: %s: cannot read the stream's end, reading all: %s", room.name, exc)
            last = []
        self._positions[key] = last[0][0] if last else b"0-0"
        self._watched[room.name] = room
        self._news.set()

    def unwatch(self, name: str) -> None:
        self._watched.pop(name, None)
        self._positions.pop(self._prefix + name, None)

    async def _read_forever(self) -> None:
        while not self._closing:
            if not self._positions:
                self._news.clear()
                await self._news.wait()
                continue
            try:
                if not self.connected:
                    await self._reconnect()
                found = await self._reader.xread(dict(self._positions), block=_BLOCK_MS)
            except (RedisError, OSError) as exc:
                if self._closing:
                    return
                if self.connected:
                    self.connected = False
                    log.warning(
                        "bus: Redis is away (%s); reading the database every %.0f s until "
                        "it is back",
                        exc,
                        _POLL_SECONDS,
                    )
                await self._read_logs()
                await asyncio.sleep(_POLL_SECONDS)
                continue
            for key, entries in found or ():
                self._deliver(key, entries)

    async def _reconnect(self) -> None:
        """Redis answers again: go on from each stream's end as it is now (its content
        may be gone, a restarted Redis keeps nothing), and read what was committed
        meanwhile from the database."""
        ends = {}
        for name in list(self._watched):
            key = self._prefix + name
            last = await self._client.xrevrange(key, count=1)
            ends[key] = last[0][0] if last else b"0-0"
        for key, end in ends.items():
            if key in self._positions:
                self._positions[key] = end
        self.connected = True
        log.warning("bus: Redis is back; relaying again")
        await self._read_logs()

    async def _read_logs(self) -> None:
        for room in list(self._watched.values()):
            try:
                await room.read_log()
            except StoreError as exc:
                log.error("bus: %s: cannot read the log: %s", room.name, exc)

    def _deliver(self, key: bytes | str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        name = (key.decode() if isinstance(key, bytes) else key)[len(self._prefix) :]
        stream = self._prefix + name
        if stream not in self._positions:
            return  # unwatched meanwhile
        room = self._watched[name]
        for entry_id, fields in entries:
            self._positions[stream] = entry_id
            if fields.get(b"node") == self._node:
                continue
            room.receive_committed(fields[b"update"], int(fields[b"offset"]))

    async def ping(self) -> None:
        """Raises: StoreError: Redis does not answer."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis does not answer: {exc}") from exc

    async def close(self) -> None:
        self._closing = True
        self._wakeup.set()
        self._news.set()
        await asyncio.wait([self._tasks[0]], timeout=_SOCKET_SECONDS)
        self._tasks[1].cancel()
        await asyncio.wait(self._tasks)
        await self._client.aclose()
        await self._reader.aclose()
