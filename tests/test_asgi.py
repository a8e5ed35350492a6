"""collab inside other applications: mounted in FastAPI under a real uvicorn process
(tests/asgi_app.py), and as a sub-application of an aiohttp app."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pycrdt
import pytest
from aiohttp import web

from collab.app import create_app
from collab.client import Client
from collab.config import Settings
from tests.conftest import free_port
from tests.test_interop import Node

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent


class Uvicorn:
    """`uvicorn --factory tests.asgi_app:create` in a child process, on one database."""

    def __init__(self, db: Path, log_path: Path, lifespan: str) -> None:
        self.db, self.log_path, self.lifespan = db, log_path, lifespan
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Where the mounted collab serves its rooms."""
        return f"ws://127.0.0.1:{self.port}/collab"

    async def start(self) -> None:
        env = {**os.environ, "COLLAB_TEST_DB": str(self.db), "COLLAB_TEST_LIFESPAN": self.lifespan}
        args = ["-m", "uvicorn", "--factory", "tests.asgi_app:create", "--port", str(self.port)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        async with asyncio.timeout(20), aiohttp.ClientSession() as session:
            while True:
                assert self.proc.poll() is None, self.log_path.read_text()
                try:
                    async with session.get(f"{self.http}/hello") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)

    async def terminate(self) -> int:
        """SIGTERM, as a process manager stops it; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    runner = Node()
    yield runner
    await runner.close()


@pytest.fixture
def uvicorn(tmp_path: Path) -> Iterator[Callable[[str], Uvicorn]]:
    made: list[Uvicorn] = []

    def make(lifespan: str) -> Uvicorn:
        made.append(Uvicorn(tmp_path / "collab.db", tmp_path / "uvicorn.log", lifespan))
        return made[-1]

    yield make
    for server in made:
        server.kill()


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


def text_of(client: Client) -> pycrdt.Text:
    return client.doc.get("content", type=pycrdt.Text)


async def test_stock_providers_sync_through_a_fastapi_mount(
    uvicorn: Callable[[str], Uvicorn], node: Node
) -> None:
    server = uvicorn("plain")
    await server.start()
    room, peers = "asgi/notes", ["nodeA", "nodeB"]
    editors = [
        await node.editor(server.url, room, name, peers, 10, seed)
        for seed, name in enumerate(peers, start=1)
    ]
    results = [await node.finish(editor) for editor in editors]
    assert results[0]["text"] == results[1]["text"]
    assert all(f"<{peer}:9>" in results[0]["text"] for peer in peers)
    # The REST API answers under the mount, about the same document, from the same core.
    status, body = await get_json(f"{server.http}/collab/api/docs/{quote(room, safe='')}")
    assert (status, body["content"]) == (200, results[0]["text"])
    status, listed = await get_json(f"{server.http}/collab/api/docs")
    assert [doc["name"] for doc in listed["docs"]] == [room]
    status, error = await get_json(f"{server.http}/collab/api/docs/missing")
    assert (status, error["error"]["code"]) == (404, "doc_not_found")


async def test_a_refused_upgrade_keeps_its_status_through_the_mount(
    uvicorn: Callable[[str], Uvicorn],
) -> None:
    server = uvicorn("plain")
    await server.start()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{server.url}/doc", origin="http://elsewhere.example")
    assert refused.value.status == 403


@pytest.mark.parametrize("lifespan", ["plain", "chained"])
async def test_sigterm_of_uvicorn_loses_nothing_a_client_saw(
    uvicorn: Callable[[str], Uvicorn], lifespan: str
) -> None:
    server = uvicorn(lifespan)
    await server.start()
    room = "asgi/durable"
    async with Client(server.url, room) as writer, Client(server.url, room) as reader:
        seen = text_of(reader)

        async def type_until_closed() -> None:
            for i in range(10_000):
                if writer.closed.is_set():
                    return
                text_of(writer).insert(len(text_of(writer)), f"<{i}>")
                await asyncio.sleep(0.005)

        typing = asyncio.create_task(type_until_closed())
        await reader.wait_for(lambda: "<30>" in str(seen), timeout=10)
        # uvicorn re-raises the signal once it has shut down: killed by it, as it should be.
        assert await server.terminate() in (0, -signal.SIGTERM)
        async with asyncio.timeout(10):
            await reader.closed.wait()
        await typing
        saw = str(seen)  # relayed, so committed before it reached the reader
    await server.start()  # the same database: its lock was released
    async with Client(server.url, room) as fresh:
        assert str(text_of(fresh)).startswith(saw)
    # Only a chained lifespan lets collab shut down in order (uvicorn re-raises SIGTERM
    # before its event loop ends): then, and only then, the room took its last version.
    name = quote(room, safe="")
    status, versions = await get_json(f"{server.http}/collab/api/docs/{name}/versions")
    assert status == 200
    assert bool(versions["versions"]) is (lifespan == "chained"), versions


async def test_collab_works_as_an_aiohttp_sub_application(tmp_path: Path) -> None:
    parent = web.Application()
    parent.add_subapp("/collab", create_app(Settings(db=tmp_path / "collab.db")))
    runner = web.AppRunner(parent)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url, http = f"ws://127.0.0.1:{port}/collab", f"http://127.0.0.1:{port}/collab"
        async with Client(url, "notes") as one, Client(url, "notes") as two:
            text_of(one).insert(0, "under a prefix")
            await two.wait_for(lambda: str(text_of(two)) == "under a prefix")
        # Named relative to the mount, not "collab/notes".
        status, listed = await get_json(f"{http}/api/docs")
        assert [doc["name"] for doc in listed["docs"]] == ["notes"]
        # /api under the mount keeps its JSON errors and its Origin check.
        async with aiohttp.ClientSession() as session:
            headers = {"Origin": "http://elsewhere.example"}
            async with session.get(f"{http}/api/docs", headers=headers) as response:
                assert response.status == 403
                assert (await response.json())["error"]["status"] == 403
    finally:
        await runner.cleanup()
