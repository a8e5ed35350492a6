"""A document log for tests: a real SQLiteStore seen through `DocumentLog` alone (all a
room, the journal and the registry need), which can be made slow or failing, and counts
what it is asked. Not a mock: every call that is not refused reaches SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from collab.errors import StoreError
from collab.store import StoredDoc, Version, VersionKind
from collab.store.sqlite import SQLiteStore


class TestLog:
    """Args:
    failing_appends / failing_versions: how many of the first appends / versions fail.
    append_delay / load_delay: seconds each append / load takes more, as on a slow disk.
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(
        self,
        inner: SQLiteStore,
        *,
        failing_appends: int = 0,
        failing_versions: int = 0,
        append_delay: float = 0.0,
        load_delay: float = 0.0,
    ) -> None:
        self.inner = inner
        self.failing_appends = failing_appends
        self.failing_versions = failing_versions
        self.append_delay = append_delay
        self.load_delay = load_delay
        self.loads = 0
        self.appends: list[dict[str, int]] = []  # how many updates each call carried

    async def load(self, doc: str) -> StoredDoc:
        self.loads += 1
        if self.load_delay:
            await asyncio.sleep(self.load_delay)
        return await self.inner.load(doc)

    async def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
        self.appends.append({doc: len(updates) for doc, updates in batch.items()})
        if self.append_delay:
            await asyncio.sleep(self.append_delay)
        if self.failing_appends:
            self.failing_appends -= 1
            raise StoreError("disk full")
        return await self.inner.append(batch)

    async def read(self, doc: str, after: int) -> list[tuple[int, bytes]]:
        return await self.inner.read(doc, after)

    async def save_version(
        self,
        doc: str,
        state: bytes,
        offset: int,
        *,
        kind: VersionKind = "auto",
        label: str | None = None,
    ) -> Version:
        if self.failing_versions:
            self.failing_versions -= 1
            raise StoreError("disk full")
        return await self.inner.save_version(doc, state, offset, kind=kind, label=label)
