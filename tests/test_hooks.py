"""Hooks over a real server: what they are told, only once it is committed; that one that
raises or hangs leaves rooms relaying; seeding on load; in-process edits; the settled
hook once per pause, on one server of a cluster."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
import pytest

from collab.appkeys import DOCUMENTS, METRICS
from collab.client import Client
from collab.documents import Documents
from collab.errors import DocNotFound
from collab.hooks import (
    MAX_CHANGES,
    Change,
    Connection,
    DocEvent,
    HookRunner,
    Hooks,
    Loaded,
    Origin,
    Settled,
    VersionEvent,
    load_hooks,
)
from collab.metrics import Metrics
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


class Recorder:
    """Hooks that write down what they are told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.changes: list[Change] = []
        self.documents: Documents | None = None

    def hooks(self, **replace: Any) -> Hooks:
        def note(name: str) -> Callable[[Any], Awaitable[None]]:
            async def hook(event: Any) -> None:
                self.events.append((name, event))

            return hook

        async def on_change(changes: Sequence[Change]) -> None:
            self.changes.extend(changes)

        async def on_start(documents: Documents) -> None:
            self.documents = documents

        given: dict[str, Any] = {
            name: note(name)
            for name in (
                "on_load",
                "on_create",
                "on_settled",
                "on_version",
                "on_restore",
                "on_delete",
                "on_connect",
                "on_disconnect",
            )
        }
        given.update(on_change=on_change, on_start=on_start)
        given.update(replace)
        return Hooks(**given)

    def of(self, name: str) -> list[Any]:
        return [event for kind, event in self.events if kind == name]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


def replay(changes: Sequence[Change]) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for change in changes:
        doc.apply_update(change.update)
    return str(doc.get("t", type=pycrdt.Text))


async def test_on_change_is_told_every_committed_update_with_its_origin_in_log_order(
    make_server: MakeServer, db_path: Path
) -> None:
    recorder = Recorder()
    seen_in_store: list[bool] = []

    async def on_change(changes: Sequence[Change]) -> None:
        # Shown only what is committed: the database holds it already.
        with closing(sqlite3.connect(db_path)) as db:
            stored = db.execute("SELECT max(seq) FROM updates").fetchone()[0] or 0
        seen_in_store.extend(stored >= change.offset for change in changes)
        recorder.changes.extend(changes)

    server = await make_server(hooks=recorder.hooks(on_change=on_change))
    async with Client(server.url, "d") as writer, Client(server.url, "d") as reader:
        for word in ("one ", "two ", "three"):
            text = writer.doc.get("t", type=pycrdt.Text)
            text += word
            await writer.flush()
        await reader.wait_for(lambda: text_of(reader) == "one two three")
    async with aiohttp.ClientSession() as http:
        update = pycrdt.Doc()
        update.get("t", type=pycrdt.Text).insert(0, "API ")
        response = await http.post(f"{server.http}/api/docs/d/updates", data=update.get_update())
        assert response.status == 200, await response.text()
    await recorder.wait(lambda: len(recorder.changes) == 4)
    assert [change.offset for change in recorder.changes] == [1, 2, 3, 4]
    assert all(seen_in_store)
    assert {change.doc for change in recorder.changes} == {"d"}
    assert [change.origin.kind for change in recorder.changes] == ["client"] * 3 + ["server"]
    assert recorder.changes[0].origin.by.startswith("127.0.0.1")
    assert recorder.changes[3].origin.by == "api"
    assert replay(recorder.changes[:3]) == "one two three"
    assert [event.doc for event in recorder.of("on_create")] == ["d"]


async def test_connects_versions_restores_and_deletes_are_told(make_server: MakeServer) -> None:
    recorder = Recorder()
    server = await make_server(hooks=recorder.hooks())
    async with Client(server.url, "d") as client:
        text = client.doc.get("t", type=pycrdt.Text)
        text += "first"
        await client.flush()
        await recorder.wait(lambda: len(recorder.of("on_connect")) == 1)
    await recorder.wait(lambda: len(recorder.of("on_disconnect")) == 1)
    connected, left = recorder.of("on_connect")[0], recorder.of("on_disconnect")[0]
    assert isinstance(connected, Connection) and connected.doc == "d"
    assert connected.access == "admin" and connected.close_code is None
    assert left.peer == connected.peer and left.close_code == 1000

    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{server.http}/api/docs/d/versions", json={"label": "v1"})
        assert response.status == 201, await response.text()
        version_id = (await response.json())["id"]
        response = await http.post(f"{server.http}/api/docs/d/versions/{version_id}/restore")
        assert response.status == 200, await response.text()
        response = await http.delete(f"{server.http}/api/docs/d")
        assert response.status == 204
    await recorder.wait(lambda: len(recorder.of("on_delete")) == 1)
    versions = recorder.of("on_version")
    assert [(v.version.kind, v.version.label) for v in versions][:2] == [
        ("named", "v1"),
        ("pre-restore", f"before restoring version {version_id}"),
    ]
    (restored,) = recorder.of("on_restore")
    assert isinstance(restored, VersionEvent)
    assert restored.version.id == version_id and restored.pre_restore is not None
    assert restored.pre_restore.kind == "pre-restore"
    assert recorder.of("on_delete") == [DocEvent("d")]
    # The restore's two updates were the server's.
    assert [c.origin.by for c in recorder.changes if c.origin.kind == "server"] == ["restore"] * 2


async def test_a_hook_that_raises_or_hangs_leaves_the_room_relaying(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def raises(_event: Any) -> None:
        raise RuntimeError("the app's bug")

    async def hangs(_event: Any) -> None:
        await asyncio.sleep(3600)

    hooks = Hooks(on_change=raises, on_connect=hangs, on_settled=hangs, on_load=hangs)
    server = await make_server(hooks=hooks, hook_timeout=0.5, change_debounce=0.05)
    metrics = server.runner.app[METRICS]
    started = time.monotonic()
    async with Client(server.url, "d") as writer, Client(server.url, "d") as reader:
        loaded = time.monotonic() - started
        for index in range(50):
            text = writer.doc.get("t", type=pycrdt.Text)
            text += f"{index},"
        await reader.wait_for(lambda: text_of(reader).count(",") == 50, timeout=5)
        relayed = time.monotonic() - started - loaded
        # The pause's hook hangs, and the next edit still goes through at once.
        await asyncio.sleep(0.3)
        text += "after"
        await reader.wait_for(lambda: text_of(reader).endswith("after"), timeout=2)
    assert loaded < 2.0  # on_load waited for its timeout (0.5 s), no longer
    assert relayed < 2.0
    async with asyncio.timeout(5):
        while metrics.hook_calls[("on_settled", "timeout")] < 1:
            await asyncio.sleep(0.05)
    assert metrics.hook_calls[("on_change", "error")] >= 1
    assert metrics.hook_calls[("on_load", "timeout")] == 1
    assert "hook on_change failed" in caplog.text and "the app's bug" in caplog.text
    assert "hook on_settled took more than 0.5 s" in caplog.text


async def test_on_settled_fires_once_a_pause_comes_with_the_last_offset(
    make_server: MakeServer,
) -> None:
    recorder = Recorder()
    server = await make_server(hooks=recorder.hooks(), change_debounce=0.4)
    async with Client(server.url, "d") as client:
        text = client.doc.get("t", type=pycrdt.Text)
        for index in range(8):  # edits 0.1 s apart: never a pause of 0.4 s
            text += str(index)
            await asyncio.sleep(0.1)
        await client.flush()
        assert recorder.of("on_settled") == []
        await recorder.wait(lambda: len(recorder.of("on_settled")) == 1)
        assert recorder.of("on_settled") == [Settled("d", 8)]
        text += "more"
        await recorder.wait(lambda: len(recorder.of("on_settled")) == 2)
    await asyncio.sleep(0.6)
    assert recorder.of("on_settled") == [Settled("d", 8), Settled("d", 9)]


async def test_on_load_seeds_a_new_document_before_anyone_sees_it(make_server: MakeServer) -> None:
    loads: list[Loaded] = []

    async def seed(event: Loaded) -> None:
        loads.append(event)
        if event.new:
            async with event.edit() as doc:
                doc.get("t", type=pycrdt.Text).insert(0, "Welcome")

    server = await make_server(hooks=Hooks(on_load=seed), room_grace_seconds=0.05)
    async with Client(server.url, "fresh") as client:
        # The first sync already holds the seed.
        assert text_of(client) == "Welcome"
        text = client.doc.get("t", type=pycrdt.Text)
        text += "!"
        await client.flush()
    documents = server.runner.app[DOCUMENTS]
    async with asyncio.timeout(5):
        while documents.rooms.get("fresh") is not None:
            await asyncio.sleep(0.05)
    async with Client(server.url, "fresh") as client:
        assert text_of(client) == "Welcome!"  # loaded again: not new, not seeded twice
    assert [event.new for event in loads] == [True, False]


async def test_an_in_process_edit_reaches_clients_and_hooks_as_one_update(
    make_server: MakeServer,
) -> None:
    recorder = Recorder()
    server = await make_server(hooks=recorder.hooks())
    assert recorder.documents is server.runner.app[DOCUMENTS]
    documents = recorder.documents
    async with Client(server.url, "d") as client:
        async with documents.edit("d", origin="summary-bot") as doc:
            with doc.transaction():
                text = doc.get("t", type=pycrdt.Text)
                text.insert(0, "Summary: ")
                text.insert(9, "all good")
        await client.wait_for(lambda: text_of(client) == "Summary: all good")
        with pytest.raises(RuntimeError):
            async with documents.edit("d") as doc:
                doc.get("t", type=pycrdt.Text).insert(0, "never ")
                raise RuntimeError("changed my mind")
        await asyncio.sleep(0.2)
        assert text_of(client) == "Summary: all good"
    await recorder.wait(lambda: len(recorder.changes) == 1)
    (change,) = recorder.changes
    assert change.origin.kind == "server" and change.origin.by == "summary-bot"
    assert replay([change]) == "Summary: all good"
    # A document the edit creates, read back through the same operations.
    async with documents.edit("new-doc") as doc:
        doc.get("t", type=pycrdt.Text).insert(0, "made here")
    exported = await documents.export("new-doc", "text")
    assert exported.body == b"made here"
    with pytest.raises(DocNotFound):
        await documents.export("never-made", "text")


async def test_the_settled_hook_fires_once_per_pause_in_a_cluster_on_the_last_writer(
    make_server: MakeServer, redis_url: str, db_path: Path
) -> None:
    recorders = [Recorder(), Recorder()]
    servers = [
        await make_server(
            db=db_path,
            redis=redis_url,
            node_id=f"n{index}",
            hooks=recorder.hooks(),
            change_debounce=0.5,
        )
        for index, recorder in enumerate(recorders)
    ]
    async with Client(servers[0].url, "d") as first, Client(servers[1].url, "d") as second:
        for index in range(6):  # the two servers take turns; the last edit is the second's
            client = (first, second)[index % 2]
            text = client.doc.get("t", type=pycrdt.Text)
            text += str(index)
            await client.flush()
            await asyncio.sleep(0.05)
        await first.wait_for(lambda: len(text_of(first)) == 6)
        await recorders[1].wait(lambda: len(recorders[1].of("on_settled")) == 1)
        await asyncio.sleep(1.0)  # time for a second, wrong, call on either server
    assert recorders[0].of("on_settled") == []
    assert recorders[1].of("on_settled") == [Settled("d", 6)]
    # Each update was told once in the cluster: by the server that committed it.
    offsets = sorted(c.offset for r in recorders for c in r.changes)
    assert offsets == [1, 2, 3, 4, 5, 6]
    assert [e.doc for r in recorders for e in r.of("on_create")] == ["d"]


def test_hooks_named_on_the_command_line_must_be_hooks() -> None:
    assert isinstance(load_hooks("tests.test_hooks:EXAMPLE_HOOKS"), Hooks)
    with pytest.raises(ValueError, match="cannot load hooks"):
        load_hooks("tests.no_such_module:hooks")
    with pytest.raises(ValueError, match=r"not a collab\.hooks\.Hooks"):
        load_hooks("tests.test_hooks:text_of")


async def _log_settled(event: Settled) -> None:
    logging.getLogger("app").info("settled %s at %d", event.doc, event.offset)


EXAMPLE_HOOKS = Hooks(on_settled=_log_settled)


def readme_hooks_example() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    after = readme.split("<!-- hooks example:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_hooks_example_runs_under_collab_serve(
    server_process: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "app" / "myapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(readme_hooks_example())
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "app"))
    proc = server_process("--hooks", "myapp.hooks:hooks", "--change-debounce", "0.2")
    proc.start()
    async with Client(proc.url, "notes") as client:
        fragment = client.doc.get("default", type=pycrdt.XmlFragment)
        assert str(fragment) == "<paragraph>Welcome!</paragraph>"  # seeded before the sync
        paragraph = fragment.children[0]
        assert isinstance(paragraph, pycrdt.XmlElement)
        text = paragraph.children[0]
        assert isinstance(text, pycrdt.XmlText)
        text += " TODO: agenda"
        await client.flush()
        async with Client(proc.url, "todo-index") as index:
            docs = index.doc.get("docs", type=pycrdt.Map)
            await index.wait_for(lambda: "notes" in docs, timeout=10)
            assert docs["notes"] == 2  # the seed, then the edit
    async with asyncio.timeout(5):  # the hooks are told after the clients are
        while "todo-index: update 2 by indexer" not in (log := proc.log_path.read_text()):
            await asyncio.sleep(0.05)
    assert "notes: update 1 by load" in log
    assert "notes: update 2 by 127.0.0.1" in log
    assert "notes settled at 2: 21 characters" in log


# --- the runner alone, on a real event loop


def runner_for(hooks: Hooks, *, timeout: float = 5.0, debounce: float = 0.05) -> HookRunner:
    return HookRunner([hooks], timeout=timeout, debounce=debounce, metrics=Metrics())


def change(offset: int) -> Change:
    return Change("d", offset, b"", Origin("server", "test"))


async def test_a_slow_on_change_gets_what_came_meanwhile_in_one_batch() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def on_change(changes: Sequence[Change]) -> None:
        batches.append([c.offset for c in changes])
        await release.wait()

    runner = runner_for(Hooks(on_change=on_change))
    runner.changed([change(1)])
    await asyncio.sleep(0.01)
    for offset in range(2, 6):
        runner.changed([change(offset)])
    release.set()
    await runner.close(1.0)
    assert batches == [[1], [2, 3, 4, 5]]


async def test_a_hook_that_falls_too_far_behind_has_its_oldest_changes_dropped() -> None:
    release = asyncio.Event()
    told: list[int] = []

    async def on_change(changes: Sequence[Change]) -> None:
        await release.wait()
        told.extend(c.offset for c in changes)

    runner = runner_for(Hooks(on_change=on_change))
    metrics = runner._metrics
    runner.changed([change(0)])
    await asyncio.sleep(0.01)  # the first call waits; the rest queue behind it
    runner.changed([change(offset) for offset in range(1, MAX_CHANGES + 11)])
    assert metrics.hook_dropped["on_change"] == 10
    release.set()
    await runner.close(5.0)
    assert told[:2] == [0, 11] and told[-1] == MAX_CHANGES + 10
    assert len(told) == MAX_CHANGES + 1


async def test_a_clients_connect_is_told_before_its_disconnect_even_when_slow() -> None:
    told: list[str] = []

    async def on_connect(event: Connection) -> None:
        await asyncio.sleep(0.1)
        told.append(f"connect {event.peer}")

    async def on_disconnect(event: Connection) -> None:
        told.append(f"disconnect {event.peer}")

    runner = runner_for(Hooks(on_connect=on_connect, on_disconnect=on_disconnect))
    runner.call("on_connect", Connection("d", "a", "write"))
    runner.call("on_disconnect", Connection("d", "a", "write", close_code=1000))
    await runner.close(2.0)
    assert told == ["connect a", "disconnect a"]


async def test_a_pause_still_waited_for_at_shutdown_is_told_then() -> None:
    settled: list[Settled] = []

    async def on_settled(event: Settled) -> None:
        settled.append(event)

    runner = runner_for(Hooks(on_settled=on_settled), debounce=60.0)
    runner.changed([change(1), change(2)])
    runner.touched("other", 7, mine=False)  # another server's: its server tells it
    await runner.close(1.0)
    assert settled == [Settled("d", 2)]


async def test_an_in_process_edit_on_one_server_reaches_a_client_of_another(
    make_server: MakeServer, redis_url: str, db_path: Path
) -> None:
    servers = [
        await make_server(db=db_path, redis=redis_url, node_id=f"n{index}") for index in range(2)
    ]
    async with Client(servers[1].url, "d") as client:
        async with servers[0].runner.app[DOCUMENTS].edit("d", origin="bot") as doc:
            doc.get("t", type=pycrdt.Text).insert(0, "from the other server")
        await client.wait_for(lambda: text_of(client) == "from the other server")
