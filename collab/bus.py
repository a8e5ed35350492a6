"""Bus: tells a server, over Redis, what the other servers of its cluster committed to
the documents it has loaded, so it can relay it to its own clients at once.

The database stays the system of record: an update reaches the bus only after its
commit, with its offset, and a server that misses one finds the gap in the offsets and
reads it from the database (collab/journal.py). One Redis stream per document, trimmed by
length: a relay, not a store. Only documents a server has loaded are read.

What must not cost a commit goes over pub/sub, at most once: presence (one channel per
loaded document; a server that loads one asks the others for their clients' states), and
on one channel for the cluster, heartbeats (a server not heard of for 10 s is gone: its
clients' states are dropped everywhere), deletions and revocations. States of other
servers' clients not renewed for 30 s are dropped too, which also repairs lost messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
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
# A document's stream goes when nobody has written to it for this long, so that Redis
# does not keep one for every document ever edited (a server watching it goes on from
# the new stream, whose entries come after).
_STREAM_SECONDS = 600
_OUTBOX_LIMIT = 10_000  # unpublished updates kept while Redis is away (the rest: gaps)
_HEARTBEAT_SECONDS = 1.0
_GONE_SECONDS = 10.0  # a server not heard of for this long is gone
_STALE_SECONDS = 30.0  # a remote client's state not renewed for this long (y-protocols)

# Take the lease if nobody holds it, renew it if we do; 1 if ours.
_LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# The first byte of a pub/sub message; then the sender's node id, NUL, the payload.
_STATES, _QUERY = b"s", b"q"  # on a document's presence channel
_ALIVE, _DELETED, _REVOKED = b"h", b"d", b"r"  # on the cluster's channel


class Receiver(Protocol):
    """What the bus hands other servers' news of a document to (a room, through the
    registry)."""

    name: str

    def receive_committed(self, update: bytes, offset: int) -> None:
        """Apply and relay an update committed elsewhere (one it holds is ignored)."""
        ...

    async def read_log(self) -> None:
        """Read from the database whatever the log has that the room lacks: what the
        bus may have missed (Redis was away, or lost its content)."""
        ...

    def receive_presence(self, server: str, frame: bytes, now: float) -> None:
        """Take another server's clients' presence (an awareness message)."""
        ...

    def presence(self) -> bytes | None:
        """This server's clients' states, for a server that asks."""
        ...

    def drop_presence_of(self, server: str | None = None, *, renewed_before: float = 0.0) -> None:
        """Drop the states of a server gone, or of any not renewed since a time."""
        ...


def key_prefix(db: str) -> str:
    """The prefix of one cluster's keys: the servers that share a database share it, and
    two clusters on one Redis never mix."""
    return "collab:" + hashlib.sha256(db.encode()).hexdigest()[:12] + ":"


class Bus:
    """One server's side of the bus. Create with `await Bus.open(...)`."""

    def __init__(self, client: Any, reader: Any, pubsub: Any, node_id: str, prefix: str) -> None:
        self.node_id = node_id
        self._client = client
        self._reader = reader
        self._pubsub = pubsub  # subscribed to the cluster's channel, or None (lost)
        self._prefix = prefix
        self._cluster = (prefix + "cluster").encode()
        # What this process signs its messages with: the node id and a token of its
        # own, so that two servers given one --node-id by mistake (or a node restarted
        # while its old messages are still about) never take each other's messages for
        # their own.
        self._node = f"{node_id}/{secrets.token_hex(4)}".encode()
        self._watched: dict[str, Receiver] = {}
        self._positions: dict[str, bytes] = {}  # stream key -> last entry id read
        self._outbox: deque[tuple[str, int, bytes]] = deque()
        self._signals: deque[tuple[bytes, bytes]] = deque()  # pub/sub: channel, message
        self._heard: dict[bytes, float] = {}  # other servers: when last heard of
        self._unwatched = False  # documents unwatched since the listener last looked
        self._wakeup = asyncio.Event()
        self._news = asyncio.Event()
        self._closing = False
        self.connected = True  # whether reading from Redis works (else the database is)
        # What to do when another server deleted a document, or stored a revocation;
        # and when pub/sub was lost, so that some of those may have been missed.
        self.on_deleted: Callable[[str], None] | None = None
        self.on_revoked: Callable[[], None] | None = None
        self.on_missed: list[Callable[[], None]] = []
        self._tasks = [
            asyncio.create_task(self._publish_forever(), name="bus publisher"),
            asyncio.create_task(self._read_forever(), name="bus reader"),
            asyncio.create_task(self._listen_forever(), name="bus listener"),
            asyncio.create_task(self._beat_forever(), name="bus heartbeat"),
        ]

    @classmethod
    async def open(cls, url: str, node_id: str, prefix: str) -> Bus:
        """Raises: StoreError: Redis does not answer."""
        client = aioredis.Redis.from_url(url, protocol=2, socket_timeout=_SOCKET_SECONDS)
        # A blocking read gets a connection of its own, and so does pub/sub.
        reader = aioredis.Redis.from_url(url, protocol=2, socket_timeout=_SOCKET_SECONDS)
        try:
            await client.ping()
            pubsub = client.pubsub()
            await pubsub.subscribe(prefix + "cluster")
        except (RedisError, OSError) as exc:
            await client.aclose()
            await reader.aclose()
            raise StoreError(f"cannot reach Redis at {url}: {exc}") from exc
        return cls(client, reader, pubsub, node_id, prefix)

    # --- publishing: after the commit, never before

    def publish(self, doc: str, first: int, updates: list[bytes]) -> None:
        """Tell the other servers of updates committed at offsets first, first + 1..."""
        for offset, update in enumerate(updates, first):
            self._outbox.append((doc, offset, update))
        self._wakeup.set()

    def publish_presence(self, doc: str, frame: bytes) -> None:
        """Tell the other servers of presence news of this server's clients of `doc`."""
        self._signal(self._presence_channel(doc), _STATES, frame)

    def publish_deleted(self, doc: str) -> None:
        """Tell the other servers that `doc` is deleted (they close its clients)."""
        self._signal(self._cluster, _DELETED, doc.encode())

    def publish_revoked(self) -> None:
        """Tell the other servers a revocation was just stored (they read and apply
        it)."""
        self._signal(self._cluster, _REVOKED, b"")

    def _signal(self, channel: bytes, kind: bytes, payload: bytes) -> None:
        self._signals.append((channel, kind + self._node + b"\0" + payload))
        self._wakeup.set()

    def _presence_channel(self, doc: str) -> bytes:
        return (self._prefix + "presence:" + doc).encode()

    async def _publish_forever(self) -> None:
        while not self._closing or self._outbox or self._signals:
            if not self._outbox and not self._signals:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, signals = list(self._outbox), list(self._signals)
            self._outbox.clear()
            self._signals.clear()
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for doc, offset, update in batch:
                        pipe.xadd(
                            self._prefix + doc,
                            {"node": self._node, "offset": offset, "update": update},
                            maxlen=_STREAM_LENGTH,
                            approximate=True,
                        )
                    for doc in {doc for doc, _, _ in batch}:
                        pipe.expire(self._prefix + doc, _STREAM_SECONDS)
                    for channel, message in signals:
                        pipe.publish(channel, message)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                if self._closing:
                    return  # the others read it from the database
                # Kept to be sent once Redis is back: a server that has heard of nothing
                # newer would otherwise not look for it. Past the limit the oldest go:
                # others find those as gaps in the offsets, read from the database.
                # (Signals are not kept: presence is renewed, the rest is read again.)
                self._outbox.extendleft(reversed(batch))
                while len(self._outbox) > _OUTBOX_LIMIT:
                    self._outbox.popleft()
                log.warning("bus: %d updates not published yet: %s", len(self._outbox), exc)
                await asyncio.sleep(_RETRY_SECONDS)

    # --- reading: only the documents loaded here

    async def watch(self, room: Receiver) -> None:
        """Relay other servers' updates and presence of `room` to it from now on, and
        ask them for their clients' states. Whatever was committed before this returns
        the caller reads from the database."""
        key = self._prefix + room.name
        channel = self._presence_channel(room.name)
        try:
            last = await self._client.xrevrange(key, count=1)
            if self._pubsub is not None:
                await self._pubsub.subscribe(channel)
        except (RedisError, OSError) as exc:
            log.warning("bus: %s: cannot read the stream's end, reading all: %s", room.name, exc)
            last = []
        self._positions[key] = last[0][0] if last else b"0-0"
        self._watched[room.name] = room
        self._signal(channel, _QUERY, b"")
        self._news.set()

    def unwatch(self, name: str) -> None:
        self._watched.pop(name, None)
        self._positions.pop(self._prefix + name, None)
        # Unsubscribed by the listener; what comes meanwhile is for no room.
        self._unwatched = True

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

    # --- who takes a document's versions

    async def lease(self, doc: str, seconds: float) -> bool:
        """Take or renew the lease on `doc`'s automatic versions; False if another
        server holds it. Without Redis, True: a redundant version is safe (it prunes
        only what its own state covers), a document never versioned loads slowly."""
        key = self._prefix + "lease:" + doc
        try:
            held = await self._client.eval(_LEASE_SCRIPT, 1, key, self._node, int(seconds * 1000))
        except (RedisError, OSError) as exc:
            log.warning("bus: %s: cannot ask for its versions' lease, taking it: %s", doc, exc)
            return True
        return bool(held)

    # --- pub/sub: presence, heartbeats, deletions, revocations

    async def _listen_forever(self) -> None:
        while not self._closing:
            try:
                if self._pubsub is None:
                    await self._resubscribe()
                await self._drop_unwatched()
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_HEARTBEAT_SECONDS
                )
            except (RedisError, OSError) as exc:
                if self._closing:
                    return
                log.debug("bus: pub/sub lost, subscribing again: %s", exc)
                if self._pubsub is not None:
                    pubsub, self._pubsub = self._pubsub, None
                    await _quietly(pubsub.aclose())
                await asyncio.sleep(_POLL_SECONDS)
                continue
            if message is not None and message.get("type") == "message":
                self._hear(message["channel"], message["data"])

    async def _resubscribe(self) -> None:
        pubsub = self._client.pubsub()
        try:
            channels = [self._cluster, *(self._presence_channel(n) for n in self._watched)]
            await pubsub.subscribe(*channels)
        except BaseException:
            await _quietly(pubsub.aclose())
            raise
        self._pubsub = pubsub
        for name in self._watched:  # what was missed meanwhile: ask again
            self._signal(self._presence_channel(name), _QUERY, b"")
        for look_again in self.on_missed:
            look_again()

    async def _drop_unwatched(self) -> None:
        if not self._unwatched:
            return
        self._unwatched = False
        wanted = {self._cluster, *(self._presence_channel(n) for n in self._watched)}
        stale = [c for c in self._pubsub.channels if c not in wanted]
        if stale:
            await self._pubsub.unsubscribe(*stale)

    def _hear(self, channel: bytes, data: bytes) -> None:
        kind, (node, _, payload) = data[:1], data[1:].partition(b"\0")
        if node == self._node:
            return
        now = time.monotonic()
        self._heard[node] = now
        try:
            if channel == self._cluster:
                if kind == _DELETED and self.on_deleted is not None:
                    self.on_deleted(payload.decode())
                elif kind == _REVOKED and self.on_revoked is not None:
                    self.on_revoked()
                return
            room = self._watched.get(channel.decode()[len(self._prefix) + len("presence:") :])
            if room is None:
                return
            if kind == _STATES:
                room.receive_presence(node.decode(), payload, now)
            elif kind == _QUERY and (states := room.presence()) is not None:
                self._signal(channel, _STATES, states)
        except Exception:  # one bad message must not stop every later one
            log.exception("bus: a message from server %r failed", node)

    async def _beat_forever(self) -> None:
        while not self._closing:
            self._signal(self._cluster, _ALIVE, b"")
            await asyncio.sleep(_HEARTBEAT_SECONDS)
            now = time.monotonic()
            for node, heard in list(self._heard.items()):
                if now - heard > _GONE_SECONDS:
                    del self._heard[node]
                    log.info("bus: server %s is gone; dropping its clients' presence", node)
                    for room in list(self._watched.values()):
                        room.drop_presence_of(node.decode())
            for room in list(self._watched.values()):
                room.drop_presence_of(renewed_before=now - _STALE_SECONDS)

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
        for task in self._tasks[1:]:
            task.cancel()
        await asyncio.wait(self._tasks)
        if self._pubsub is not None:
            await _quietly(self._pubsub.aclose())
        await self._client.aclose()
        await self._reader.aclose()


async def _quietly(closing: Any) -> None:
    try:
        await closing
    except (RedisError, OSError) as exc:
        log.debug("bus: closing a connection: %s", exc)
