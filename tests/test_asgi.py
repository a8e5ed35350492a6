"""collab inside other applications: mounted in FastAPI under a real uvicorn process
(tests/asgi_app.py), and as a sub-application of an aiohttp app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import runpy
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import aiohttp
import pycrdt
import pytest
from aiohttp import web
from playwright.async_api import Browser, expect

from collab.app import create_app
from collab.asgi import create_asgi_app
from collab.client import Client
from collab.config import DatabaseURL, Settings
from tests.conftest import RunningServer, free_port
from tests.test_interop import Node

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent


class Uvicorn:
    """`python -m uvicorn ARGS` in a child process, as a team deploys its app."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: IO[bytes]) -> None:
        self.args, self.cwd, self.env, self.log = args, cwd, env, log
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Where the mounted collab serves its rooms."""
        return f"ws://127.0.0.1:{self.port}/collab"

    async def start(self) -> None:
        """Start (again, on the same port), and wait until collab answers: it starts on
        this first request."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "uvicorn", *self.args, "--port", str(self.port),
            cwd=self.cwd, env={**os.environ, **self.env}, stdout=self.log, stderr=self.log,
        )  # fmt: skip
        async with asyncio.timeout(20), aiohttp.ClientSession() as session:
            while True:
                assert self.proc.returncode is None, "uvicorn exited"
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"{self.http}/collab/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def terminate(self) -> int:
        """SIGTERM, as a process manager stops it; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            return await self.proc.wait()

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            async with asyncio.timeout(10):
                await self.proc.wait()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    runner = Node()
    yield runner
    await runner.close()


MakeUvicorn = Callable[..., Uvicorn]


@pytest.fixture
async def uvicorn(tmp_path: Path) -> AsyncIterator[MakeUvicorn]:
    """Make uvicorn processes (default: tests/asgi_app.py on the test's database); all
    are killed at teardown."""
    made: list[Uvicorn] = []
    log = (tmp_path / "uvicorn.log").open("ab")

    def make(lifespan: str = "plain", args: list[str] | None = None, cwd: Path = ROOT) -> Uvicorn:
        env = {"COLLAB_TEST_DB": str(tmp_path / "collab.db"), "COLLAB_TEST_LIFESPAN": lifespan}
        made.append(Uvicorn(args or ["--factory", "tests.asgi_app:create"], cwd, env, log))
        return made[-1]

    yield make
    for server in made:
        await server.kill()
    log.close()


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


def text_of(client: Client) -> pycrdt.Text:
    return client.doc.get("content", type=pycrdt.Text)


async def test_stock_providers_sync_through_a_fastapi_mount(
    uvicorn: MakeUvicorn, node: Node
) -> None:
    server = uvicorn()
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
    uvicorn: MakeUvicorn,
) -> None:
    server = uvicorn()
    await server.start()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{server.url}/doc", origin="http://elsewhere.example")
    assert refused.value.status == 403


@pytest.mark.parametrize("lifespan", ["plain", "chained"])
async def test_sigterm_of_uvicorn_loses_nothing_a_client_saw(
    uvicorn: MakeUvicorn, lifespan: str
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


@contextlib.asynccontextmanager
async def sub_application(prefix: str, db: Path) -> AsyncIterator[int]:
    """An aiohttp parent app with collab at `prefix`, served on a free port (yielded)."""
    parent = web.Application()
    parent.add_subapp(prefix, create_app(Settings(db=db)))
    runner = web.AppRunner(parent)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_collab_works_as_an_aiohttp_sub_application(tmp_path: Path) -> None:
    async with sub_application("/collab", tmp_path / "collab.db") as port:
        url, http = f"ws://127.0.0.1:{port}/collab", f"http://127.0.0.1:{port}/collab"
        async with Client(url, "notes") as one, Client(url, "notes") as two:
            text_of(one).insert(0, "under a prefix")
            await two.wait_for(lambda: str(text_of(two)) == "under a prefix")
        # Named relative to the mount, not "collab/notes".
        _, listed = await get_json(f"{http}/api/docs")
        assert [doc["name"] for doc in listed["docs"]] == ["notes"]
        # /api under the mount keeps its JSON errors and its Origin check.
        async with aiohttp.ClientSession() as session:
            headers = {"Origin": "http://elsewhere.example"}
            async with session.get(f"{http}/api/docs", headers=headers) as response:
                assert response.status == 403
                assert (await response.json())["error"]["status"] == 403


async def use_the_bundled_editor(browser: Browser, http: str, doc: str) -> list[str]:
    """Open `http`'s start page, open `doc` from it, type, and see the text in a second
    editor; the URLs the pages asked for."""
    context = await browser.new_context()
    requested: list[str] = []
    failed: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    context.on(
        "response",
        lambda response: (
            failed.append(f"{response.status} {response.url}") if response.status >= 400 else None
        ),
    )
    page = await context.new_page()
    await page.goto(f"{http}/")
    await page.locator("#doc-name-input").fill(doc)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{http}/d/{doc}")
    await expect(page.locator("#status")).to_have_attribute("data-status", "connected")
    await page.locator(".ProseMirror").click()
    await page.keyboard.type("mounted")
    other = await (await browser.new_context()).new_page()
    await other.goto(f"{http}/d/{doc}")
    await expect(other.locator(".ProseMirror p")).to_contain_text("mounted")
    await page.locator("#history-toggle").click()  # lists versions through the API
    await expect(page.locator("#history")).to_be_visible()
    await page.locator("a.brand").click()
    await page.wait_for_url(f"{http}/")
    assert failed == []
    return requested


async def test_the_bundled_editor_works_under_both_mounts(
    uvicorn: MakeUvicorn, browser: Browser, tmp_path: Path
) -> None:
    # Under FastAPI at /collab (through the relay) and under an aiohttp parent at /edit:
    # every asset, API call and room of the pages is under the mount.
    server = uvicorn()
    await server.start()
    asked = await use_the_bundled_editor(browser, f"{server.http}/collab", "asgi-notes")
    assert asked and all(url.startswith(f"{server.http}/collab/") for url in asked), asked
    assert f"{server.http}/collab/static/editor.js" in asked
    async with sub_application("/edit", tmp_path / "sub.db") as port:
        http = f"http://127.0.0.1:{port}/edit"
        asked = await use_the_bundled_editor(browser, http, "sub-notes")
        assert asked and all(url.startswith(f"{http}/") for url in asked), asked
        assert any("/edit/api/docs/sub-notes/" in url for url in asked), asked


# --- the README's embedding examples, run as written


def readme_example(name: str) -> str:
    after = (ROOT / "README.md").read_text().split(f"<!-- embedding example: {name} ", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


async def two_clients_sync(url: str, doc: str, text: str) -> None:
    async with Client(url, doc) as one, Client(url, doc) as two:
        text_of(one).insert(0, text)
        await two.wait_for(lambda: str(text_of(two)) == text)


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
async def test_the_readme_asgi_example_serves_and_shuts_down_in_order(
    uvicorn: MakeUvicorn, tmp_path: Path, framework: str
) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(readme_example(framework))
    server = uvicorn(args=["main:app"], cwd=app_dir)
    await server.start()
    await two_clients_sync(server.url, "readme", f"mounted in {framework}")
    status, body = await get_json(f"{server.http}/collab/api/docs/readme")
    assert (status, body["content"]) == (200, f"mounted in {framework}")
    assert await server.terminate() in (0, -signal.SIGTERM)
    await server.start()
    # Its lifespan is chained: the shutdown took the room's last version.
    status, versions = await get_json(f"{server.http}/collab/api/docs/readme/versions")
    assert status == 200 and len(versions["versions"]) == 1, versions
    assert (app_dir / "collab.db").exists()


async def test_the_readme_aiohttp_example_serves_under_its_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "main.py").write_text(readme_example("aiohttp"))
    monkeypatch.chdir(tmp_path)  # its database is collab.db where it runs
    parent = runpy.run_path(str(tmp_path / "main.py"))["parent"]
    runner = web.AppRunner(parent)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await two_clients_sync(f"ws://127.0.0.1:{port}/collab", "readme", "a sub-app")
        status, body = await get_json(f"http://127.0.0.1:{port}/collab/api/docs/readme")
        assert (status, body["content"]) == (200, "a sub-app")
    finally:
        await runner.cleanup()
    assert (tmp_path / "collab.db").exists()


async def test_the_asgi_app_joins_a_cluster_like_a_server(
    make_server: Callable[..., Awaitable[RunningServer]], postgres_url: DatabaseURL, redis_url: str
) -> None:
    import uvicorn as uvicorn_server
    from starlette.applications import Starlette
    from starlette.routing import Mount

    other = await make_server(db=postgres_url, redis=redis_url, node_id="server")
    collab = create_asgi_app(Settings(db=postgres_url, redis=redis_url, node_id="asgi"))
    app = Starlette(routes=[Mount("/collab", app=collab)], lifespan=collab.lifespan)
    port = free_port()
    config = uvicorn_server.Config(app, port=port, log_level="warning", lifespan="on")
    served = uvicorn_server.Server(config)
    serving = asyncio.create_task(served.serve())
    try:
        async with asyncio.timeout(10):
            while not served.started:
                await asyncio.sleep(0.05)
        async with (
            Client(f"ws://127.0.0.1:{port}/collab", "shared") as mounted,
            Client(other.url, "shared") as direct,
        ):
            text_of(mounted).insert(0, "from the mount;")
            await direct.wait_for(lambda: "from the mount;" in str(text_of(direct)))
            text_of(direct).insert(0, "from the server;")
            await mounted.wait_for(lambda: "from the server;" in str(text_of(mounted)))
    finally:
        served.should_exit = True
        async with asyncio.timeout(30):
            await serving
