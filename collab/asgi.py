"""The ASGI application: collab inside FastAPI, Starlette or any ASGI server (uvicorn).

It only relays. collab's own aiohttp application (collab.app.create_app: the same rooms,
journal, documents and guard) serves on a private Unix socket of this process, and each
ASGI request and WebSocket is handed to it as it came (collab.relay), so no operation is
written twice and every guarantee (committed before relayed, limits, close codes) holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from collab import relay
from collab.app import create_app
from collab.appkeys import Store
from collab.config import Settings
from collab.relay import Receive, Scope, Send

log = logging.getLogger(__name__)


class CollabASGI:
    """An ASGI application serving collab's rooms and API relative to where it is mounted.

    It starts on first use (Starlette does not pass lifespan events to mounted apps), and
    stops when the event loop ends, or at the end of `lifespan`, which a host app chains
    for an orderly shutdown: connections closed with 1001, rooms' last versions taken.
    """

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self._store = store
        self._starting: asyncio.Lock | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._run_lifespan(receive, send)
            return
        session = await self.start()
        if session is None:
            await relay.unavailable(scope, receive, send)
        elif scope["type"] == "http":
            await relay.http(session, scope, receive, send)
        elif scope["type"] == "websocket":
            await relay.websocket(session, scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """Start collab now, and shut it down in order when the block ends.

        `FastAPI(lifespan=collab.lifespan)` takes it as it is; a host with a lifespan of
        its own enters it there (`async with collab.lifespan(): yield`).
        """
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> aiohttp.ClientSession | None:
        """Start collab if it is not running; the session that reaches it (None once it
        has stopped)."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._keeper is None:
                started: asyncio.Future[aiohttp.ClientSession] = asyncio.Future()
                self._keeper = asyncio.create_task(self._keep(started), name="collab")
                either: list[asyncio.Future[Any]] = [started, self._keeper]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not started.done():
                    self._keeper.result()  # it failed: say why
                self._session = started.result()
        return None if self._stop.is_set() else self._session

    async def stop(self) -> None:
        """Close every connection with 1001, take the rooms' last versions, close the
        store; then requests are answered 503."""
        self._stop.set()
        if self._keeper is not None:
            await asyncio.wait([self._keeper])

    async def _keep(self, started: asyncio.Future[aiohttp.ClientSession]) -> None:
        # One task owns collab's whole life: when the host's event loop ends without a
        # lifespan (asyncio.run cancels what is left), the cancellation lands here and the
        # cleanup below still runs to the end.
        app = create_app(self.settings, self._store)
        app.middlewares.insert(0, relay.forwarded_peer)
        runner = web.AppRunner(
            app, shutdown_timeout=self.settings.shutdown_seconds, handle_signals=False
        )
        with tempfile.TemporaryDirectory(prefix="collab-") as private:
            socket_path = str(Path(private) / "collab.sock")
            try:
                await runner.setup()
                await web.UnixSite(runner, socket_path).start()
                async with relay.session(socket_path) as session:
                    started.set_result(session)
                    log.info("collab serving documents in this ASGI application")
                    await self._stop.wait()
            finally:
                self._stop.set()
                await runner.cleanup()
                log.info("collab stopped")

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        """Serve the lifespan protocol when collab is the ASGI server's own app."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    raise
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_asgi_app(settings: Settings, store: Store | None = None) -> CollabASGI:
    """The collab ASGI application for `settings`, to mount in a host app or serve alone.

    Args:
        store: a store to use instead of the database of `settings.db`.
    """
    return CollabASGI(settings, store)
