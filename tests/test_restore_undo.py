"""Undo after a restore, with stock Y.UndoManagers (yjs 13.6 in Node, over y-websocket).

Editors type, a version is named, they edit more, the version is restored through the
API; then each editor undoes everything it did before the restore. What the restore put
back must stay: no undo removes it and, except in the one case Yjs leaves open (an item
deleted at the top level of a root's sequence: see collab/yjs/restore.py), none brings back
what it took out. Edits made after the restore are undone as usual.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.editor_pages import fresh_json, json_of
from tests.test_interop import INTEROP

SCRIPT = INTEROP / "editor.mjs"
WAIT_S = 15.0


class Editor:
    """tests/interop/editor.mjs in a child process: one stock client with an undo manager."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT_S):
            raw = await self.proc.stdout.readline()
        if not raw:
            assert self.proc.stderr is not None
            raise AssertionError(f"the editor ended: {(await self.proc.stderr.read()).decode()}")
        found: dict[str, Any] = json.loads(raw)
        assert "error" not in found, found["error"]
        return found

    async def do(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line()

    async def edit(self, *commands: dict[str, Any]) -> None:
        """Each command one undo step of its own."""
        for command in commands:
            await self.do(**command)
            await self.do(stop=True)

    async def state(self) -> bytes:
        return base64.b64decode((await self.do(report=True))["state"])

    async def json(self) -> dict[str, Any]:
        """The editor's own document as the server's JSON export shows it."""
        return json_of(await self.state())

    async def wait_json(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        try:
            async with asyncio.timeout(WAIT_S):
                while not predicate(current := await self.json()):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"the editor holds {await self.json()}") from None
        return current

    async def undo_all(self) -> int:
        return int((await self.do(undo=True))["undone"])


@pytest.fixture
async def editors() -> AsyncIterator[Callable[..., Any]]:
    node = shutil.which("node")
    if node is None or not (INTEROP / "node_modules" / "@y" / "y").is_dir():
        pytest.fail("node and `npm ci --prefix tests/interop` are needed", pytrace=False)
    procs: list[asyncio.subprocess.Process] = []

    async def start(server: RunningServer, doc: str, major: int = 13) -> Editor:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            str(major),
            server.url,
            doc,
            cwd=INTEROP,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        procs.append(proc)
        editor = Editor(proc)
        assert await editor._line() == {"ready": True}
        return editor

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def api(server: RunningServer, method: str, path: str, **kwargs: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{server.http}/api/docs/{path}", **kwargs) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


async def version_then_restore(
    server: RunningServer, doc: str, later: Callable[[], Any], *editors: Editor
) -> dict[str, Any]:
    """Name a version, run `later` (the edits after it), restore the version; return its
    export once every editor holds exactly it."""
    name = quote(doc, safe="")
    version = await api(server, "POST", f"{name}/versions", json={"label": "v"})
    exported: dict[str, Any] = await api(server, "GET", f"{name}/versions/{version['id']}")
    await later()
    for editor in editors:
        await editor.wait_json(lambda found: found != exported)
    await api(server, "POST", f"{name}/versions/{version['id']}/restore")
    for editor in editors:
        assert await editor.wait_json(lambda found: found == exported) == exported
    return exported


async def settle(server: RunningServer, doc: str, *editors: Editor) -> dict[str, Any]:
    """What a fresh client and every editor hold once the editors' undo reached the
    server (each editor's next reply comes after its sends; a fresh client's sync then
    answers only once the server stored them)."""
    await asyncio.sleep(0.3)
    found = await fresh_json(server, doc)
    for editor in editors:
        assert await editor.wait_json(lambda seen: seen == found) == found
    return found


async def test_undoing_typing_made_before_a_restore_changes_nothing_it_put_back(
    server: RunningServer, editors: Callable[..., Any]
) -> None:
    doc = "undo/typing"
    alpha, bravo = await editors(server, doc), await editors(server, doc)
    await alpha.edit({"text": "t", "insert": [0, "Alpha writes one. "]})
    await bravo.wait_json(lambda found: found.get("t") == "Alpha writes one. ")
    await bravo.edit(
        {"text": "t", "insert": [18, "Bravo writes two. "]},
        {"map": "m", "set": ["title", "draft"]},
        {"xml": "x", "paragraph": [0, "first"]},
        {"xml": "x", "in": 0, "insert": [5, " paragraph"]},
    )
    await alpha.wait_json(lambda found: "x" in found)

    async def later() -> None:
        await alpha.edit(
            {"text": "t", "insert": [36, "Later. "]},
            {"map": "m", "set": ["title", "final"]},
            {"xml": "x", "in": 0, "insert": [0, "My "]},
        )
        await bravo.edit({"xml": "x", "paragraph": [1, "second"]}, {"map": "m", "set": ["n", 2]})

    exported = await version_then_restore(server, doc, later, alpha, bravo)
    assert exported == {
        "m": {"title": "draft"},
        "t": "Alpha writes one. Bravo writes two. ",
        "x": [{"element": "paragraph", "children": [{"text": "first paragraph"}]}],
    }
    assert await alpha.undo_all() == 0 and await bravo.undo_all() == 0
    assert await settle(server, doc, alpha, bravo) == exported

    # An edit after the restore is undone as usual.
    await bravo.edit({"text": "t", "insert": [0, "New. "]})
    await alpha.wait_json(lambda found: found["t"].startswith("New. "))
    assert await bravo.undo_all() == 1
    assert await settle(server, doc, alpha, bravo) == exported


async def test_undoing_deletions_inside_types_and_of_root_map_keys_brings_nothing_back(
    server: RunningServer, editors: Callable[..., Any]
) -> None:
    doc = "undo/nested-deletions"
    alpha, bravo = await editors(server, doc), await editors(server, doc)
    await alpha.edit(
        {"map": "m", "set": ["kept", "k"]},
        {"map": "m", "set": ["dropped", "d"]},
        {"xml": "x", "paragraph": [0, "one two three"]},
    )
    await bravo.wait_json(lambda found: "x" in found)

    async def later() -> None:
        # Deletions the version does not have: inside a paragraph, and of root map keys.
        await bravo.edit({"xml": "x", "in": 0, "delete": [3, 4]})
        await alpha.edit({"map": "m", "delete": "kept"}, {"map": "m", "set": ["dropped", "x"]})

    exported = await version_then_restore(server, doc, later, alpha, bravo)
    # Before the version too: a key the version no longer has, deleted by its author.
    assert exported["m"] == {"dropped": "d", "kept": "k"}
    await alpha.undo_all()
    await bravo.undo_all()
    assert await settle(server, doc, alpha, bravo) == exported


async def test_undoing_a_top_level_deletion_made_before_a_restore_brings_it_back(
    server: RunningServer, editors: Callable[..., Any]
) -> None:
    """The case Yjs leaves open, pinned: Y.UndoManager's redoItem re-inserts an item
    deleted at the top level of a root's sequence (a character of a root Text, a whole
    block of a root XmlFragment) next to where it was, and nothing a server can write
    ties such an item to anything it could delete first. README: Undo after a restore."""
    doc = "undo/top-level-deletions"
    alpha, bravo = await editors(server, doc), await editors(server, doc)
    await alpha.edit(
        {"text": "t", "insert": [0, "keep this"]},
        {"xml": "x", "paragraph": [0, "stays"]},
        {"xml": "x", "paragraph": [1, "removed later"]},
    )
    await bravo.wait_json(lambda found: len(found.get("x", [])) == 2)

    async def later() -> None:
        await bravo.edit({"text": "t", "delete": [4, 5]}, {"xml": "x", "remove": 1})

    exported = await version_then_restore(server, doc, later, alpha, bravo)
    await bravo.undo_all()
    after = await settle(server, doc, alpha, bravo)
    # Both come back, where they were: before the restored copy, which follows what it
    # replaced.
    assert after["t"] == " this" + "keep this"
    assert [node["children"][0]["text"] for node in after["x"]] == [
        "removed later",
        "stays",
        "removed later",
    ]
    assert exported == {
        "t": "keep this",
        "x": [
            {"element": "paragraph", "children": [{"text": "stays"}]},
            {"element": "paragraph", "children": [{"text": "removed later"}]},
        ],
    }
