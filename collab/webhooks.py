"""Webhooks: the documents' events, recorded in the store's outbox (one delivery per
endpoint) before the operation that caused them answers, and sent from there by
collab/delivery.py. This module decides what an event says; it sends nothing itself.

    document.created   data: doc
    document.changed   data: doc, offset (the log offset of the content it reflects)
    document.deleted   data: doc
    version.created    data: doc, version (as the API shows it)
    version.restored   data: doc, version, pre_restore
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from collab.config import Settings
from collab.hooks import DocEvent, Hooks, Settled, VersionEvent
from collab.metrics import Metrics
from collab.store import Outbox, iso_time

if TYPE_CHECKING:  # aiohttp's and maybe the cluster extra's: imported when one is made
    from collab.delivery import Leases, Sender

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "document.created",
    "document.changed",
    "document.deleted",
    "version.created",
    "version.restored",
)


def event_body(type: str, doc: str, data: Mapping[str, Any], at: float) -> str:
    """The JSON an event is sent as: `{"type", "timestamp", "data": {"doc", ...}}`."""
    payload = {"type": type, "timestamp": iso_time(at), "data": {"doc": doc, **data}}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def new_event_id() -> str:
    """A webhook-id: unique per event, the same for each endpoint and every retry."""
    return "msg_" + uuid.uuid4().hex


class Webhooks:
    """The events of one server (or command), to every endpoint of `settings.webhook`."""

    def __init__(self, outbox: Outbox, settings: Settings, sender: Sender | None = None) -> None:
        self._outbox = outbox
        self._endpoints = settings.webhook
        self._sender = sender

    @property
    def sender(self) -> Sender | None:
        """What sends the events from this server's outbox (None for a command)."""
        return self._sender

    async def emit(self, type: str, doc: str, data: Mapping[str, Any]) -> None:
        """Record an event of `doc`; it is durable in the outbox when this returns.

        Raises:
            ValueError: `type` is not one of EVENT_TYPES.
            StoreError: it could not be stored.
        """
        await self._record(type, doc, data)

    async def changed(self, doc: str, offset: int) -> None:
        """Record document.changed for the content of `doc` committed up to `offset`,
        unless one for `offset` or later was recorded already, or `doc` is gone.

        Raises:
            StoreError: it could not be stored.
        """
        await self._record("document.changed", doc, {"offset": offset}, changed_to=offset)

    def hooks(self) -> Hooks:
        """What the rooms' hooks tell the endpoints: a document's first commit, its
        pauses, and automatic versions (the operations record the rest themselves,
        before they answer)."""
        return Hooks(on_create=self._created, on_settled=self._settled, on_version=self._version)

    async def _created(self, event: DocEvent) -> None:
        await self.emit("document.created", event.doc, {})

    async def _settled(self, event: Settled) -> None:
        await self.changed(event.doc, event.offset)

    async def _version(self, event: VersionEvent) -> None:
        if event.version.kind == "auto":  # named ones: Documents.take_version records
            await self.emit("version.created", event.doc, {"version": event.version.as_json()})

    async def _record(
        self, type: str, doc: str, data: Mapping[str, Any], *, changed_to: int | None = None
    ) -> None:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown webhook event type {type!r}")
        body = event_body(type, doc, data, time.time())
        event_id = new_event_id()
        added = await self._outbox.add_event(
            self._endpoints, doc, event_id, body, changed_to=changed_to
        )
        if added:
            log.debug("webhook %s %s of %s recorded", event_id, type, doc)
            if self._sender is not None:
                self._sender.wake()


@asynccontextmanager
async def open_webhooks(
    outbox: Outbox, settings: Settings, bus: Leases | None, metrics: Metrics
) -> AsyncIterator[Webhooks | None]:
    """A server's webhooks and their sender (None without `settings.webhook`); the
    sender runs until exit, on this server or, in a cluster, on whichever holds the
    lease."""
    if not settings.webhook:
        yield None
        return
    from collab.delivery import Sender

    sender = Sender(outbox, settings, metrics, bus)
    webhooks = Webhooks(outbox, settings, sender)
    sender.start(webhooks.changed)
    try:
        yield webhooks
    finally:
        await sender.close()
