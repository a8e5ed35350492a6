"""Hooks: what an app that embeds collab is told, as documents load, change, get versions,
are restored or deleted, and as clients connect and leave; and the runner that calls them.

A hook is an async function of one event. Rooms and the journal hand events to the
`HookRunner` synchronously and go on: calls run on the runner's own tasks, one lane at a
time in order, each bounded by `--hook-timeout`, so a hook that raises or hangs is logged
and counted and never holds up a room, a commit or a relay. Hooks are shown only what
is committed. Only `on_load` is awaited (bounded too): it may seed a new document before
anyone sees it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from collab.metrics import Metrics
from collab.store import Version

if TYPE_CHECKING:  # documents imports the rooms, which import this
    import pycrdt

    from collab.documents import Documents

log = logging.getLogger(__name__)

MAX_CHANGES = 100_000  # changes waiting for on_change; past it the oldest are dropped
_MAX_CALLS = 10_000  # calls waiting in one lane; past it the oldest are dropped


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made an update: a client's connection, or the server (`by` says what: `api`,
    `restore`, `replace`, `load`, or what an app's in-process edit names)."""

    kind: Literal["client", "server"]
    by: str  # the client's address, or what in the server made it
    subject: str | None = None  # the subject of the client's token, if it had one


@dataclass(frozen=True, slots=True)
class Change:
    """One committed update of `doc`, at `offset` of its log."""

    doc: str
    offset: int
    update: bytes
    origin: Origin


@dataclass(frozen=True, slots=True)
class Loaded:
    """`doc` is loaded; `new`: it holds nothing yet (in a cluster only one server is told
    so). `edit()` changes it, as `Documents.edit` does, before any client sees it."""

    doc: str
    new: bool
    edit: Callable[[], AbstractAsyncContextManager[pycrdt.Doc[Any]]]


@dataclass(frozen=True, slots=True)
class Settled:
    """`doc` has had no change for `--change-debounce` seconds; its committed content
    reaches `offset` of its log."""

    doc: str
    offset: int


@dataclass(frozen=True, slots=True)
class DocEvent:
    """Something happened to `doc` as a whole (created: its first update is committed;
    deleted)."""

    doc: str


@dataclass(frozen=True, slots=True)
class VersionEvent:
    """A version of `doc` was taken (`version`), or restored (`version`, and `pre_restore`,
    the version kept of the state before)."""

    doc: str
    version: Version
    pre_restore: Version | None = None


@dataclass(frozen=True, slots=True)
class Connection:
    """A client connected to `doc`, or left it (then `close_code` says how)."""

    doc: str
    peer: str  # its address
    access: str  # read, write or admin
    subject: str | None = None
    close_code: int | None = None


@dataclass(frozen=True, slots=True)
class Stateless:
    """A Hocuspocus client sent `payload` (its `sendStateless`) on `doc`; `reply` sends a
    stateless message back to that connection's document (`Documents.send_stateless`
    sends one to every Hocuspocus client of a document)."""

    doc: str
    peer: Connection
    payload: str
    reply: Callable[[str], None]


Hook = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Hooks:
    """The hooks an app gives (`--hooks package.module:hooks`, or `Settings(hooks=...)`);
    leave out the ones it does not need. `on_start` gets the server's `Documents`, for
    in-process edits and reads later."""

    on_start: Callable[[Documents], Awaitable[None]] | None = None
    on_load: Callable[[Loaded], Awaitable[None]] | None = None
    on_create: Callable[[DocEvent], Awaitable[None]] | None = None
    on_change: Callable[[Sequence[Change]], Awaitable[None]] | None = None
    on_settled: Callable[[Settled], Awaitable[None]] | None = None
    on_version: Callable[[VersionEvent], Awaitable[None]] | None = None
    on_restore: Callable[[VersionEvent], Awaitable[None]] | None = None
    on_delete: Callable[[DocEvent], Awaitable[None]] | None = None
    on_connect: Callable[[Connection], Awaitable[None]] | None = None
    on_disconnect: Callable[[Connection], Awaitable[None]] | None = None
    on_stateless: Callable[[Stateless], Awaitable[None]] | None = None

    @property
    def names(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


HOOK_NAMES = tuple(f.name for f in fields(Hooks))
# Calls of one lane run one at a time, in order: a client's connect before its disconnect.
_LANES = {"on_connect": "connections", "on_disconnect": "connections"}


def load_hooks(path: str) -> Hooks:
    """`package.module:name` -> the `Hooks` it names (the CLI's way to give hooks).

    Raises:
        ValueError: it cannot be found, or is not a `Hooks`.
    """
    module_name, _, attribute = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot load hooks {path!r}: {exc}") from exc
    if not isinstance(found, Hooks):
        raise ValueError(f"hooks {path!r} is a {type(found).__name__}, not a collab.hooks.Hooks")
    return found


class HookRunner:
    """Calls a server's hooks (each subscriber's: the app's, and the webhooks') off the
    path of rooms and commits. Made by `open_documents`; its methods never block."""

    def __init__(
        self,
        subscribers: Sequence[Hooks],
        *,
        timeout: float,
        debounce: float,
        metrics: Metrics,
    ) -> None:
        self._subscribers = [hooks for hooks in subscribers if hooks.names]
        self._timeout = timeout
        self._debounce = debounce
        self._metrics = metrics
        self.wants_changes = self.wants("on_change")
        self.wants_settled = self.wants("on_settled")
        self._lanes: dict[tuple[int, str], deque[tuple[str, Hook, Any]]] = {}
        self._changes: dict[int, deque[Change]] = {}
        self._tasks: dict[tuple[int, str], asyncio.Task[None]] = {}
        # Debounce, per document: the newest offset, whether this server committed it,
        # when it came, and the timer that checks for a pause.
        self._touched: dict[str, tuple[int, bool, float]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def wants(self, name: str) -> bool:
        """Whether some subscriber has hook `name`."""
        return any(getattr(hooks, name) is not None for hooks in self._subscribers)

    # --- what rooms and operations call, synchronously

    def call(self, name: str, event: Any) -> None:
        """Call hook `name` of every subscriber with `event`, in its lane."""
        for index, hooks in enumerate(self._subscribers):
            hook = getattr(hooks, name)
            if hook is not None and not self._closed:
                lane = self._lanes.setdefault((index, _LANES.get(name, "documents")), deque())
                if len(lane) >= _MAX_CALLS:
                    dropped, _, _ = lane.popleft()
                    self._dropped(dropped)
                lane.append((name, hook, event))
                self._run((index, _LANES.get(name, "documents")))

    def changed(self, changes: Sequence[Change]) -> None:
        """Updates this server committed: for `on_change`, and they restart the pause."""
        if self.wants_changes and not self._closed:
            for index, hooks in enumerate(self._subscribers):
                if hooks.on_change is not None:
                    waiting = self._changes.setdefault(index, deque())
                    waiting.extend(changes)
                    while len(waiting) > MAX_CHANGES:
                        waiting.popleft()
                        self._dropped("on_change")
                    self._run((index, "changes"))
        if changes:
            last = changes[-1]
            self.touched(last.doc, last.offset, mine=True)

    def touched(self, doc: str, offset: int, *, mine: bool) -> None:
        """`doc` reached `offset` (by this server's commit, or another's): `on_settled`
        fires once it pauses, on the server whose update was the last."""
        if not self.wants_settled or self._closed:
            return
        known = self._touched.get(doc)
        if known is not None and known[0] > offset:
            return  # an older update heard late changes nothing
        self._touched[doc] = (offset, mine, time.monotonic())
        if doc not in self._timers:
            self._arm(doc, self._debounce)

    def forget(self, doc: str) -> None:
        """`doc` is deleted: no pause of it is waited for."""
        self._touched.pop(doc, None)
        if timer := self._timers.pop(doc, None):
            timer.cancel()

    async def load(self, event: Loaded) -> None:
        """Run every `on_load` hook now, each bounded; what fails is logged."""
        for hooks in self._subscribers:
            if hooks.on_load is not None:
                await self._call_one("on_load", hooks.on_load, event)

    async def start(self, documents: Documents) -> None:
        for hooks in self._subscribers:
            if hooks.on_start is not None:
                await self._call_one("on_start", hooks.on_start, documents)

    # --- the runner's own work

    def _arm(self, doc: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timers[doc] = loop.call_later(delay, self._check_pause, doc)

    def _check_pause(self, doc: str) -> None:
        del self._timers[doc]
        offset, mine, at = self._touched[doc]
        left = at + self._debounce - time.monotonic()
        if left > 0:
            self._arm(doc, left)  # edits went on: one timer per document, re-armed late
            return
        del self._touched[doc]
        if mine:
            self.call("on_settled", Settled(doc, offset))

    def _run(self, key: tuple[int, str]) -> None:
        if key not in self._tasks:
            task = asyncio.get_running_loop().create_task(self._drain(key), name=f"hooks {key}")
            self._tasks[key] = task

    async def _drain(self, key: tuple[int, str]) -> None:
        index, lane = key
        try:
            if lane == "changes":
                waiting = self._changes[index]
                hook = self._subscribers[index].on_change
                assert hook is not None
                while waiting:
                    batch = list(waiting)
                    waiting.clear()
                    await self._call_one("on_change", hook, batch)
            else:
                calls = self._lanes[key]
                while calls:
                    name, call, event = calls.popleft()
                    await self._call_one(name, call, event)
        finally:
            del self._tasks[key]

    async def _call_one(
        self, name: str, hook: Callable[[Any], Awaitable[None]], event: Any
    ) -> None:
        result = "ok"
        try:
            async with asyncio.timeout(self._timeout):
                await hook(event)
        except TimeoutError:
            result = "timeout"
            log.error("hook %s took more than %.1f s: cancelled", name, self._timeout)
        except Exception:
            result = "error"
            log.exception("hook %s failed", name)
        self._metrics.hook_calls[(name, result)] += 1

    def _dropped(self, name: str) -> None:
        self._metrics.hook_dropped[name] += 1
        if self._metrics.hook_dropped[name] in (1, 10, 100) or not (
            self._metrics.hook_dropped[name] % 1000
        ):
            log.warning(
                "hook %s falls behind: %d calls dropped so far",
                name,
                self._metrics.hook_dropped[name],
            )

    async def close(self, wait: float) -> None:
        """Fire the pauses still waited for, let what is queued run for up to `wait`
        seconds, then cancel the rest."""
        for doc in list(self._timers):
            self._timers.pop(doc).cancel()
            offset, mine, _ = self._touched.pop(doc)
            if mine:
                self.call("on_settled", Settled(doc, offset))
        self._closed = True
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=wait)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d hook lanes still busy at shutdown: cancelled", len(pending))
                await asyncio.wait(pending)
