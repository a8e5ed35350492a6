"""Guard: whether a request may reach a document and with which permission, the
connection limits, and revocations, applied to live connections too.

Every WebSocket upgrade and API call passes here before anything else, so a refusal is
an HTTP status (401, 403, 429, 503) rather than an accepted-then-closed socket: stock
providers reconnect at once after a close, and would hammer the server. The one
exception is an upgrade with no credential at all where one is needed: a Hocuspocus
provider sends its token in its first frame (collab.ws).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from collab.auth import (
    OPEN_GRANT,
    AuthRequest,
    Grant,
    Permission,
    Revocation,
    allows,
    effective,
    verify,
)
from collab.config import Settings
from collab.errors import Forbidden, StoreError, TooMany, Unauthorized
from collab.rooms import Rooms

log = logging.getLogger(__name__)


def request_token(request: web.Request) -> str | None:
    """The `token` query parameter (browsers) or the Bearer token (API clients)."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query.get("token") or None


class Revocations(Protocol):
    """Where revocations are kept (they last across restarts). May raise `StoreError`."""

    async def add_revocation(self, revocation: Revocation) -> None:
        """Keep a revocation."""
        ...

    async def revocations(self) -> list[Revocation]:
        """Every revocation kept, oldest first."""
        ...


class Guard:
    """Decides who gets in; counts who is in."""

    def __init__(self, settings: Settings, store: Revocations, rooms: Rooms) -> None:
        self._settings = settings
        self._store = store
        self._rooms = rooms
        self._revocations: list[Revocation] = []
        # With a bus: tells the other servers a revocation was stored.
        self.announce: Callable[[], None] | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self._total = 0
        self._per_room: Counter[str] = Counter()
        self._per_address: Counter[str] = Counter()

    async def load(self) -> None:
        self._revocations = await self._store.revocations()

    # --- who may

    def check_origin(self, request: web.Request, extra: frozenset[str] = frozenset()) -> None:
        """Refuse a browser request from an Origin that is neither ours nor allowed.

        Raises:
            Forbidden: with the origin.
        """
        origin = request.headers.get("Origin")
        if origin is None:
            return  # not a browser: Origin checks are about pages on other sites
        allowed = self._settings.origins | extra
        if "*" in allowed or origin.rstrip("/") in allowed:
            return
        if urlsplit(origin).netloc == request.host:
            return  # same origin: the editor this server serves
        raise Forbidden(f"origin {origin} is not allowed")

    async def grant(self, request: web.Request, doc: str | None, token: str | None = None) -> Grant:
        """The grant of the request's credentials.

        Args:
            token: one the client sent over its connection (a Hocuspocus provider's, per
                document), checked instead of the request's own.

        Raises:
            Unauthorized: no valid credentials where they are needed.
        """
        authorizer = self._settings.authorizer
        token = token or request_token(request)
        if authorizer is not None:
            ask = AuthRequest(doc, token, request.headers, request.cookies, request.remote)
            decision = authorizer(ask)
            if inspect.isawaitable(decision):
                decision = await decision
            return decision if isinstance(decision, Grant) else Grant(decision)
        if self._settings.auth == "open":
            return OPEN_GRANT
        if token is None:
            raise Unauthorized("a token is needed: pass ?token=... or Authorization: Bearer")
        return verify(self._settings.auth_secret, token, now=time.time())

    def permission(self, grant: Grant, doc: str) -> Permission:
        return effective(grant, doc, self._revocations)

    async def require(self, request: web.Request, doc: str, need: Permission) -> Grant:
        """The request's grant, if it allows `need` on `doc`.

        Raises:
            Unauthorized: no valid credentials.
            Forbidden: they do not allow `need` on `doc`.
        """
        grant = await self.grant(request, doc)
        have = self.permission(grant, doc)
        if not allows(have, need):
            raise Forbidden(f"this credential does not allow {need} on {doc!r}")
        return grant

    # --- how many

    @contextmanager
    def admit(self, request: web.Request, doc: str | None) -> Iterator[None]:
        """Count a connection for as long as it lasts: one to document `doc`, or with
        None a Hocuspocus socket itself (each document it opens counts once more).

        Raises:
            TooMany: a limit is reached.
        """
        settings = self._settings
        address = request.remote or "?"
        if self._total >= settings.max_connections:
            raise TooMany(f"the server has {self._total} connections", server_full=True)
        if doc is not None and self._per_room[doc] >= settings.max_connections_per_room:
            raise TooMany(f"document {doc!r} has {self._per_room[doc]} connections")
        if self._per_address[address] >= settings.max_connections_per_address:
            raise TooMany(f"{address} has {self._per_address[address]} connections")
        counted = [(self._per_address, address)]
        if doc is not None:
            counted.append((self._per_room, doc))
        self._total += 1
        for counter, key in counted:
            counter[key] += 1
        try:
            yield
        finally:
            self._total -= 1
            for counter, key in counted:
                counter[key] -= 1
                if not counter[key]:
                    del counter[key]

    # --- lowering grants

    async def revoke(self, revocation: Revocation) -> int:
        """Keep `revocation` and apply it to live connections at once: close those left
        with nothing (4403), make those left with read read-only; other servers of the
        cluster hear of it. Returns how many connections here it touched."""
        await self._store.add_revocation(revocation)
        self._revocations.append(revocation)
        if self.announce is not None:
            self.announce()
        return self._apply(revocation)

    def revoked_elsewhere(self) -> None:
        """Another server stored a revocation (or this one may have missed some): read
        them again and apply the new ones."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload(), name="reload revocations")
        else:
            self._reload_again = True

    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            try:
                found = await self._store.revocations()
            except StoreError as exc:
                log.error("cannot read the revocations another server stored: %s", exc)
                return
            known = set(self._revocations)
            self._revocations = found
            for revocation in found:
                if revocation not in known:
                    self._apply(revocation)
            if not self._reload_again:
                return

    def _apply(self, revocation: Revocation) -> int:
        touched = 0
        for room in self._rooms:
            for peer in list(room.peers):
                if not revocation.covers(peer.grant, room.name):
                    continue
                now_allowed = self.permission(peer.grant, room.name)
                if now_allowed == "none":
                    peer.close(Forbidden.close_code, "access revoked")
                elif not allows(now_allowed, peer.access):
                    room.downgrade(peer)
                else:
                    continue
                touched += 1
        log.info("revocation %s: %d connections affected", revocation, touched)
        return touched
