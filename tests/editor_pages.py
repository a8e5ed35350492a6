"""Third-party editors in Chromium against a real server, for the restore tests.

tests/editors/ bundles each stock editor (pinned exactly in its package.json) over the
stock y-websocket provider into dist/<name>.html; a page opens the document its URL
names and exposes `window.page`: the editor's own Y.Doc as a state (`state()`), its own
view of the text (`text()`), and whether the provider has synced. The pages are served
by a small static server of their own, whose origin the collab server allows (the
fixtures `pages` and `editors_server`, in conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from playwright.async_api import Browser, Page

from collab.client import Client
from collab.yjs import content
from collab.yjs.roots import root_types
from collab.yjs.tree import Tree
from tests.conftest import RunningServer

WAIT_S = 15.0


class EditorPage:
    """One editor page: the editor's own document and view, read from the browser."""

    def __init__(self, page: Page) -> None:
        self.page = page

    async def state(self) -> bytes:
        return base64.b64decode(await self.page.evaluate("window.page.state()"))

    async def json(self) -> dict[str, Any]:
        """The editor's own Y.Doc as the server's JSON export shows a document."""
        return json_of(await self.state())

    async def text(self) -> str:
        return str(await self.page.evaluate("window.page.text()"))

    async def wait_text(self, predicate: Callable[[str], bool]) -> str:
        try:
            async with asyncio.timeout(WAIT_S):
                while not predicate(current := await self.text()):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"the editor shows {await self.text()!r}") from None
        return current

    async def errors(self) -> list[str]:
        return list(await self.page.evaluate("window.page.errors"))


async def open_editor(
    browser: Browser, pages: str, server: RunningServer, editor: str, doc: str
) -> EditorPage:
    """Open `editor`'s page on `doc` in a browser profile of its own, synced."""
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{pages}/{editor}.html?{urlencode({'server': server.url, 'doc': doc})}")
    async with asyncio.timeout(WAIT_S):
        while not await page.evaluate("window.page && window.page.synced"):
            await asyncio.sleep(0.05)
    assert errors == []
    return EditorPage(page)


def json_of(state: bytes) -> dict[str, Any]:
    tree = Tree(state)
    return content.to_json(tree, root_types(tree))


async def api(server: RunningServer, method: str, path: str, **kwargs: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{server.http}/api{path}", **kwargs) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


def doc_path(doc: str) -> str:
    return f"/docs/{quote(doc, safe='')}"


async def name_version(server: RunningServer, doc: str, label: str) -> int:
    version = await api(server, "POST", f"{doc_path(doc)}/versions", json={"label": label})
    return int(version["id"])


async def restore(server: RunningServer, doc: str, version: int) -> None:
    await api(server, "POST", f"{doc_path(doc)}/versions/{version}/restore")


async def version_json(server: RunningServer, doc: str, version: int) -> Any:
    return await api(server, "GET", f"{doc_path(doc)}/versions/{version}")


async def fresh_json(server: RunningServer, doc: str) -> dict[str, Any]:
    """The document as a new client receives it."""
    async with Client(server.url, doc) as client:
        return json_of(client.doc.get_update())


async def settle(*editors: EditorPage, seconds: float = 0.6) -> None:
    """Let what the editors sent reach the server and come back (a bounded pause: the
    tests then check that nothing changed, which no event announces)."""
    await asyncio.sleep(seconds)
    for editor in editors:
        assert await editor.errors() == []
