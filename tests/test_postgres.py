"""PostgresStore on a real PostgreSQL (COLLAB_TEST_POSTGRES, a fresh database per test),
what is its own: migrations under several nodes, and several nodes writing one document.
(What every store keeps is in test_store.py.)"""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from collab.errors import StoreError
from collab.store.postgres import MIGRATIONS, PostgresStore


async def query(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_fresh_database_is_created_at_the_newest_schema(postgres_url: str) -> None:
    await (await PostgresStore.open(postgres_url)).close()
    assert await query(postgres_url, "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]


async def test_database_from_a_newer_collab_is_refused(postgres_url: str) -> None:
    await (await PostgresStore.open(postgres_url)).close()
    await query(postgres_url, "UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        await PostgresStore.open(postgres_url)


async def test_nodes_opening_a_fresh_database_at_once_migrate_it_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(postgres_url) for _ in range(3)))
    for store in stores:
        await store.close()
    assert await query(postgres_url, "SELECT version FROM schema_version") == [(len(MIGRATIONS),)]


async def test_unreachable_database_raises_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open database"):
        await PostgresStore.open("postgresql://root@127.0.0.1:1/test")


async def test_two_nodes_appending_to_one_document_get_every_offset_once(postgres_url: str) -> None:
    """Two pools, as two nodes: offsets are given in the committing transactions, so
    batches naming the same documents in either order neither skip, repeat nor deadlock."""
    one, two = await PostgresStore.open(postgres_url), await PostgresStore.open(postgres_url)
    sent = [(store, b"%d" % i) for i in range(100) for store in (one, two)]
    batches = [
        {"a": [update], "b": [update]} if i % 2 else {"b": [update], "a": [update]}
        for i, (_, update) in enumerate(sent)
    ]
    results = await asyncio.gather(
        *(store.append(batch) for (store, _), batch in zip(sent, batches, strict=True))
    )
    for doc in ("a", "b"):
        assert sorted(r[doc] for r in results) == list(range(1, 201))
        by_offset = dict(await one.read(doc, 0))
        assert [by_offset[r[doc]] for r in results] == [update for _, update in sent]
    assert sum(d.update_count for d in await two.docs()) == 400
    await one.close()
    await two.close()
