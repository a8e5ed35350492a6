"""TipTap over the stock @hocuspocus/provider (tests/editors/src/tiptap-hocuspocus.js) in
real headless Chromium, beside the bundled editor over y-websocket, in one document."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from playwright.async_api import Browser

from tests.conftest import RunningServer
from tests.editor_pages import open_editor
from tests.test_editor import open_doc, person, text


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(15):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def test_tiptap_on_a_hocuspocus_provider_and_the_bundled_editor_edit_one_document(
    browser: Browser, pages: str, editors_server: RunningServer
) -> None:
    tiptap = await open_editor(browser, pages, editors_server, "tiptap-hocuspocus", "shared")
    bundled = await open_doc(await person(browser, "Bob", "#d1242f"), editors_server.http, "shared")
    await tiptap.page.locator(".ProseMirror").click()
    await tiptap.page.keyboard.type("Typed over Hocuspocus. ")
    await until(
        lambda: _has(text(bundled), "Typed over Hocuspocus."), "the bundled editor shows it"
    )
    await bundled.locator(".ProseMirror").press("Control+End")
    await bundled.keyboard.type("And back over y-websocket.")
    await until(lambda: _has(tiptap.text(), "back over y-websocket."), "TipTap shows it")
    await asyncio.sleep(0.5)  # both editors settle
    editor_json: dict[str, Any] = await tiptap.page.evaluate("window.page.json()")
    bundled_json = await bundled.evaluate("window.collab.editor.getJSON()")
    assert editor_json == bundled_json
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{editors_server.http}/api/docs/shared?format=prosemirror") as response,
    ):
        assert response.status == 200
        assert json.loads(await response.read()) == editor_json
    assert await tiptap.errors() == []


async def _has(text_now: Awaitable[str], part: str) -> bool:
    return part in await text_now
