"""History with the stock npm client: a document written by y-websocket + yjs in Node is
exported and restored exactly, and a restore reaches a connected Node provider and a
Python client live, without reconnecting, and is still there after a restart."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pycrdt

from collab.client import Client
from tests.conftest import ServerProcess
from tests.test_interop import Node, node  # noqa: F401 - the fixture


async def line_of(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        raw = await proc.stdout.readline()
    assert raw, "the node client ended early"
    found: dict[str, Any] = json.loads(raw)
    found.pop("ready", None)
    return found


async def ask(proc: asyncio.subprocess.Process, command: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(f"{command}\n".encode())
    await proc.stdin.drain()


async def api(method: str, url: str, **kwargs: Any) -> Any:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        assert r.status < 300, await r.text()
        return await (r.json() if r.content_type == "application/json" else r.read())


async def test_a_node_document_round_trips_and_its_restore_arrives_live(
    server_process: Callable[..., ServerProcess],
    node: Node,  # noqa: F811 - the fixture
) -> None:
    server = server_process()
    server.start()
    doc_api = f"http://127.0.0.1:{server.port}/api/docs/{quote('shared/doc', safe='')}"
    writer = await node.start("rich", server.url, "shared/doc", "--build", "1", stdin=True)
    written = await line_of(writer)
    async with Client(server.url, "shared/doc") as python:
        await python.wait_for(lambda: "prose" in python.doc.keys() and "rich" in python.doc.keys())
        exported = await api("GET", doc_api)
        assert exported == {
            "items": [1, "two", {"three": 3}, True, None],
            "prose": [
                {
                    "element": "paragraph",
                    "attributes": {"align": "center"},
                    "children": [
                        {"text": "hello", "attributes": {"bold": {}}},
                        {"text": " world"},
                    ],
                }
            ],
            "rich": [
                {"text": "plain "},
                {"text": "bold", "attributes": {"bold": True}},
                {"text": " "},
                {"text": "italic", "attributes": {"italic": True}},
            ],
            "settings": {
                "nested": {"list": [1, 2, {"deep": True}]},
                "tags": ["a", "b"],
                "theme": "dark",
            },
        }
        version = await api("POST", f"{doc_api}/versions", json={"label": "as node wrote it"})

        # Python changes every root, the Node provider sees it.
        with python.doc.transaction():
            python.doc.get("rich", type=pycrdt.Text).insert(0, "CHANGED ", {"bold": True})
            python.doc.get("settings", type=pycrdt.Map)["theme"] = "light"
            python.doc.get("items", type=pycrdt.Array).append("more")
            python.doc.get("prose", type=pycrdt.XmlFragment).children.append(
                pycrdt.XmlElement("paragraph", {}, [pycrdt.XmlText("added")])
            )
        await python.flush()
        await ask(writer, "report")
        changed = await line_of(writer)
        while changed["settings"]["theme"] != "light":
            await asyncio.sleep(0.05)
            await ask(writer, "report")
            changed = await line_of(writer)
        assert await api("GET", doc_api) != exported

        await api("POST", f"{doc_api}/versions/{version['id']}/restore")
        await python.wait_for(
            lambda: str(python.doc.get("rich", type=pycrdt.Text)) == "plain bold italic"
        )
        async with asyncio.timeout(10):
            while True:
                await ask(writer, "report")
                seen = await line_of(writer)
                if seen["settings"]["theme"] == "dark":
                    break
                await asyncio.sleep(0.05)
        assert seen == written  # every root, formatting and attributes, as Node wrote them
        assert seen["connections"] == 1  # the restore came as edits, not a reconnect
        assert await api("GET", doc_api) == exported

    await ask(writer, "quit")
    await node.finish(writer)
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    server.start()
    assert await api("GET", doc_api) == exported
    fresh = await node.start("rich", server.url, "shared/doc", stdin=True)
    assert await line_of(fresh) == written
    await ask(fresh, "quit")
    await node.finish(fresh)
