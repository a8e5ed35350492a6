"""RedisLink: one connection to Redis for the bus's hot paths, publishing and receiving a
subscription's messages, spoken to directly: commands are written as they come, never
awaited one by one, and replies are parsed by hiredis (the C parser of the Redis project,
which redis-py itself uses) as they arrive, then handed to a callback.

Why not redis-py's own API for these: measured on this machine, a PUBLISH through it
costs about 100 us of CPU (80 us alone, 100 us in a pipeline of one), and a pub/sub
message received through `PubSub.get_message` some tens more; written here, a PUBLISH
costs about 7 us. At a few hundred edits a second on a server, that was most of a
cluster node's time. Everything else (the lease, pings) goes through redis-py.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url

from collab.errors import StoreError
from collab.logs import redact

log = logging.getLogger(__name__)

Reply = Any  # what hiredis makes of a reply: bytes, int, list, None


class RedisLink(asyncio.Protocol):
    """A connection, once `connect`ed; `lost` is done when it is gone."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._on_reply: Callable[[Reply], None] = self._handshake_reply
        self._handshake: list[Reply] = []
        self._handshake_wanted = 0
        self._handshake_done: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(
        cls, url: str, on_reply: Callable[[Reply], None], timeout: float
    ) -> RedisLink:
        """Connect to the Redis of `url` (redis://, rediss:// or unix://, with a user,
        password and database if it names them) and hand every reply to `on_reply`.

        Raises:
            StoreError: Redis cannot be reached, or refuses the credentials.
        """
        options = parse_url(url)
        loop = asyncio.get_running_loop()
        link: RedisLink | None = None
        try:
            async with asyncio.timeout(timeout):
                if "path" in options:
                    _, link = await loop.create_unix_connection(cls, options["path"])
                else:
                    secure = ssl.create_default_context() if url.startswith("rediss:") else None
                    _, link = await loop.create_connection(
                        cls, options.get("host", "localhost"), options.get("port", 6379), ssl=secure
                    )
                hello: list[Sequence[Any]] = []
                if password := options.get("password"):
                    user = options.get("username")
                    hello.append(("AUTH", user, password) if user else ("AUTH", password))
                if database := options.get("db"):
                    hello.append(("SELECT", database))
                # An answer, not just a connection: a stopped Redis still accepts those.
                hello.append(("PING",))
                await link._greet(hello)
        except (OSError, TimeoutError, hiredis.ReplyError) as exc:
            if link is not None:
                link.close()
            raise StoreError(f"cannot reach Redis at {redact(url)}: {exc!r}") from exc
        link._on_reply = on_reply
        return link

    async def _greet(self, commands: list[Sequence[Any]]) -> None:
        self._handshake_wanted = len(commands)
        self._handshake_done = asyncio.get_running_loop().create_future()
        self.send(commands)
        either: list[asyncio.Future[Any]] = [self._handshake_done, self.lost]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if len(self._handshake) < self._handshake_wanted:
            raise OSError("the connection closed")
        for reply in self._handshake:
            if isinstance(reply, hiredis.ReplyError):
                self.close()
                raise reply

    def _handshake_reply(self, reply: Reply) -> None:
        self._handshake.append(reply)
        if len(self._handshake) == self._handshake_wanted and self._handshake_done is not None:
            self._handshake_done.set_result(None)

    def send(self, commands: Sequence[Sequence[Any]]) -> None:
        """Write `commands` at once; their replies come to the callback, in order."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(hiredis.pack_command(tuple(c)) for c in commands))

    @property
    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel: Redis is not reading."""
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            try:
                self._on_reply(reply)
            except Exception:  # one reply's failure must not close the connection
                log.exception("redis: handling a reply failed")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        if self._handshake_done is not None and not self._handshake_done.done():
            self._handshake_done.cancel()
