"""Quill 2 (y-quill, undo by Quill's own history module with userOnly: true, as y-quill's
demo sets it up) in Chromium: co-edit with formatting and image embeds, name a version,
edit more (typing, formatting, an embed, a deletion), restore it through the API; both
editors' own documents, a fresh client's and Quill's own contents equal the version
exactly, and typing after the restore is undone alone.

Quill's history is no Y.UndoManager: the second test shows what Ctrl+Z does after a
restore, and why it leaves the restored text alone but for a top-level deletion."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from playwright.async_api import Browser

from tests.conftest import RunningServer
from tests.editor_pages import (
    WAIT_S,
    EditorPage,
    fresh_json,
    name_version,
    open_editor,
    restore,
    settle,
    version_json,
)

DOC = "notes/quill"
# 1x1 PNGs, red and blue.
RED = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AA"
    "AAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
BLUE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGNgYPgP"
    "AAEDAQAIicLsAAAAAElFTkSuQmCC"
)
KEYS = {"Control+b", "Control+i", "Control+u", "Backspace"}
VERSION = {
    "quill": [
        {"text": "Alpha "},
        {"text": "writes", "attributes": {"underline": True}},
        {"text": " "},
        {"text": "bold", "attributes": {"bold": True}},
        {"text": " words. "},
        {"text": "Bravo leans", "attributes": {"italic": True}},
        {"text": " then stands. "},
        {"embed": {"image": RED}},
    ]
}
# Quill's own contents of VERSION: its runs, and the newline every Quill document ends in.
VERSION_CONTENTS = [
    {"insert": "Alpha "},
    {"insert": "writes", "attributes": {"underline": True}},
    {"insert": " "},
    {"insert": "bold", "attributes": {"bold": True}},
    {"insert": " words. "},
    {"insert": "Bravo leans", "attributes": {"italic": True}},
    {"insert": " then stands. "},
    {"insert": {"image": RED}},
    {"insert": "\n"},
]
VERSION_TEXT = "Alpha writes bold words. Bravo leans then stands. \n"  # getText() has no embeds


async def open_quill(chromium: Browser, dist: str, server: RunningServer) -> EditorPage:
    """The Quill page on DOC, its undo steps made by `write` and `insert_image` alone.

    Quill's history merges a change into the undo step begun less than `delay` (1 s)
    before it: typing a sentence is one step or several as the machine is fast or slow
    (a loaded one split Alpha's first sentence in two). Here `delay` is an hour and each
    `write` ends with `history.cutoff()`, Quill's own API for the user's pause, so each
    `write` is one undo step on any machine; what an undo step does is unchanged."""
    editor = await open_editor(chromium, dist, server, "quill", DOC)
    await editor.page.evaluate("window.page.quill.history.options.delay = 3600 * 1000")
    return editor


async def write(editor: EditorPage, *parts: str) -> None:
    """Type `parts` where the caret is (a part in KEYS is pressed: Control+b toggles bold
    for what is typed next or formats the selection): one undo step."""
    for part in parts:
        if part in KEYS:
            await editor.page.keyboard.press(part)
        else:
            await editor.page.keyboard.type(part, delay=5)
    await editor.page.evaluate("window.page.quill.history.cutoff()")


async def caret_at_end(editor: EditorPage) -> None:
    root = editor.page.locator(".ql-editor")
    await root.click()
    await root.press("Control+End")


async def select(editor: EditorPage, start: int, length: int) -> None:
    """Select `length` characters from `start` with the keyboard."""
    root = editor.page.locator(".ql-editor")
    await root.click()
    await root.press("Control+Home")
    for _ in range(start):
        await editor.page.keyboard.press("ArrowRight")
    for _ in range(length):
        await editor.page.keyboard.press("Shift+ArrowRight")


async def insert_image(editor: EditorPage, index: int, url: str) -> None:
    """An image embed, inserted as Quill's image handler does, as the user: one undo step."""
    await editor.page.evaluate(
        """([index, url]) => {
            window.page.quill.insertEmbed(index, 'image', url, 'user')
            window.page.quill.history.cutoff()
        }""",
        [index, url],
    )


async def contents(editor: EditorPage) -> list[dict[str, Any]]:
    """Quill's own document: `quill.getContents()`'s ops."""
    return list((await editor.page.evaluate("window.page.delta()"))["ops"])


async def wait_contents(editor: EditorPage, expected: list[dict[str, Any]]) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while await contents(editor) != expected:
                await asyncio.sleep(0.05)
    except TimeoutError:
        assert await contents(editor) == expected, "Quill's contents"


async def undo(editor: EditorPage) -> None:
    await editor.page.locator(".ql-editor").press("Control+z")


@dataclasses.dataclass
class Restored:
    alpha: EditorPage
    bravo: EditorPage
    exported: dict[str, Any]


async def co_edit_and_restore(chromium: Browser, dist: str, server: RunningServer) -> Restored:
    """Two Quill editors write VERSION (each edit one undo step of its author's), name it,
    edit more, and restore it: returns once both show it.

    Alpha's undo steps: A1 typing "Alpha writes bold words. " (with Control+b), A2 the
    red image, then after the version A3 typing "Later bold tail." (bold by Control+b).
    Bravo's: B1 typing "Bravo leans then stands. " (italic by Control+i), B2 underlining
    "writes", then after the version B3 deleting "Alpha ", B4 bolding "words", B5 a blue
    image."""
    alpha = await open_quill(chromium, dist, server)
    bravo = await open_quill(chromium, dist, server)
    await caret_at_end(alpha)
    await write(alpha, "Alpha writes ", "Control+b", "bold", "Control+b", " words. ")
    await bravo.wait_text(lambda t: t == "Alpha writes bold words. \n")
    await caret_at_end(bravo)
    await write(bravo, "Control+i", "Bravo leans", "Control+i", " then stands. ")
    await alpha.wait_text(lambda t: t == VERSION_TEXT)
    await insert_image(alpha, len(VERSION_TEXT) - 1, RED)
    await select(bravo, 6, 6)
    await write(bravo, "Control+u")
    for editor in (alpha, bravo):
        await wait_contents(editor, VERSION_CONTENTS)
    version = await name_version(server, DOC, "formatted, with an image")
    exported = await version_json(server, DOC, version)
    assert exported == VERSION
    for editor in (alpha, bravo):
        assert await editor.json() == VERSION

    await caret_at_end(alpha)
    await write(alpha, "Control+b", "Later bold", "Control+b", " tail.")
    await bravo.wait_text(lambda t: t.endswith("Later bold tail.\n"))
    await select(bravo, 0, 6)
    await write(bravo, "Backspace")
    await select(bravo, 12, 5)
    await write(bravo, "Control+b")
    await insert_image(bravo, 18, BLUE)
    edited = [
        {"insert": "writes", "attributes": {"underline": True}},
        {"insert": " "},
        {"insert": "bold", "attributes": {"bold": True}},
        {"insert": " "},
        {"insert": "words", "attributes": {"bold": True}},
        {"insert": "."},
        {"insert": {"image": BLUE}},
        {"insert": " "},
        {"insert": "Bravo leans", "attributes": {"italic": True}},
        {"insert": " then stands. "},
        {"insert": {"image": RED}},
        {"insert": "Later bold", "attributes": {"bold": True}},
        {"insert": " tail.\n"},
    ]
    for editor in (alpha, bravo):
        await wait_contents(editor, edited)

    for editor in (alpha, bravo):  # what Quill reports of the restore, for the undo test
        await editor.page.evaluate(
            """() => {
                window.page.changes = []
                window.page.quill.on('text-change', (change) => window.page.changes.push(change))
            }"""
        )
    await restore(server, DOC, version)
    for editor in (alpha, bravo):
        await editor.wait_text(lambda t: t == VERSION_TEXT)
    return Restored(alpha, bravo, exported)


async def assert_version(restored: Restored, server: RunningServer) -> None:
    for editor in (restored.alpha, restored.bravo):
        assert await editor.json() == restored.exported  # the editor's own Y.Doc, exactly
        assert await contents(editor) == VERSION_CONTENTS  # Quill's own, as when named
    assert await fresh_json(server, DOC) == restored.exported


async def test_a_restore_is_exact_in_quill_with_formatting_and_images(
    browser: Browser,
    editors_server: RunningServer,
    pages: str,
) -> None:
    restored = await co_edit_and_restore(browser, pages, editors_server)
    alpha, bravo = restored.alpha, restored.bravo
    await assert_version(restored, editors_server)
    await settle(alpha, bravo)
    await assert_version(restored, editors_server)

    # Typing after the restore is undone as usual, alone, by its author.
    await caret_at_end(bravo)
    await write(bravo, "After the restore.")
    await alpha.wait_text(lambda t: t == VERSION_TEXT[:-1] + "After the restore.\n")
    await undo(bravo)
    await alpha.wait_text(lambda t: t == VERSION_TEXT)
    await caret_at_end(alpha)
    await write(alpha, "Control+b", "Bold after it.")
    await bravo.wait_text(lambda t: t == VERSION_TEXT[:-1] + "Bold after it.\n")
    await undo(alpha)
    await bravo.wait_text(lambda t: t == VERSION_TEXT)
    await settle(alpha, bravo)
    await assert_version(restored, editors_server)


async def test_quill_undo_after_a_restore_leaves_it_alone_but_for_a_top_level_deletion(
    browser: Browser,
    editors_server: RunningServer,
    pages: str,
) -> None:
    """Quill's history is no Y.UndoManager: it keeps each undo step as an index-based
    inverse delta and transforms it through every remote change Quill reports. The server
    sends a restore as two updates, the fresh copy appended, then the deletion of all that
    was there before (collab/yjs/restore.py), so Quill reports exactly that: every step about
    the old text is transformed into nothing, and Ctrl+Z changes nothing the restore put
    back. Except, as in Yjs (README, "Undo after a restore"), a deletion at the top level
    made before the restore: B3, Bravo deleting "Alpha " after the version, is an insertion
    of "Alpha " at the start when undone, and stays one.

    (Sent as one update, y-quill hands Quill the restore with its negated formats on the
    inserts, which disagrees with what Quill's DOM then holds, and Quill reports the
    minimal diff of old and new contents instead: a small edit, through which most undo
    steps survive, and which then deleted restored text, formatting and the image.)
    """
    restored = await co_edit_and_restore(browser, pages, editors_server)
    alpha, bravo = restored.alpha, restored.bravo
    await assert_version(restored, editors_server)
    for editor in (alpha, bravo):  # the copy appended after the 62 characters, then those gone
        changes = await editor.page.evaluate("window.page.changes")
        assert [change["ops"][0] for change in changes] == [{"retain": 62}, {"delete": 62}]
        assert all("delete" not in op for op in changes[1]["ops"][1:])  # then formats only

    for editor in (alpha, bravo):
        for _ in range(6):  # more than either has steps
            await undo(editor)
        await settle(alpha, bravo)
    expected = [{"insert": "Alpha Alpha "}, *VERSION_CONTENTS[1:]]
    for editor in (alpha, bravo):
        await wait_contents(editor, expected)
        assert await editor.json() == {"quill": [{"text": "Alpha Alpha "}, *VERSION["quill"][1:]]}
    assert await fresh_json(editors_server, DOC) == {
        "quill": [{"text": "Alpha Alpha "}, *VERSION["quill"][1:]]
    }
