"""CodeMirror 6 (y-codemirror.next, undo by its own Y.UndoManager) in Chromium: co-edit,
name a version, edit more, restore it through the API; both editors' own documents equal
the version exactly, and neither editor's Ctrl+Z of its earlier typing touches it."""

from __future__ import annotations

from playwright.async_api import Browser

from tests.conftest import RunningServer
from tests.editor_pages import (
    EditorPage,
    fresh_json,
    name_version,
    open_editor,
    restore,
    settle,
    version_json,
)

DOC = "code/main.py"


async def type_at_end(editor: EditorPage, text: str) -> None:
    content = editor.page.locator(".cm-content")
    await content.click()
    await content.press("Control+End")
    await editor.page.keyboard.type(text, delay=5)


async def test_a_restore_is_exact_in_codemirror_and_earlier_typing_cannot_be_undone_into_it(
    browser: Browser,
    editors_server: RunningServer,
    pages: str,
) -> None:
    alpha = await open_editor(browser, pages, editors_server, "codemirror", DOC)
    bravo = await open_editor(browser, pages, editors_server, "codemirror", DOC)
    await type_at_end(alpha, "Alpha writes one. ")
    await bravo.wait_text(lambda t: t == "Alpha writes one. ")
    await type_at_end(bravo, "Bravo writes two. ")
    then = await alpha.wait_text(lambda t: t.endswith("two. "))
    version = await name_version(editors_server, DOC, "two sentences")
    exported = await version_json(editors_server, DOC, version)
    assert exported == {"codemirror": "Alpha writes one. Bravo writes two. "}

    await type_at_end(alpha, "Alpha adds more. ")
    await type_at_end(bravo, "Bravo too.")
    await alpha.wait_text(lambda t: t.endswith("Bravo too."))
    await restore(editors_server, DOC, version)
    for editor in (alpha, bravo):
        assert await editor.wait_text(lambda t: t == then) == then
        assert await editor.json() == exported  # the editor's own Y.Doc, exactly
    assert await fresh_json(editors_server, DOC) == exported

    # Everything either editor typed before the restore is in its undo stack; undoing
    # all of it changes nothing the restore put back.
    for editor in (bravo, alpha):
        for _ in range(6):
            await editor.page.locator(".cm-content").press("Control+z")
        await settle(alpha, bravo)
        assert await editor.text() == then
    assert await alpha.json() == exported and await bravo.json() == exported
    assert await fresh_json(editors_server, DOC) == exported

    # Typing after the restore is undone as usual, by its author alone.
    await type_at_end(bravo, "After the restore.")
    await alpha.wait_text(lambda t: t.endswith("After the restore."))
    await bravo.page.locator(".cm-content").press("Control+z")
    assert await alpha.wait_text(lambda t: t == then) == then
    assert await fresh_json(editors_server, DOC) == exported
