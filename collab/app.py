"""Wiring: the aiohttp application and how it starts and stops. No logic of its own.

Parts are created in `cleanup_ctx` order (the database lock, the store, the webhooks'
sender, the rooms and documents, the retention task) and torn down in reverse.
On shutdown the listening socket closes first, then every connection is closed with 1001
so providers reconnect elsewhere, then rooms commit and take their last versions, then
the store closes.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import itertools
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from collab import __version__, api, logs, pages, ws
from collab.appkeys import (
    CHECKS,
    DOCUMENTS,
    FRAMES,
    GUARD,
    LOCK,
    LOOSE,
    METRICS,
    MOUNT,
    READY,
    REGISTRY,
    ROOMS,
    SETTINGS,
    STOPPING,
    STORE,
    Store,
)
from collab.config import EventLoop, Settings, describe_db, parse_address
from collab.documents import Documents, open_bus, open_documents
from collab.errors import CollabError, StoreError
from collab.frames import FrameCache
from collab.guard import Guard
from collab.journal import Journal
from collab.lockfile import DatabaseLock
from collab.metrics import Metrics
from collab.peer import CLOSE_GOING_AWAY
from collab.store import open_store
from collab.webhooks import open_webhooks
from collab.yjs import document

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: Settings, store: Store | None = None) -> web.Application:
    """The collab application for `settings`; its parts start with the app.

    Args:
        store: a store to use instead of the SQLite file of `settings.db` (the app
            closes it on cleanup).
    """
    app = web.Application(
        middlewares=[_mount_relative, _log_scope, _room_upgrades],
        client_max_size=settings.max_message_bytes,
    )
    app[SETTINGS] = settings
    app[FRAMES] = FrameCache()
    app[METRICS] = metrics = Metrics()
    app[REGISTRY] = metrics.registry()
    app[STOPPING] = asyncio.Event()
    app[LOOSE] = set()
    if store is None and isinstance(settings.db, Path):
        # One server per SQLite file, or the nodes of one cluster (on one host). A
        # PostgreSQL database is shared by design.
        app.cleanup_ctx.append(_lock)
    app.cleanup_ctx.append(partial(_store, given=store))
    app.cleanup_ctx.append(_rooms)
    app.cleanup_ctx.append(_retention)
    if settings.metrics == "on":
        app.cleanup_ctx.append(_loop_lag)
        if settings.metrics_listen:
            app.cleanup_ctx.append(_metrics_apart)
    app.on_shutdown.append(_close_connections)
    api.add_routes(app)
    pages.add_routes(app)
    return app


@web.middleware
async def _mount_relative(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Mounted with `parent.add_subapp(prefix, app)`, the request's path still starts with
    # the prefix; rooms, /api and /static are named relative to the mount. (The routes
    # already matched: aiohttp adds the prefix to them.)
    outer = request.get(MOUNT, "")  # behind collab.asgi's relay: the host's mount
    if prefix := mount_prefix(request.match_info.apps):
        url = request.rel_url
        relative = url.raw_path[len(prefix) :] or "/"
        request = request.clone(rel_url=url.with_path(relative, encoded=True, keep_query=True))
    request[MOUNT] = outer + prefix
    return await handler(request)


def mount_prefix(apps: tuple[web.Application, ...]) -> str:
    """The path under which the last of `apps` (root first) is mounted, "" at the root."""
    prefix = ""
    for parent, child in itertools.pairwise(apps):
        for resource in parent.router.resources():
            info = resource.get_info()
            if info.get("app") is child:
                prefix += str(info["prefix"])
    return prefix


@web.middleware
async def _log_scope(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Every line logged while serving a request names its client (collab.logs); the
    # handlers add the document once they have read its name.
    with logs.context(peer=ws.peer_address(request)):
        return await handler(request)


@web.middleware
async def _room_upgrades(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Any path under the prefix can be a room ("healthz" included), so WebSocket upgrades
    # are dispatched before routing; plain HTTP requests go to the routes.
    if ws.is_room_request(request):
        return await ws.handle(request)
    return await handler(request)


async def _lock(app: web.Application) -> AsyncIterator[None]:
    # Before the store opens: a second server, or a CLI command, must not write under us.
    db = app[SETTINGS].db
    assert isinstance(db, Path)
    lock = DatabaseLock.acquire(db, shared=bool(app[SETTINGS].redis), role="server")
    app[LOCK] = lock
    yield
    lock.release()


async def _store(app: web.Application, given: Store | None) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store: Store = given or await open_store(
        settings.db, sync=settings.db_sync, shared=bool(settings.redis)
    )
    app[STORE] = store
    checks: dict[str, Callable[[], Awaitable[None]]] = {"database": store.ping}
    app[CHECKS] = checks
    ready: dict[str, Callable[[], Awaitable[None]]] = {"database": store.writable}
    app[READY] = ready
    yield
    await store.close()


async def _rooms(app: web.Application) -> AsyncIterator[None]:
    document.warm_up()
    bus = await open_bus(app[SETTINGS], app[METRICS])
    if bus is not None:
        app[CHECKS]["redis"] = app[READY]["redis"] = bus.ping
    try:
        async with (
            open_webhooks(app[STORE], app[SETTINGS], bus, app[METRICS]) as webhooks,
            open_documents(app[STORE], app[SETTINGS], bus, app[METRICS], webhooks) as documents,
        ):
            commits: Callable[[], Awaitable[None]] = partial(_commits, documents.rooms.journal)
            app[READY]["commits"] = commits
            app[ROOMS] = documents.rooms
            app[DOCUMENTS] = documents
            guard = Guard(app[SETTINGS], app[STORE], documents.rooms)
            if bus is not None:
                guard.announce = bus.publish_revoked
                bus.on_revoked = guard.revoked_elsewhere
                bus.on_missed.append(guard.revoked_elsewhere)
            await guard.load()
            app[GUARD] = guard
            yield
    finally:
        if bus is not None:
            await bus.close()


async def _retention(app: web.Application) -> AsyncIterator[None]:
    every = app[SETTINGS].retention_seconds
    task = (
        asyncio.create_task(_thin_forever(app[DOCUMENTS], every, app[METRICS]))
        if every > 0
        else None
    )
    yield
    if task is not None:
        task.cancel()
        await asyncio.wait([task])


async def _thin_forever(documents: Documents, every: float, metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(every)
        metrics.retention_runs += 1
        try:
            if deleted := await documents.thin():
                metrics.retention_deleted_versions += deleted
                log.info("retention: deleted %d versions", deleted)
        except CollabError as exc:
            metrics.retention_failures += 1
            log.error("retention failed, will try again: %s", exc)


async def _commits(journal: Journal) -> None:
    if journal.failing is not None:
        raise StoreError(f"commits are failing: {journal.failing}")


async def _metrics_apart(app: web.Application) -> AsyncIterator[None]:
    """Serve /metrics alone at --metrics-listen, with no token asked: a private address
    for a scraper."""
    host, port = parse_address(app[SETTINGS].metrics_listen)
    apart = web.Application()
    apart[REGISTRY] = app[REGISTRY]
    apart.router.add_get("/metrics", api.metrics_apart)
    runner = web.AppRunner(apart, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("metrics also at http://%s:%d/metrics", host, port)
        yield
    finally:
        await runner.cleanup()


async def _loop_lag(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[METRICS].tick_forever(), name="event loop lag")
    yield
    task.cancel()
    await asyncio.wait([task])


async def _close_connections(app: web.Application) -> None:
    app[STOPPING].set()
    app[ROOMS].close_peers(CLOSE_GOING_AWAY, "server shutting down")
    closing = [
        ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down") for ws in app[LOOSE]
    ]
    if closing:
        await asyncio.gather(*closing, return_exceptions=True)


async def start(settings: Settings, store: Store | None = None) -> tuple[web.AppRunner, int]:
    """Start serving `settings`; return the runner (for `cleanup()`) and the bound port."""
    runner = web.AppRunner(
        create_app(settings, store),
        shutdown_timeout=settings.shutdown_seconds,
        handle_signals=False,
        access_log=None,
    )
    try:
        await runner.setup()
    except BaseException:
        # The parts that did start (the lock, the store and its threads) stop again, or
        # the process would not exit after saying why it cannot serve.
        await runner.app.cleanup()
        raise
    site = web.TCPSite(runner, settings.host, settings.port, backlog=settings.listen_backlog)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1])
    if LOCK in runner.app:
        runner.app[LOCK].publish(pid=os.getpid(), role="server", url=_local_url(settings, port))
    return runner, port


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _local_url(settings: Settings, port: int) -> str:
    """Where a process on this machine reaches the server."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


async def serve(settings: Settings, store: Store | None = None) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    # What start-up made lives as long as the process: keep it out of the collector's
    # full passes, which otherwise stall the event loop (measured: 36-59 ms pauses with a
    # thousand connections open, 22-29 ms frozen). Before listening: the collection
    # itself takes about 20 ms.
    gc.collect()
    gc.freeze()
    runner, port = await start(settings, store)
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    log.info(
        "collab %s serving documents at ws://%s:%d%s<name> (database %s)",
        __version__,
        host,
        port,
        settings.room_prefix,
        describe_db(settings.db.resolve() if isinstance(settings.db, Path) else settings.db),
    )
    if settings.auth == "open" and settings.authorizer is None and not _loopback(settings.host):
        log.warning(
            "*** --auth open on %s: ANYONE who can reach this address can read, change and "
            "delete every document. Use --auth token (or an authorizer) outside a trusted "
            "network. ***",
            settings.host,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        runner.app[STOPPING].set()  # /readyz says so from now on
        if settings.drain_seconds > 0:
            log.info("draining for %.1f s (/readyz answers 503)", settings.drain_seconds)
            await asyncio.sleep(settings.drain_seconds)
        log.info("shutting down")
    finally:
        await runner.cleanup()
        log.info("stopped")


def run(main: Coroutine[Any, Any, None], event_loop: EventLoop) -> None:
    """Run `main` to the end on the event loop `event_loop` names.

    Raises:
        CollabError: uvloop was asked for and is not installed.
    """
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if event_loop != "asyncio":
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            if event_loop == "uvloop":
                main.close()
                raise CollabError(
                    "--event-loop uvloop: uvloop is not installed (pip install 'collab[uvloop]')"
                ) from None
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)
