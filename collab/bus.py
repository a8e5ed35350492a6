"""Bus: tells a server, over Redis pub/sub, what the other servers of its cluster committed
to the documents it has loaded, so it can relay it to its own clients at once; and the
rest they must tell each other.

The database stays the system of record: an update reaches the bus only after its
commit, with its offset, and a server that misses one finds the gap in the offsets and
reads it from the database (collab/journal.py). So the relay may be at most once, and is:
one pub/sub channel per document, which only the servers that have it loaded subscribe
to (a server does nothing for the others' documents). Whenever a server's subscription
was lost, it reads its documents' logs from the database, every second until Redis is
back and once more then, so nothing published meanwhile is missed.

The same channel carries presence (a server that loads a document asks the others for
their clients' states), and one channel for the cluster carries heartbeats (a server not
heard of for 10 s is gone: its clients' states are dropped everywhere), deletions and
revocations. States of other servers' clients not renewed for 30 s are dropped too,
which also repairs lost messages. A key per document says which server takes its
automatic versions (a lease), and one which server sends the webhooks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from collab.errors import StoreError
from collab.logs import redact
from collab.metrics import Metrics
from collab.redislink import RedisLink, Reply

log = logging.getLogger(__name__)

_SOCKET_SECONDS = 5.0  # a command (or a subscription's confirmation) that takes longer failed
_SILENT_SECONDS = 5.0  # our own heartbeat not back for this long: Redis is not answering
_BACKLOG_LIMIT = 8 << 20  # bytes written to Redis and not yet taken: it is not reading
# While Redis is away, how often the database is read instead; also how soon after Redis
# is back the relay resumes.
_POLL_SECONDS = 1.0
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

# Delete the lease if ours.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""

# The first byte of a message; then the sender's signature, NUL, the payload.
_UPDATES, _STATES, _QUERY = b"u", b"s", b"q"  # on a document's channel
_ALIVE, _DELETED, _REVOKED, _STATELESS = b"h", b"d", b"r", b"t"  # on the cluster's channel
_HEADER = struct.Struct(">QI")  # updates: the first one's offset, how many
_LENGTH = struct.Struct(">I")
_SENT_AT = struct.Struct(">d")  # a heartbeat: when its server sent it (its own clock)


def encode_updates(first: int, updates: list[bytes]) -> bytes:
    """Updates committed at offsets first, first + 1..., as one message payload."""
    parts = [_HEADER.pack(first, len(updates))]
    for update in updates:
        parts += (_LENGTH.pack(len(update)), update)
    return b"".join(parts)


def decode_updates(payload: bytes) -> list[tuple[int, bytes]]:
    """The (offset, update) pairs of `encode_updates`' payload.

    Raises:
        ValueError: it is not one.
    """
    try:
        first, count = _HEADER.unpack_from(payload)
        at, found = _HEADER.size, []
        for offset in range(first, first + count):
            (length,) = _LENGTH.unpack_from(payload, at)
            at += _LENGTH.size
            found.append((offset, payload[at : at + length]))
            at += length
    except struct.error as exc:
        raise ValueError(f"not an updates message: {exc}") from exc
    if at != len(payload):
        raise ValueError("not an updates message: its lengths do not add up")
    return found


class Receiver(Protocol):
    """What the bus hands other servers' news of a document to (a room, through the
    registry)."""

    name: str

    def receive_committed(self, updates: list[tuple[int, bytes]]) -> None:
        """Apply and relay updates committed elsewhere, with their offsets (those it
        holds are ignored)."""
        ...

    async def read_log(self) -> None:
        """Read from the database whatever the log has that the room lacks: what the
        bus may have missed (Redis was away)."""
        ...

    def receive_presence(self, server: str, frame: bytes, now: float) -> None:
        """Take another server's clients' presence (an awareness message)."""
        ...

    def presence(self) -> bytes | None:
        """This server's clients' states, for a server that asks."""
        ...

    def drop_presence_of(self, server: str | None = None, *, renewed_before: float = 0.0) -> int:
        """Drop the states of a server gone, or of any not renewed since a time; how
        many."""
        ...


def key_prefix(db: str) -> str:
    """The prefix of one cluster's keys and channels: the servers that share a database
    share it, and two clusters on one Redis never mix."""
    return "collab:" + hashlib.sha256(db.encode()).hexdigest()[:12] + ":"


class Bus:
    """One server's side of the bus. Create with `await Bus.open(...)`."""

    def __init__(
        self, client: Any, url: str, node_id: str, prefix: str, metrics: Metrics | None = None
    ) -> None:
        self.node_id = node_id
        self.metrics = metrics = metrics or Metrics()
        metrics.bus_connected = self._is_connected
        self._client = client  # redis-py: the lease and pings
        self._url = url
        # Two links: publishing (replies are counted, never waited for), and the
        # subscription (its messages are handled as they arrive). None: Redis is away.
        self._out: RedisLink | None = None
        self._in: RedisLink | None = None
        self._prefix = prefix
        self._cluster = (prefix + "cluster").encode()
        self._doc_channels = (prefix + "doc:").encode()
        # What this process signs its messages with: the node id and a token of its
        # own, so that two servers given one --node-id by mistake (or a node restarted
        # while its old messages are still about) never take each other's messages for
        # their own.
        self._node = f"{node_id}/{secrets.token_hex(4)}".encode()
        self._signature = self._node + b"\0"
        self._watched: dict[str, Receiver] = {}
        self._confirming: dict[bytes, asyncio.Future[None]] = {}  # channel -> subscribed
        # Messages to publish: channel, message, and whether to keep it for another try.
        self._outbox: deque[tuple[bytes, bytes, bool]] = deque()
        self._flushing: asyncio.Handle | None = None
        self._heard: dict[bytes, float] = {}  # other servers: when last heard of
        self._echoed = time.monotonic()  # when our own heartbeat last came back
        self._closing = False
        self.connected = False  # whether the links hold (else the database is read)
        # What to do when another server deleted a document, or stored a revocation;
        # and when pub/sub was lost, so that some of those may have been missed.
        self.on_deleted: Callable[[str], None] | None = None
        self.on_revoked: Callable[[], None] | None = None
        self.on_stateless: Callable[[str, str], object] | None = None
        self.on_missed: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _is_connected(self) -> bool:
        return self.connected

    @classmethod
    async def open(cls, url: str, node_id: str, prefix: str, metrics: Metrics | None = None) -> Bus:
        """Raises: StoreError: Redis does not answer."""
        client = aioredis.Redis.from_url(url, protocol=2, socket_timeout=_SOCKET_SECONDS)
        bus = cls(client, url, node_id, prefix, metrics)
        try:
            await client.ping()
            await bus._connect()
        except (RedisError, OSError, StoreError) as exc:
            await client.aclose()
            raise StoreError(f"cannot reach Redis at {redact(url)}: {exc}") from exc
        bus._tasks = [
            asyncio.create_task(bus._keep_connected(), name="bus links"),
            asyncio.create_task(bus._beat_forever(), name="bus heartbeat"),
        ]
        return bus

    def _channel(self, doc: str) -> bytes:
        return self._doc_channels + doc.encode()

    async def _connect(self) -> None:
        """Open both links and subscribe to the cluster and every loaded document.

        Raises:
            StoreError: Redis cannot be reached.
        """
        out = await RedisLink.connect(self._url, self._on_published, _SOCKET_SECONDS)
        try:
            into = await RedisLink.connect(self._url, self._on_push, _SOCKET_SECONDS)
        except StoreError:
            out.close()
            raise
        channels = [self._cluster, *(self._channel(name) for name in self._watched)]
        into.send([("SUBSCRIBE", *channels)])
        self._out, self._in = out, into
        self._echoed = time.monotonic()
        self.connected = True
        self._flush()  # what waited meanwhile

    # --- publishing: after the commit, never before

    def publish(self, doc: str, first: int, updates: list[bytes]) -> None:
        """Tell the other servers of updates committed at offsets first, first + 1..."""
        self._send(self._channel(doc), _UPDATES, encode_updates(first, updates), keep=True)

    def publish_presence(self, doc: str, frame: bytes) -> None:
        """Tell the other servers of presence news of this server's clients of `doc`."""
        self._send(self._channel(doc), _STATES, frame)

    def publish_deleted(self, doc: str) -> None:
        """Tell the other servers that `doc` is deleted (they close its clients)."""
        self._send(self._cluster, _DELETED, doc.encode())

    def publish_revoked(self) -> None:
        """Tell the other servers a revocation was just stored (they read and apply
        it)."""
        self._send(self._cluster, _REVOKED, b"")

    def publish_stateless(self, doc: str, payload: str) -> None:
        """Tell the other servers to send `payload` to their Hocuspocus clients of `doc`
        (on the cluster's channel: a server need not watch the document to hear it)."""
        self._send(self._cluster, _STATELESS, doc.encode() + b"\0" + payload.encode())

    def _send(self, channel: bytes, kind: bytes, payload: bytes, *, keep: bool = False) -> None:
        self._outbox.append((channel, kind + self._signature + payload, keep))
        self.metrics.bus_published += 1
        if self._flushing is None:
            # Once this turn of the loop ends: what it produced goes in one write.
            self._flushing = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = None
        if not self._outbox:
            return
        out = self._out
        if out is not None and self.connected and out.backlog < _BACKLOG_LIMIT:
            out.send([("PUBLISH", channel, message) for channel, message, _ in self._outbox])
            self._outbox.clear()
            return
        # Redis is away or not reading: updates are kept to be sent once it is back (a
        # server that hears of nothing newer would not look for them); past the limit
        # the oldest go, found as gaps and read from the database. The rest is renewed
        # or read again anyway.
        kept = [message for message in self._outbox if message[2]]
        self._outbox = deque(kept[-_OUTBOX_LIMIT:])

    def _on_published(self, reply: Reply) -> None:
        if isinstance(reply, hiredis.ReplyError):
            log.warning("bus: Redis refused a message: %s", reply)

    # --- listening: only to the documents loaded here

    async def watch(self, room: Receiver) -> None:
        """Relay other servers' updates and presence of `room` to it from now on, and
        ask them for their clients' states. Whatever was committed before this returns
        the caller reads from the database."""
        channel = self._channel(room.name)
        self._watched[room.name] = room
        if self._in is not None:
            confirmed = asyncio.get_running_loop().create_future()
            self._confirming[channel] = confirmed
            self._in.send([("SUBSCRIBE", channel)])
            try:
                # Until Redis confirms, a message published meanwhile may not reach us.
                await asyncio.wait_for(asyncio.shield(confirmed), _SOCKET_SECONDS)
            except TimeoutError:
                # Redis is slow or away: the links are made again, the log read then.
                log.warning("bus: %s: no confirmation of the subscription", room.name)
            finally:
                self._confirming.pop(channel, None)
        self._send(channel, _QUERY, b"")

    def unwatch(self, name: str) -> None:
        self._watched.pop(name, None)
        if self._in is not None:
            self._in.send([("UNSUBSCRIBE", self._channel(name))])

    def _on_push(self, reply: Reply) -> None:
        if not isinstance(reply, list) or len(reply) != 3:
            return  # an error reply of ours was logged by the link; nothing else comes
        kind, channel, data = reply
        if kind == b"message":
            self._hear(channel, data)
        elif kind == b"subscribe" and (confirmed := self._confirming.get(channel)):
            if not confirmed.done():
                confirmed.set_result(None)

    async def _keep_connected(self) -> None:
        """Watch the links; when one is lost (or Redis stops answering: our own
        heartbeat does not come back), read the database every second and make them
        again, then read what was committed meanwhile, once more."""
        while not self._closing:
            assert self._out is not None and self._in is not None
            lost = [self._out.lost, self._in.lost]
            done, _ = await asyncio.wait(lost, timeout=_HEARTBEAT_SECONDS)
            if self._closing:
                return
            silent = time.monotonic() - self._echoed > _SILENT_SECONDS
            if not done and not silent:
                continue
            reason = next((f.result() for f in done if f.result() is not None), None)
            self._lost(reason or ("Redis stopped answering" if silent else "connection closed"))
            while not self._closing:
                await self._read_logs()
                await asyncio.sleep(_POLL_SECONDS)
                try:
                    await self._connect()
                except StoreError:
                    continue
                log.warning("bus: Redis is back; relaying again")
                self.metrics.bus_reconnects += 1
                await self._caught_up()
                break

    def _lost(self, reason: object) -> None:
        self.connected = False
        log.warning(
            "bus: Redis is away (%s); reading the database every %.0f s until it is back",
            reason,
            _POLL_SECONDS,
        )
        for link in (self._out, self._in):
            if link is not None:
                link.close()
        self._out = self._in = None

    async def _caught_up(self) -> None:
        # What may have been missed: committed updates (read from the log), presence
        # (asked for again), revocations and deletions (the hooks look again).
        await self._read_logs()
        for name in self._watched:
            self._send(self._channel(name), _QUERY, b"")
        for look_again in self.on_missed:
            look_again()

    async def _read_logs(self) -> None:
        for room in list(self._watched.values()):
            try:
                await room.read_log()
            except StoreError as exc:
                log.error("bus: %s: cannot read the log: %s", room.name, exc)

    def _hear(self, channel: bytes, data: bytes) -> None:
        if data.startswith(self._signature, 1):
            if channel == self._cluster and data[:1] == _ALIVE:
                self._echoed = time.monotonic()  # Redis answers
                self._relayed(data[1 + len(self._signature) :])
            return  # our own, back from Redis
        kind, (node, _, payload) = data[:1], data[1:].partition(b"\0")
        now = time.monotonic()
        self._heard[node] = now
        try:
            if channel == self._cluster:
                if kind == _DELETED and self.on_deleted is not None:
                    self.on_deleted(payload.decode())
                elif kind == _REVOKED and self.on_revoked is not None:
                    self.on_revoked()
                elif kind == _STATELESS and self.on_stateless is not None:
                    doc, _, text = payload.partition(b"\0")
                    self.on_stateless(doc.decode(), text.decode())
                return
            room = self._watched.get(channel[len(self._doc_channels) :].decode())
            if room is None:
                return  # unwatched meanwhile
            if kind == _UPDATES:
                updates = decode_updates(payload)
                self.metrics.bus_updates_received += len(updates)
                room.receive_committed(updates)
            elif kind == _STATES:
                room.receive_presence(node.decode(), payload, now)
            elif kind == _QUERY and (states := room.presence()) is not None:
                self._send(channel, _STATES, states)
        except Exception:  # one bad message must not stop every later one
            log.exception("bus: a message from server %r failed", node)

    def _relayed(self, sent_at: bytes) -> None:
        # The relay's lag, on our own clock: a heartbeat of ours, back from Redis.
        if len(sent_at) == _SENT_AT.size:
            (sent,) = _SENT_AT.unpack(sent_at)
            self.metrics.bus_relay_seconds.observe(max(0.0, time.monotonic() - sent))

    async def _beat_forever(self) -> None:
        while not self._closing:
            self._send(self._cluster, _ALIVE, _SENT_AT.pack(time.monotonic()))
            await asyncio.sleep(_HEARTBEAT_SECONDS)
            now = time.monotonic()
            for node, heard in list(self._heard.items()):
                if now - heard > _GONE_SECONDS:
                    del self._heard[node]
                    log.info("bus: server %s is gone; dropping its clients' presence", node)
                    for room in list(self._watched.values()):
                        self.metrics.presence_dropped += room.drop_presence_of(node.decode())
            for room in list(self._watched.values()):
                dropped = room.drop_presence_of(renewed_before=now - _STALE_SECONDS)
                self.metrics.presence_dropped += dropped

    # --- who takes a document's versions

    async def lease(self, doc: str, seconds: float) -> bool:
        """Take or renew the lease on `doc`'s automatic versions; False if another
        server holds it. Without Redis, True: a redundant version is safe (it prunes
        only what its own state covers), a document never versioned loads slowly."""
        return await self.hold("lease:" + doc, seconds, unreachable=True)

    async def hold(self, name: str, seconds: float, *, unreachable: bool) -> bool:
        """Take or renew the cluster's lease `name`: one server holds it at a time, until
        it lets `seconds` pass without renewing it, or releases it. False if another
        server holds it; `unreachable` if Redis cannot be asked."""
        try:
            held = await self._client.eval(
                _LEASE_SCRIPT, 1, self._prefix + name, self._node, int(seconds * 1000)
            )
        except (RedisError, OSError) as exc:
            verdict = "taking it" if unreachable else "not taking it"
            log.warning("bus: cannot ask for the lease %s, %s: %s", name, verdict, exc)
            return unreachable
        return bool(held)

    async def release(self, name: str) -> None:
        """Give up the lease `name` if this server holds it, so another takes it at once."""
        try:
            await self._client.eval(_RELEASE_SCRIPT, 1, self._prefix + name, self._node)
        except (RedisError, OSError) as exc:
            log.warning("bus: cannot release the lease %s (it expires): %s", name, exc)

    async def ping(self) -> None:
        """Raises: StoreError: Redis does not answer, or the relay is not connected yet
        (the server reads the database meanwhile)."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreError(f"Redis does not answer: {exc}") from exc
        if not self.connected:
            raise StoreError("Redis answers; the relay is connecting again (reading the database)")

    async def close(self) -> None:
        """Send what is waiting (a moment at most), then close."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._flush()
        out = self._out
        deadline = time.monotonic() + _SOCKET_SECONDS
        # A few polls of the transport's buffer at shutdown, at most _SOCKET_SECONDS.
        while out is not None and out.backlog and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        for link in (self._out, self._in):
            if link is not None:
                link.close()
        await self._client.aclose()
