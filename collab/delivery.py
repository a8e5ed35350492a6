"""Sender: delivers the webhooks' outbox, signed in the Standard Webhooks scheme, as its
own task (it never blocks a room). At least once, in order per endpoint and document
(only the head of each is due), documents in parallel up to a bound, failures retried
with exponential backoff and jitter until the give-up age. In a cluster only the holder
of the bus's "webhooks" lease sends; it also looks for documents changed past their
last document.changed (a node killed before its debounce fired) and announces them.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

import aiohttp
from standardwebhooks import Webhook

from collab.config import Settings
from collab.errors import StoreError
from collab.logs import redact
from collab.metrics import Metrics
from collab.store import Delivery, Outbox

log = logging.getLogger(__name__)

LEASE = "webhooks"
# Another node takes over at most this long after the sender died (its lease expires).
LEASE_SECONDS = 10.0
_RENEW_SECONDS = 2.0
_POLL_SECONDS = 1.0  # events other nodes recorded are sent at most this late
PARALLEL = 16  # deliveries in flight at once: also the rows the sender holds, at most
_SCAN_SECONDS = 10.0  # how often changed documents without their event are looked for
_SCAN_PAGE = 500
_BACKLOG_SECONDS = 5.0  # how often the outbox's depth is read for /metrics


class Leases(Protocol):
    """Who in a cluster sends (collab/bus.py)."""

    async def hold(self, name: str, seconds: float, *, unreachable: bool) -> bool: ...

    async def release(self, name: str) -> None: ...


def retry_delay(attempts: int, first: float, most: float) -> float:
    """The wait after the `attempts`-th failed try: doubling from `first`, capped at
    `most`, its second half random (so endpoints' retries do not come in waves).

    >>> 0.5 <= retry_delay(1, 1.0, 60.0) <= 1.0 and 4.0 <= retry_delay(4, 1.0, 60.0) <= 8.0
    True
    >>> 30.0 <= retry_delay(40, 1.0, 60.0) <= 60.0
    True
    """
    delay = min(most, first * 2.0 ** min(attempts - 1, 64))
    return delay / 2 + random.uniform(0.0, delay / 2)


class Sender:
    """Sends one server's outbox (when it may). `start`, then `close` at shutdown."""

    def __init__(
        self, outbox: Outbox, settings: Settings, metrics: Metrics, bus: Leases | None
    ) -> None:
        self._outbox = outbox
        self._settings = settings
        self._metrics = metrics
        self._bus = bus
        self._signer = Webhook(str(settings.webhook_secret))
        self._wakeup = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._settled: set[int] | None = None  # tries ended while due() is read
        # When the retries this server scheduled fall due (time.time()), the soonest first;
        # past the bound the latest are forgotten (the poll finds them, a second late).
        self._retries: list[float] = []
        self._asked = -LEASE_SECONDS  # when the lease was last asked for (monotonic)
        self._holding = self._bus is None
        self._next_scan = 0.0
        self._next_backlog = 0.0
        # The outbox as last read: its rows, and when the oldest was created.
        self._depth = 0
        self._oldest: float | None = None
        metrics.webhook_outbox_depth = lambda: self._depth
        metrics.webhook_outbox_oldest_seconds = self._oldest_age
        self._task: asyncio.Task[None] | None = None
        self._announce: Callable[[str, int], Awaitable[None]] | None = None

    def start(self, announce: Callable[[str, int], Awaitable[None]]) -> None:
        """Start sending; `announce(doc, offset)` records a document.changed."""
        self._announce = announce
        self._task = asyncio.create_task(self._run(), name="webhook sender")

    @property
    def in_flight(self) -> int:
        """Deliveries being tried now (at most PARALLEL)."""
        return len(self._in_flight)

    def wake(self) -> None:
        """Something was added: look at the outbox now."""
        self._wakeup.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        if self._bus is not None and self._holding:
            await self._bus.release(LEASE)

    def _oldest_age(self) -> float:
        return 0.0 if self._oldest is None else max(0.0, time.time() - self._oldest)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while True:
                    try:
                        if await self._may_send():
                            await self._send_due(session)
                        else:
                            await self._stop_sending()
                    except StoreError as exc:
                        log.error("webhooks: the outbox cannot be read, will try again: %s", exc)
                    except Exception:  # a bug must not stop every later event
                        log.exception("webhooks: the sender failed, will go on")
                    await self._sleep()
            finally:
                await self._stop_sending()

    async def _may_send(self) -> bool:
        """Whether this server sends: alone, always; in a cluster, while it holds the
        lease (renewed every 2 s; not held while Redis cannot be asked)."""
        if self._bus is None:
            return True
        now = time.monotonic()
        if now - self._asked < _RENEW_SECONDS:  # an event recorded here wakes us: no ask
            return self._holding
        self._asked = now
        held = await self._bus.hold(LEASE, LEASE_SECONDS, unreachable=False)
        if held != self._holding:
            log.info("webhooks: %s", "this server sends them now" if held else "another sends")
            self._holding = held
        return held

    async def _stop_sending(self) -> None:
        # The deliveries cut short are due still: whoever sends next tries them again.
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._next_scan = 0.0  # a new holder looks for unannounced changes at once

    async def _send_due(self, session: aiohttp.ClientSession) -> None:
        now = time.time()
        if now >= self._next_scan:
            self._next_scan = now + _SCAN_SECONDS
            await self._announce_quiet(now)
        if now >= self._next_backlog:
            self._next_backlog = now + _BACKLOG_SECONDS
            self._depth, self._oldest = await self._outbox.backlog()
        free = PARALLEL - len(self._in_flight)
        if free <= 0:
            return
        # The heads in flight are due still (until done): ask for that many more. A try
        # that ends while the query runs may be read as it was before: skip it this time
        # (found: a head tried twice at once).
        self._settled = settled = set[int]()
        try:
            due = await self._outbox.due(now, free + len(self._in_flight))
        finally:
            self._settled = None
        for delivery in due:
            if len(self._in_flight) >= PARALLEL:
                break
            if delivery.id not in self._in_flight and delivery.id not in settled:
                task = asyncio.create_task(self._deliver(session, delivery))
                self._in_flight[delivery.id] = task
                task.add_done_callback(partial(self._done, delivery.id))

    def _done(self, delivery_id: int, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("webhooks: delivery %d failed: %r", delivery_id, error, exc_info=error)
        if self._settled is not None:
            self._settled.add(delivery_id)
        self._wakeup.set()  # its document's next event may be due now

    async def _announce_quiet(self, now: float) -> None:
        """Record document.changed for documents changed past their mark and quiet for
        the debounce: changes whose debounce a killed node never fired."""
        found = await self._outbox.unannounced(now - self._settings.change_debounce, _SCAN_PAGE)
        for doc, offset in found:
            assert self._announce is not None  # set by start
            await self._announce(doc, offset)
        if len(found) == _SCAN_PAGE:
            self._next_scan = now  # more: the next page on the next pass

    async def _sleep(self) -> None:
        """Until woken, the next retry scheduled here falls due, or the poll."""
        now, passed = time.time(), False
        while self._retries and self._retries[0] <= now:
            heapq.heappop(self._retries)
            passed = True
        if not passed:
            soonest = self._retries[0] - now if self._retries else _POLL_SECONDS
            wait = min(_POLL_SECONDS, soonest)
            try:
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
        self._wakeup.clear()

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        outcome = await self._post(session, delivery)
        try:
            if isinstance(outcome, int) and 200 <= outcome < 300:
                self._metrics.webhook_deliveries["delivered"] += 1
                await self._outbox.finish(delivery.id)
            elif outcome == 410:
                self._give_up(delivery, "gone", "the endpoint answered 410 Gone")
                await self._outbox.finish(delivery.id)
            else:
                await self._failed(delivery, outcome)
        except StoreError as exc:
            log.error(
                "webhook %s: cannot record its outcome, will send it again: %s",
                delivery.event_id,
                exc,
            )

    async def _post(self, session: aiohttp.ClientSession, delivery: Delivery) -> int | str:
        """The HTTP status the endpoint answered, or why there was none."""
        now = datetime.now(UTC)
        headers = {
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(delivery.event_id, now, delivery.body),
            "content-type": "application/json",
        }
        try:
            async with session.post(
                delivery.endpoint,
                data=delivery.body.encode(),
                headers=headers,
                allow_redirects=False,
            ) as response:
                return response.status
        except TimeoutError:
            return f"no answer within {self._settings.webhook_timeout_seconds} s"
        except aiohttp.ClientError as exc:
            return str(exc) or type(exc).__name__

    async def _failed(self, delivery: Delivery, outcome: int | str) -> None:
        self._metrics.webhook_deliveries["failed"] += 1
        why = f"HTTP {outcome}" if isinstance(outcome, int) else outcome
        now = time.time()
        give_up_at = delivery.created_at + self._settings.webhook_give_up_seconds
        if now >= give_up_at:
            self._give_up(delivery, "age", f"{why}, and it is past the give-up age")
            await self._outbox.finish(delivery.id)
            return
        settings = self._settings
        delay = retry_delay(
            delivery.attempts + 1,
            settings.webhook_retry_seconds,
            settings.webhook_retry_max_seconds,
        )
        at = min(now + delay, give_up_at)  # the last try at the give-up age
        log.warning(
            "webhook %s to %s failed (%s), try %d; again in %.1f s",
            delivery.event_id,
            redact(delivery.endpoint),
            why,
            delivery.attempts + 1,
            at - now,
        )
        await self._outbox.retry(delivery.id, at)
        heapq.heappush(self._retries, at)
        if len(self._retries) > 4 * PARALLEL:
            self._retries = heapq.nsmallest(2 * PARALLEL, self._retries)

    def _give_up(self, delivery: Delivery, reason: str, why: str) -> None:
        self._metrics.webhook_give_ups[reason] += 1
        log.error(
            "webhook %s of %s to %s dropped after %d tries: %s (body %s)",
            delivery.event_id,
            delivery.doc,
            redact(delivery.endpoint),
            delivery.attempts + 1,
            why,
            delivery.body,
        )
