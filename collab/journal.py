"""Journal: the commit pipeline, the one place durability lives. Rooms hand it updates
synchronously; it commits what every document has waiting in one store call (a group
commit across documents), retries with backoff while the store fails, tells each room
once its updates are committed, wakes whoever waits for a flush, and takes automatic
versions when the policy says they are due.

A room never awaits it: `Ledger.write` and `Ledger.hold` return at once, and the
journal calls `Source.committed` back, in order, when what was handed over is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from collab.config import Settings
from collab.errors import StoreError
from collab.hooks import HookRunner, VersionEvent
from collab.metrics import Metrics
from collab.store import DocumentLog, StoredDoc, Version, VersionKind

log = logging.getLogger(__name__)

P = TypeVar("P")

_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0  # seconds between two tries of a failing commit
_VERSION_RETRY = 5.0  # seconds before an automatic version that failed is tried again
_LEASE_MIN = 30.0  # seconds a server holds a document's versions at least
# A commit this soon after the last waits this many turns of the event loop for company.
# Measured (S1, 200 readers, maximum rate, shared harness): committing at once cost 18 %
# more server CPU per update than the thread-based store did; one turn, 8,062-8,207
# updates/s at 59 % CPU; two turns, 8,281-8,539/s at 51 %, as before the redesign.
# A steady 200 updates/s never waits (its commits are 5 ms apart).
_BUSY_SECONDS = 0.001
_BUSY_TURNS = 2


def version_due(
    updates: int,
    first_at: float | None,
    *,
    every_updates: int,
    every_seconds: float,
    not_before: float = 0.0,
) -> float | None:
    """When the next automatic version falls due (a time on the monotonic clock, maybe
    already past), given `updates` committed since the last one, the first of them at
    `first_at`, and no earlier than `not_before` (after a failure). None when there is
    nothing a version would add.

    >>> version_due(0, None, every_updates=1000, every_seconds=60.0) is None
    True
    >>> version_due(1000, 5.0, every_updates=1000, every_seconds=60.0)
    5.0
    >>> version_due(3, 5.0, every_updates=1000, every_seconds=60.0)
    65.0
    >>> version_due(1000, 5.0, every_updates=1000, every_seconds=60.0, not_before=9.0)
    9.0
    """
    if not updates or first_at is None:
        return None
    due = first_at if updates >= every_updates else first_at + every_seconds
    return max(due, not_before)


class Publisher(Protocol):
    """Where committed updates are announced to other servers, and which server takes a
    document's automatic versions (collab/bus.py)."""

    def publish(self, doc: str, first: int, updates: list[bytes]) -> None:
        """Updates of `doc` committed at offsets first, first + 1..."""
        ...

    async def lease(self, doc: str, seconds: float) -> bool:
        """Whether this server may take `doc`'s automatic versions for `seconds` (it
        holds the lease, or has just taken it)."""
        ...


class Source(Protocol[P]):
    """The document a ledger keeps (a Room)."""

    name: str

    def state(self) -> bytes:
        """The full state now, every update written to the ledger included."""
        ...

    def committed(self, payloads: list[P], reached: int | None) -> None:
        """What was written or held with these payloads is now durable, in this order;
        the last update written reached offset `reached` of the log (None: no update, or
        the store did not say)."""
        ...

    def catch_up(self, updates: list[tuple[int, bytes]]) -> None:
        """Updates another writer committed to this document's log, with their offsets:
        apply them and call `Ledger.seen` for each one taken."""
        ...


@dataclass(slots=True)
class _Entry(Generic[P]):
    update: bytes | None  # None: a hold, released with the writes before it
    payload: P


class Ledger(Generic[P]):
    """One document's account in the journal: what is written but not yet committed,
    the offset of the log its state covers, its size, and what the next version needs.
    Create with `Journal.open`."""

    def __init__(self, journal: Journal, source: Source[P], stored: StoredDoc) -> None:
        self._journal = journal
        self._source = source
        self.name = source.name
        self._entries: list[_Entry[P]] = []
        self._written = 0  # updates handed over ...
        self._durable = 0  # ... of which committed
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Offsets: every update up to `offset` is in the state; some after it may be too.
        self.offset = stored.end
        self._ahead: set[int] = set()
        # Bytes the document takes, for its quota: the version it loaded from plus the
        # updates since, which overstates it (updates repeat what they share) but never
        # misses.
        self.size = len(stored.state or b"") + sum(len(update) for update in stored.updates)
        self._unversioned = len(stored.updates)
        self._first_unversioned: float | None = time.monotonic() if stored.updates else None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        self._versioning: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._closing = False
        self._discarded = False
        self._schedule_version()

    def __repr__(self) -> str:
        return f"<Ledger {self.name!r} written={self._written} durable={self._durable}>"

    # --- what a room calls, synchronously

    def write(self, update: bytes, payload: P) -> None:
        """Commit `update`; `payload` goes back to the room once it is durable."""
        self._entries.append(_Entry(update, payload))
        self._written += 1
        self.size += len(update)
        self._journal._dirty(self)

    def hold(self, payload: P) -> bool:
        """Give `payload` back once every update written so far is durable; False, doing
        nothing, if they already are (the caller then acts at once)."""
        if self._durable == self._written:
            return False
        self._entries.append(_Entry(None, payload))
        return True

    def seen(self, offset: int, size: int) -> None:
        """An update committed by another writer (at `offset`, `size` bytes) is applied."""
        self._cover(offset, offset)
        self.size += size
        self._count_unversioned(1)

    async def read_log(self) -> bool:
        """Read what the log has past the offset the state covers (another writer
        committed it) and hand it to the source. Returns whether there was any.

        Raises:
            StoreError: the log cannot be read.
        """
        entries = await self._journal.log.read(self.name, self.offset)
        if self._closing or not entries:
            return False
        first = entries[0][0]
        if first > self.offset + 1:
            # The log below its first entry is pruned: that entry is the state of a
            # version, which holds every update up to its offset.
            self._ahead.discard(first)
            self._ahead.update(range(self.offset + 1, first))
            self._cover(self.offset + 1, self.offset)
        news = [(offset, update) for offset, update in entries if not self.holds(offset)]
        if news:
            metrics = self._journal.metrics
            metrics.catch_ups += 1
            metrics.catch_up_updates += len(news)
            self._source.catch_up(news)
        return bool(news)

    def holds(self, offset: int) -> bool:
        """Whether the update at `offset` is applied already."""
        return offset <= self.offset or offset in self._ahead

    def assume_size(self, size: int) -> None:
        """Count the document at `size` bytes until the next version (after a restore,
        whose copy would otherwise count twice)."""
        self.size = size

    @property
    def committed(self) -> bool:
        """Whether every update written so far is durable."""
        return self._durable == self._written

    @property
    def needs_version(self) -> bool:
        """Whether some committed update is in no version yet."""
        return self._unversioned > 0

    # --- waiting, versions, the end

    async def flush(self) -> None:
        """Return when every update written so far is committed."""
        if self._durable >= self._written:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((self._written, future))
        await future

    async def save_version(self, kind: VersionKind = "auto", label: str | None = None) -> Version:
        """Commit what is written, then store the state as a version; the log it
        covers is pruned.

        Raises:
            StoreError
        """
        await self.flush()
        started = time.perf_counter()
        counted, size_then, offset = self._unversioned, self.size, self.offset
        state = self._source.state()
        metrics = self._journal.metrics
        # No await between reading the offset and the state: the state holds every
        # update up to that offset (and maybe more, harmlessly).
        try:
            version = await self._journal.log.save_version(
                self.name, state, offset, kind=kind, label=label
            )
        except StoreError:
            metrics.store_errors["version"] += 1
            raise
        metrics.versions[kind] += 1
        metrics.version_seconds.observe(time.perf_counter() - started)
        if hooks := self._journal.hooks:
            hooks.call("on_version", VersionEvent(self.name, version))
        self.size = len(state) + self.size - size_then
        self._unversioned -= counted
        self._first_unversioned = time.monotonic() if self._unversioned else None
        self._schedule_version()
        log.debug("%s: version %d (%d bytes)", self.name, version.id, version.size)
        return version

    async def close(self) -> None:
        """Commit everything, store a version if anything is in none, stop.

        Raises:
            StoreError: something could not be saved; the ledger keeps it, and a later
                `close` tries again.
        """
        await self.flush()
        if self._versioning is not None:
            # Shielded: a caller's timeout must not kill a version being written.
            await asyncio.shield(self._versioning)
        if self.needs_version:
            await self.save_version()
        self._closing = True
        self._cancel_timer()

    async def discard(self) -> None:
        """Stop, committing nothing more (the document is being deleted). A commit in
        flight still completes; the caller deletes after it."""
        self._closing = self._discarded = True
        self._entries.clear()
        self._written = self._durable
        self._cancel_timer()
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()
        self._journal._forget(self)
        if self._versioning is not None:
            self._versioning.cancel()
            await asyncio.wait([self._versioning])

    # --- what the journal calls

    def _take(self) -> tuple[int, list[bytes]]:
        """The entries to commit now (how many) and their updates."""
        return len(self._entries), [e.update for e in self._entries if e.update is not None]

    def _committed(self, taken: int, updates: int, reached: int | None) -> None:
        # Holds that came while the commit was in flight wait for nothing more, unless a
        # write came before them: release them with it (found: a joiner's answer, held
        # behind a commit that had already been taken, waited forever).
        while taken < len(self._entries) and self._entries[taken].update is None:
            taken += 1
        entries, self._entries = self._entries[:taken], self._entries[taken:]
        self._durable += updates
        if reached is not None:
            self._cover(reached - updates + 1, reached)
        self._count_unversioned(updates)
        try:
            self._source.committed([entry.payload for entry in entries], reached)
        finally:
            waiting, self._waiters = self._waiters, []
            for target, future in waiting:
                if target > self._durable:
                    self._waiters.append((target, future))
                elif not future.done():
                    future.set_result(None)

    def _cover(self, first: int, last: int) -> None:
        if first > self.offset + 1:
            # Another writer's updates lie between: the state lacks them until they are
            # read, and a version must not claim to cover them.
            self._ahead.update(range(first, last + 1))
            self._journal._catch_up(self)
            return
        self.offset = max(self.offset, last)
        while self.offset + 1 in self._ahead:
            self._ahead.discard(self.offset + 1)
            self.offset += 1

    def _count_unversioned(self, count: int) -> None:
        if count:
            self._unversioned += count
            if self._first_unversioned is None:
                self._first_unversioned = time.monotonic()
            self._schedule_version()

    def _schedule_version(self) -> None:
        if self._closing or self._versioning is not None:
            return
        settings = self._journal.settings
        due = version_due(
            self._unversioned,
            self._first_unversioned,
            every_updates=settings.version_updates,
            every_seconds=settings.version_seconds,
            not_before=self._retry_at,
        )
        if self._timer is not None and due == self._timer_due:
            return  # as after most commits: the same time (no timer churn per commit)
        self._cancel_timer()
        if due is None:
            return
        delay = due - time.monotonic()
        if delay > 0:
            self._timer = asyncio.get_running_loop().call_later(delay, self._version_timer)
            self._timer_due = due
        else:
            self._versioning = asyncio.create_task(
                self._auto_version(), name=f"version {self.name}"
            )

    async def _auto_version(self) -> None:
        try:
            if await self._journal.may_version(self.name):
                await self.save_version()
            else:
                # Another server of the cluster takes this document's versions: what is
                # counted here is its to cover (it counts the same updates).
                self._unversioned = 0
                self._first_unversioned = None
        except StoreError as exc:
            log.error("%s: automatic version failed, will retry: %s", self.name, exc)
            self._retry_at = time.monotonic() + _VERSION_RETRY
        finally:
            self._versioning = None
        self._schedule_version()

    def _version_timer(self) -> None:
        self._timer = None
        self._schedule_version()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Journal:
    """The commit pipeline of every document of one server."""

    def __init__(
        self,
        log: DocumentLog,
        settings: Settings,
        bus: Publisher | None = None,
        metrics: Metrics | None = None,
        hooks: HookRunner | None = None,
    ) -> None:
        self.log = log
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.hooks = hooks  # told of what rooms commit and of every version
        self._bus = bus
        self._waiting: dict[Ledger[Any], None] = {}  # with writes to commit, in order
        self._wakeup = asyncio.Event()
        self._catching_up: dict[Ledger[Any], asyncio.Task[None]] = {}
        self._committed_at = 0.0  # when the last commit ended (the loop's clock)
        self.failing: str | None = None  # why the last commit failed, until one succeeds
        self._committer = asyncio.create_task(self._commit_forever(), name="journal")
        self._closed = False

    async def may_version(self, doc: str) -> bool:
        """Whether this server takes `doc`'s automatic versions: alone, always; in a
        cluster, the one holding its lease. The lease outlasts two version periods, so
        its holder keeps it by using it; if the holder is gone another takes over. A
        former holder that wakes from a pause can only add a redundant version: a
        version prunes only the log its own state covers."""
        if self._bus is None:
            return True
        return await self._bus.lease(doc, max(_LEASE_MIN, 2 * self.settings.version_seconds))

    def open(self, source: Source[P], stored: StoredDoc) -> Ledger[P]:
        """A ledger for `source`, loaded as `stored`."""
        return Ledger(self, source, stored)

    def _dirty(self, ledger: Ledger[P]) -> None:
        self._waiting[ledger] = None
        self._wakeup.set()

    def _forget(self, ledger: Ledger[P]) -> None:
        self._waiting.pop(ledger, None)
        if task := self._catching_up.pop(ledger, None):
            task.cancel()

    async def _commit_forever(self) -> None:
        delay = _RETRY_FIRST
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if loop.time() - self._committed_at < _BUSY_SECONDS:
                # Updates are streaming in: let the readers of the next turns add theirs,
                # so that one commit and one frame per peer carry more of them.
                for _ in range(_BUSY_TURNS):
                    await asyncio.sleep(0)
            self._wakeup.clear()
            while self._waiting:
                ok = await self._commit_waiting()
                self._committed_at = loop.time()
                if ok:
                    delay = _RETRY_FIRST
                elif self._closed:
                    # Rooms gave up saving (their close timed out): what is left was
                    # never relayed to anyone, so nothing anyone saw is lost.
                    return
                else:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX)
            if self._closed:
                return

    async def _commit_waiting(self) -> bool:
        """Commit what every waiting ledger holds, in one store call; False if it failed
        (everything stays waiting, to be tried again with what came meanwhile)."""
        ledgers = list(self._waiting)
        self._waiting.clear()
        taken = {ledger: ledger._take() for ledger in ledgers}
        batch = {ledger.name: updates for ledger, (_, updates) in taken.items() if updates}
        total = sum(len(updates) for updates in batch.values())
        metrics = self.metrics
        started = time.perf_counter()
        try:
            reached = await self.log.append(batch) if batch else {}
        # Not only StoreError: whatever fails, this task must live on, or every room's
        # next update would wait forever.
        except Exception as exc:  # noqa: BLE001
            metrics.store_errors["commit"] += 1
            metrics.commit_retries += 1
            self.failing = str(exc) or type(exc).__name__
            log.error(
                "%d updates of %d documents not stored yet, retrying: %s", total, len(batch), exc
            )
            self._waiting = {
                **{ledger: None for ledger in ledgers if not ledger._discarded},
                **self._waiting,
            }
            return False
        self.failing = None
        if batch:
            metrics.commit_seconds.observe(time.perf_counter() - started)
            metrics.commit_updates.observe(total)
        for ledger, (count, updates) in taken.items():
            if ledger._discarded:
                continue
            offset = reached.get(ledger.name)
            try:
                ledger._committed(count, len(updates), offset)
            except Exception:  # a room's bug must not stop every other room's commits
                log.exception("%s: relaying committed updates failed", ledger.name)
            if self._bus is not None and updates and offset is not None:
                self._bus.publish(ledger.name, offset - len(updates) + 1, updates)
        return True

    def _catch_up(self, ledger: Ledger[P]) -> None:
        if ledger not in self._catching_up:
            task = asyncio.create_task(self._read_missing(ledger), name=f"catch up {ledger.name}")
            self._catching_up[ledger] = task

    async def _read_missing(self, ledger: Ledger[P]) -> None:
        try:
            while ledger._ahead and not ledger._closing:
                if not await ledger.read_log():
                    break
        except StoreError as exc:
            self.metrics.store_errors["read"] += 1
            log.error(
                "%s: cannot read the log after offset %d: %s", ledger.name, ledger.offset, exc
            )
        finally:
            self._catching_up.pop(ledger, None)

    async def close(self) -> None:
        """Stop once nothing is waiting (close every ledger first)."""
        self._closed = True
        self._wakeup.set()
        await self._committer
        for task in list(self._catching_up.values()):
            task.cancel()
        if self._catching_up:
            await asyncio.wait(list(self._catching_up.values()))
