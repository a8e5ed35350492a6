"""The bundled TipTap editor (TipTap 3 over y-prosemirror, undo by its Y.UndoManager) in
Chromium: co-edit formatted paragraphs, name a version, edit more, restore it through the
API; both editors' own documents equal the version exactly, and Ctrl+Z of what either
typed before the restore leaves it alone."""

from __future__ import annotations

import base64
from typing import Any

from playwright.async_api import Browser, Page

from tests.conftest import RunningServer
from tests.editor_pages import fresh_json, json_of, name_version, restore, settle, version_json
from tests.test_editor import (
    at_the_end,
    open_doc,
    person,
    text,
    wait_text,
)

DOC = "team/tiptap-restore"


async def own_json(page: Page) -> dict[str, Any]:
    """The editor's own Y.Doc as the server's JSON export shows a document."""
    encoded = await page.evaluate(
        """() => {
          let binary = ''
          for (const byte of window.collab.state()) {
            binary += String.fromCharCode(byte)
          }
          return btoa(binary)
        }"""
    )
    return json_of(base64.b64decode(encoded))


async def type_at_end(page: Page, typed: str, *, bold: str = "") -> None:
    await page.locator(".ProseMirror").press("Control+End")
    await at_the_end(page)
    await page.keyboard.type(typed, delay=5)
    if bold:
        await page.keyboard.press("Control+b")
        await page.keyboard.type(bold, delay=5)
        await page.keyboard.press("Control+b")


async def test_a_restore_is_exact_in_tiptap_and_earlier_typing_cannot_be_undone_into_it(
    browser: Browser,
    server: RunningServer,
) -> None:
    alice = await open_doc(await person(browser, "Alice", "#1f6feb"), server.http, DOC)
    bob = await open_doc(await person(browser, "Bob", "#d1242f"), server.http, DOC)
    await alice.keyboard.type("Alice writes a ", delay=5)
    await alice.keyboard.press("Control+b")
    await alice.keyboard.type("bold", delay=5)
    await alice.keyboard.press("Control+b")
    await alice.keyboard.type(" word.", delay=5)
    await wait_text(bob, lambda t: t == "Alice writes a bold word.")
    await type_at_end(bob, "")
    await bob.keyboard.press("Enter")
    await bob.keyboard.type("Bob adds a paragraph.", delay=5)
    then = await wait_text(alice, lambda t: t.endswith("paragraph."))
    version = await name_version(server, DOC, "two paragraphs")
    exported = await version_json(server, DOC, version)
    assert exported["default"][0]["children"] == [
        {"text": "Alice writes a "},
        {"text": "bold", "attributes": {"bold": {}}},
        {"text": " word."},
    ]

    await type_at_end(alice, " More from Alice.")
    await bob.locator(".ProseMirror").press("Control+End")
    await at_the_end(bob)
    await bob.keyboard.press("Enter")
    await bob.keyboard.type("A third paragraph by Bob.", delay=5)
    await wait_text(alice, lambda t: t.endswith("by Bob."))
    await restore(server, DOC, version)
    for page in (alice, bob):
        assert await wait_text(page, lambda t: t == then) == then
        assert await own_json(page) == exported
    assert await fresh_json(server, DOC) == exported

    for page in (bob, alice):
        for _ in range(6):
            await page.locator(".ProseMirror").press("Control+z")
        await settle()
        assert await text(page) == then
    for page in (alice, bob):
        assert await own_json(page) == exported
    assert await fresh_json(server, DOC) == exported

    await type_at_end(bob, " After.")
    await wait_text(alice, lambda t: t.endswith(" After."))
    await bob.locator(".ProseMirror").press("Control+z")
    assert await wait_text(alice, lambda t: t == then) == then
    assert await fresh_json(server, DOC) == exported
