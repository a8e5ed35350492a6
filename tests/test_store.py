"""The behaviour every store keeps (the interfaces of collab/store/__init__.py), on a
real SQLite file and on a real PostgreSQL database: each test runs on both."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from collab.auth import Revocation
from collab.errors import StoreError, VersionNotFound
from collab.store.postgres import PostgresStore
from collab.store.sqlite import SQLiteStore

Opener = Callable[[], Awaitable[Any]]  # opens the test's database (again)


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, db_path: Path) -> Opener:
    if request.param == "sqlite":
        return lambda: SQLiteStore.open(db_path)
    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore.open(url)


async def test_appends_return_the_offsets_they_reach_and_load_in_order(open_store: Opener) -> None:
    store = await open_store()
    assert await store.append({"b": [b"x"], "a": [b"1", b"2"], "c": []}) == {"a": 2, "b": 1}
    assert await store.append({"a": [b"3"]}) == {"a": 3}
    await store.close()
    store = await open_store()
    loaded = await store.load("a")
    assert (loaded.state, loaded.offset, loaded.updates, loaded.end) == (
        None,
        0,
        [b"1", b"2", b"3"],
        3,
    )
    assert [(d.name, d.update_count) for d in await store.docs()] == [("a", 3), ("b", 1)]
    assert await store.append({"a": [b"4"]}) == {"a": 4}  # counting goes on after a reopen
    await store.close()


async def test_the_log_is_read_after_an_offset(open_store: Opener) -> None:
    store = await open_store()
    await store.append({"a": [b"1", b"2", b"3"], "b": [b"x"]})
    assert await store.read("a", 1) == [(2, b"2"), (3, b"3")]
    assert await store.read("a", 3) == []
    assert await store.read("missing", 0) == []
    await store.close()


async def test_unknown_document_loads_empty_and_is_not_created(open_store: Opener) -> None:
    store = await open_store()
    loaded = await store.load("nobody")
    assert not loaded.exists and loaded.end == 0
    assert await store.docs() == []
    await store.close()


async def test_a_version_covers_and_prunes_the_log_up_to_its_offset(open_store: Opener) -> None:
    store = await open_store()
    await store.append({"a": [b"1", b"2"]})
    first = await store.save_version("a", b"state-12", 2)
    await store.append({"a": [b"3"]})
    loaded = await store.load("a")
    assert (loaded.state, loaded.offset, loaded.updates) == (b"state-12", 2, [b"3"])
    second = await store.save_version("a", b"state-123", 3, kind="named", label="v2")
    loaded = await store.load("a")
    assert (loaded.state, loaded.offset, loaded.updates) == (b"state-123", 3, [])
    versions = await store.versions("a")
    assert [(s.id, s.kind, s.label, s.size, s.update_count) for s in versions] == [
        (first.id, "auto", None, 8, 2),
        (second.id, "named", "v2", 9, 3),
    ]
    assert await store.read("a", 3) == []
    await store.close()


async def test_a_read_past_the_pruned_log_starts_with_the_version_covering_the_most(
    open_store: Opener,
) -> None:
    """Another server's room that is behind still gets every offset: what was pruned
    comes as the state of the version that holds it."""
    store = await open_store()
    await store.append({"a": [b"1", b"2", b"3"]})
    await store.save_version("a", b"state-12", 2)
    assert await store.read("a", 0) == [(2, b"state-12"), (3, b"3")]
    assert await store.read("a", 1) == [(2, b"state-12"), (3, b"3")]
    assert await store.read("a", 2) == [(3, b"3")]  # nothing pruned past 2: no version
    await store.save_version("a", b"state-123", 3)
    assert await store.read("a", 1) == [(3, b"state-123")]
    assert await store.read("a", 3) == []
    await store.close()


async def test_a_version_prunes_nothing_it_does_not_cover(open_store: Opener) -> None:
    store = await open_store()
    await store.append({"a": [b"1", b"2", b"3"]})
    await store.save_version("a", b"state-1", 1)
    loaded = await store.load("a")
    assert (loaded.state, loaded.offset, loaded.updates) == (b"state-1", 1, [b"2", b"3"])
    await store.close()


async def test_loading_starts_from_the_version_that_covers_the_most(open_store: Opener) -> None:
    store = await open_store()
    await store.append({"a": [b"1", b"2", b"3"]})
    covering = await store.save_version("a", b"state-123", 3)
    late = await store.save_version("a", b"state-1", 1)
    await store.append({"a": [b"4"]})
    loaded = await store.load("a")
    assert (loaded.state, loaded.offset, loaded.updates) == (b"state-123", 3, [b"4"])
    assert await store.delete_versions("a", [covering.id, late.id]) == 1  # not the base
    assert (await store.load("a")).state == b"state-123"
    await store.close()


async def test_deleting_versions_never_deletes_the_newest(open_store: Opener) -> None:
    store = await open_store()
    ids = []
    for i in range(3):
        await store.append({"a": [b"%d" % i]})
        ids.append((await store.save_version("a", b"s%d" % i, i + 1)).id)
    assert await store.delete_versions("a", ids) == 2
    assert await store.delete_versions("a", []) == 0
    assert [s.id for s in await store.versions("a")] == [ids[-1]]
    assert (await store.load("a")).state == b"s2"
    await store.close()


async def test_pruning_never_reuses_offsets(open_store: Opener) -> None:
    store = await open_store()
    await store.append({"a": [b"1"]})
    await store.save_version("a", b"s1", 1)
    assert await store.append({"a": [b"2"]}) == {"a": 2}
    assert (await store.load("a")).updates == [b"2"]
    await store.close()


async def test_version_state_is_read_back_and_unknown_ids_are_not_found(open_store: Opener) -> None:
    store = await open_store()
    await store.append({"a": [b"1"]})
    version = await store.save_version("a", b"state-1", 1, kind="named", label="one")
    assert await store.version_state("a", version.id) == b"state-1"
    with pytest.raises(VersionNotFound, match="has no version"):
        await store.version_state("a", version.id + 1)
    with pytest.raises(VersionNotFound):
        await store.version_state("b", version.id)  # another document's id
    await store.close()


async def test_delete_doc_deletes_its_log_and_versions(open_store: Opener) -> None:
    store = await open_store()
    await store.append({"a": [b"old"], "b": [b"kept"]})
    await store.save_version("a", b"s", 1)
    assert await store.delete_doc("a")
    assert not await store.delete_doc("missing")
    assert await store.append({"a": [b"new"]}) == {"a": 1}
    loaded = await store.load("a")
    assert (loaded.state, loaded.updates, loaded.end) == (None, [b"new"], 1)
    assert await store.read("b", 0) == [(1, b"kept")]  # another document is untouched
    assert await store.versions("a") == []
    await store.close()


async def test_doc_info_reports_size_and_log(open_store: Opener) -> None:
    store = await open_store()
    assert await store.doc_info("a") is None
    await store.append({"a": [b"12345", b"678"]})
    info = await store.doc_info("a")
    assert info is not None and (info.size, info.log_updates, info.update_count) == (8, 2, 2)
    await store.save_version("a", b"abcd", 2)
    info = await store.doc_info("a")
    assert info is not None and (info.size, info.log_updates) == (4, 0)
    await store.close()


async def test_revocations_are_kept_across_a_reopen(open_store: Opener) -> None:
    kept = [
        Revocation(at=1.5, permission="read", token_id="t1"),
        Revocation(at=2.5, subject="ann", docs="team/*"),
    ]
    store = await open_store()
    for revocation in kept:
        await store.add_revocation(revocation)
    await store.close()
    store = await open_store()
    assert await store.revocations() == kept
    await store.close()


async def test_many_documents_load_at_the_same_moment(open_store: Opener) -> None:
    store = await open_store()
    for i in range(20):
        await store.append({f"doc{i}": [b"%d" % i]})
        await store.save_version(f"doc{i}", b"s%d" % i, 1)
        await store.append({f"doc{i}": [b"after%d" % i]})
    loaded = await asyncio.gather(*(store.load(f"doc{i}") for i in range(20)))
    assert [(d.state, d.updates) for d in loaded] == [
        (b"s%d" % i, [b"after%d" % i]) for i in range(20)
    ]
    await store.close()


async def test_writes_after_close_raise_store_error(open_store: Opener) -> None:
    store = await open_store()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.append({"a": [b"1"]})
    with pytest.raises(StoreError, match="closed"):
        await store.load("a")
