"""Lexical (lexical + @lexical/yjs, wired as @lexical/react's CollaborationPlugin wires
it; undo by the Y.UndoManager @lexical/yjs creates) in Chromium.

Lexical keeps its document in an XmlText root "root" whose children are XmlText
paragraphs (attributes `__type`, ...) holding, before each text run, an embedded Y.Map
with the run's properties (`__format` 1 is bold). Two editors co-edit by typing, a
version is named, they edit more, the version is restored through the API: both
editors' own documents equal the version's export exactly, and so does the pre-restore
version when it is restored in turn. Then each editor undoes everything it did before the
restore: pure typing and edits inside paragraphs change nothing the restore put there,
and typing after the restore is undone as usual. The one case Yjs leaves open, a whole
paragraph deleted before the restore (an item at the top level of the root's sequence),
is pinned by the last tests.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser

from tests.conftest import RunningServer
from tests.editor_pages import (
    EditorPage,
    api,
    doc_path,
    fresh_json,
    name_version,
    open_editor,
    settle,
    version_json,
)

KEYS = frozenset(
    {
        "Enter",
        "Backspace",
        "Home",
        "End",
        "Control+b",
        "Control+Home",
        "Control+End",
        "Shift+Control+End",
        "Shift+Control+ArrowRight",
    }
)
UNDO_MANAGER = "window.page.editor[Symbol.for('@lexical/yjs/UndoManager')]"
WAIT_MS = 15_000

Paragraphs = list[list[tuple[int, str]]]


async def edit(editor: EditorPage, *steps: str, at_end: bool = True) -> None:
    """Type or press `steps` in the editor (from the end of the document unless told
    otherwise), then close the undo step, as Lexical's own e2e tests do. After each step
    it waits until Lexical has read the browser's selection: a key Lexical handles on
    keydown acts on the selection it last read, not where the caret just moved."""
    content = editor.page.locator("[contenteditable=true]")
    await content.click()
    for step in ("Control+End", *steps) if at_end else steps:
        await editor.page.wait_for_function("window.page.selectionSettled()", timeout=WAIT_MS)
        if step in KEYS:
            await editor.page.keyboard.press(step)
        else:
            await editor.page.keyboard.type(step, delay=5)
    await editor.page.wait_for_function("window.page.selectionSettled()", timeout=WAIT_MS)
    await editor.page.evaluate(f"{UNDO_MANAGER}.stopCapturing()")


async def undo_everything(editor: EditorPage) -> int:
    """Press Ctrl+Z once for every step in the editor's undo stack and once more;
    returns how many steps there were."""
    steps = int(await editor.page.evaluate(f"{UNDO_MANAGER}.undoStack.length"))
    for _ in range(steps + 1):
        await editor.page.locator("[contenteditable=true]").press("Control+z")
    return steps


def paragraphs(exported: dict[str, Any]) -> Paragraphs:
    """The export of a Lexical document as paragraphs of (format, text) runs, checking
    its shape on the way: paragraphs are XmlTexts with `__type` "paragraph", each run a
    text node's Map followed by its text."""
    found: Paragraphs = []
    for node in exported["root"]:
        assert node["attributes"]["__type"] == "paragraph", node
        runs: list[tuple[int, str]] = []
        for run in node["xmltext"]:
            if "embed" in run:
                assert run["type"] == "Map" and run["embed"]["__type"] == "text", run
                runs.append((run["embed"]["__format"], ""))
            else:
                assert set(run) == {"text"} and runs, run
                runs[-1] = (runs[-1][0], runs[-1][1] + run["text"])
        found.append(runs)
    return found


def text_of(exported: dict[str, Any]) -> str:
    """What Lexical shows of the export: its paragraphs' text, one a line."""
    return "\n".join("".join(text for _, text in runs) for runs in paragraphs(exported))


async def get_status(server: RunningServer, path: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{server.http}/api{path}") as got:
        return got.status


async def restore_exactly(
    server: RunningServer, doc: str, version: int, *editors: EditorPage
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore `version` through the API; return its export, once every editor shows it
    and holds it exactly (and a fresh client too), and the restore's answer."""
    exported: dict[str, Any] = await version_json(server, doc, version)
    answer: dict[str, Any] = await api(
        server, "POST", f"{doc_path(doc)}/versions/{version}/restore"
    )
    assert answer["restored"]["id"] == version
    for editor in editors:
        await editor.wait_text(lambda t: t == text_of(exported))
        assert await editor.json() == exported  # the editor's own Y.Doc, exactly
    assert await fresh_json(server, doc) == exported
    return exported, answer


async def co_edit_three_paragraphs(
    chromium: Browser, base: str, server: RunningServer, doc: str
) -> tuple[EditorPage, EditorPage]:
    """Alpha writes a paragraph, bravo joins and writes one with a bold run, alpha a third."""
    alpha = await open_editor(chromium, base, server, "lexical", doc)
    await edit(alpha, "Alpha opens the first paragraph.", "Enter")
    # Bravo opens after alpha wrote: it finds a paragraph and bootstraps none (a second
    # bootstrap would be an extra paragraph in the text bravo waits for).
    bravo = await open_editor(chromium, base, server, "lexical", doc)
    await bravo.wait_text(lambda t: t == "Alpha opens the first paragraph.\n")
    await edit(bravo, "Bravo writes ", "Control+b", "bold words", "Control+b", " in the second.")
    await edit(bravo, "Enter")
    await alpha.wait_text(lambda t: t.endswith("in the second.\n"))
    await edit(alpha, "Alpha closes with a third.")
    await bravo.wait_text(lambda t: t.endswith("with a third."))
    return alpha, bravo


THREE: Paragraphs = [
    [(0, "Alpha opens the first paragraph.")],
    [(0, "Bravo writes "), (1, "bold words"), (0, " in the second.")],
    [(0, "Alpha closes with a third.")],
]


@pytest.mark.timeout(120)
async def test_a_restore_is_exact_in_lexical_and_earlier_typing_cannot_be_undone_into_it(
    browser: Browser,
    editors_server: RunningServer,
    pages: str,
) -> None:
    doc = "notes/lexical"
    alpha, bravo = await co_edit_three_paragraphs(browser, pages, editors_server, doc)
    version = await name_version(editors_server, doc, "three paragraphs")
    assert await get_status(editors_server, f"{doc_path(doc)}/versions/{version}") == 200
    exported = await version_json(editors_server, doc, version)
    assert paragraphs(exported) == THREE
    assert await alpha.json() == exported and await bravo.json() == exported

    # Later edits, by both: typing into a paragraph, a new bold run, a fourth paragraph.
    await edit(alpha, " More from alpha.")
    await edit(bravo, "Enter", "Bravo adds a ", "Control+b", "bold", "Control+b", " fourth.")
    later_text = await alpha.wait_text(lambda t: t.endswith(" fourth."))
    await bravo.wait_text(lambda t: t == later_text)

    restored, answer = await restore_exactly(editors_server, doc, version, alpha, bravo)
    assert restored == exported

    # The pre-restore version holds the later edits, bold runs included; restoring it
    # brings them back exactly.
    pre_restore = int(answer["pre_restore"]["id"])
    assert answer["pre_restore"]["kind"] == "pre-restore"
    later, _ = await restore_exactly(editors_server, doc, pre_restore, alpha, bravo)
    assert text_of(later) == later_text
    assert paragraphs(later) == [
        THREE[0],
        THREE[1],
        [(0, "Alpha closes with a third. More from alpha.")],
        [(0, "Bravo adds a "), (1, "bold"), (0, " fourth.")],
    ]

    # Everything either editor typed before the restores is in its undo stack; undoing
    # all of it changes nothing the restore put back, in either editor or the server.
    for editor in (bravo, alpha):
        assert await undo_everything(editor) >= 3
        await settle(alpha, bravo)
        assert await editor.text() == later_text
    assert await alpha.json() == later and await bravo.json() == later
    assert await fresh_json(editors_server, doc) == later

    # Typing after the restore is undone as usual, by its author alone, and only it.
    await edit(bravo, "Enter", "After the restore.")
    await alpha.wait_text(lambda t: t.endswith("After the restore."))
    await bravo.page.locator("[contenteditable=true]").press("Control+z")
    assert await alpha.wait_text(lambda t: t == later_text) == later_text
    await settle(alpha, bravo)
    assert await alpha.json() == later and await bravo.json() == later
    assert await fresh_json(editors_server, doc) == later


@pytest.mark.timeout(120)
async def test_undoing_edits_inside_paragraphs_made_before_a_restore_changes_nothing_it_put_back(
    browser: Browser,
    editors_server: RunningServer,
    pages: str,
) -> None:
    """Deleting characters and making existing text bold, before the version and after
    it: all inside paragraphs (a run's text and its Map live in a paragraph the restore
    deletes), so no undo of them brings anything back."""
    doc = "notes/lexical-inside"
    alpha, bravo = await co_edit_three_paragraphs(browser, pages, editors_server, doc)
    await edit(alpha, "Control+Home", "Shift+Control+ArrowRight", "Control+b", at_end=False)
    await edit(bravo, *["Backspace"] * len(" third."))
    await alpha.wait_text(lambda t: t.endswith("with a"))
    version = await name_version(editors_server, doc, "edited inside")
    exported = await version_json(editors_server, doc, version)
    assert paragraphs(exported) == [
        [(1, "Alpha"), (0, " opens the first paragraph.")],
        THREE[1],
        [(0, "Alpha closes with a")],
    ]

    await edit(
        alpha, "Control+Home", "End", *["Backspace"] * len("agraph."), " line.", at_end=False
    )
    await edit(bravo, "Home", "Shift+Control+ArrowRight", "Control+b")
    await alpha.wait_text(lambda t: "par line." in t)
    await bravo.wait_text(lambda t: "par line." in t)
    assert await alpha.json() == await bravo.json() != exported

    await restore_exactly(editors_server, doc, version, alpha, bravo)
    for editor in (alpha, bravo):
        assert await undo_everything(editor) >= 4
        await settle(alpha, bravo)
        assert await editor.json() == exported
    assert await alpha.json() == exported and await bravo.json() == exported
    assert await fresh_json(editors_server, doc) == exported


async def two_paragraphs(
    chromium: Browser, base: str, server: RunningServer, doc: str
) -> tuple[EditorPage, EditorPage]:
    """Alpha writes the first paragraph; bravo makes the second (Enter) and writes it,
    with a bold run: the second paragraph's XmlText and all it holds are bravo's."""
    alpha = await open_editor(chromium, base, server, "lexical", doc)
    await edit(alpha, "Alpha keeps the first paragraph.")
    bravo = await open_editor(chromium, base, server, "lexical", doc)
    await bravo.wait_text(lambda t: t == "Alpha keeps the first paragraph.")
    await edit(
        bravo, "Enter", "Bravo writes ", "Control+b", "bold words", "Control+b", " in the second."
    )
    await alpha.wait_text(lambda t: t.endswith("in the second."))
    return alpha, bravo


SECOND = "Bravo writes bold words in the second."


@pytest.mark.timeout(120)
async def test_undoing_the_removal_of_a_whole_paragraph_made_before_a_restore_brings_it_back(
    browser: Browser,
    editors_server: RunningServer,
    pages: str,
) -> None:
    """The case Yjs leaves open, pinned. Alpha deletes bravo's whole paragraph (one
    keystroke); the version, which has it, is restored; alpha's Ctrl+Z then re-inserts
    the paragraph it deleted, so the document holds it twice. A Lexical paragraph is an
    item at the top level of the root XmlText's sequence, and Y.UndoManager's redoItem
    re-inserts such an item (with what it held) next to where it was: the root is never
    deleted, and nothing the server writes ties the item to anything it could delete
    first (collab/yjs/restore.py). It lands before the restored copy, which follows all the
    content it replaced. Bravo's undo does not take it away: the copy is alpha's, and
    only the editor that redid an item follows it to its copy."""
    doc = "notes/lexical-removal"
    alpha, bravo = await two_paragraphs(browser, pages, editors_server, doc)
    version = await name_version(editors_server, doc, "two paragraphs")
    exported = await version_json(editors_server, doc, version)
    assert paragraphs(exported) == [
        [(0, "Alpha keeps the first paragraph.")],
        [(0, "Bravo writes "), (1, "bold words"), (0, " in the second.")],
    ]

    # From the end of the first paragraph to the end of the document: the second, whole.
    await edit(alpha, "Control+Home", "End", "Shift+Control+End", "Backspace", at_end=False)
    await bravo.wait_text(lambda t: t == "Alpha keeps the first paragraph.")
    await restore_exactly(editors_server, doc, version, alpha, bravo)

    await alpha.page.locator("[contenteditable=true]").press("Control+z")
    twice = {"root": [exported["root"][1], *exported["root"]]}
    for editor in (alpha, bravo):
        await editor.wait_text(lambda t: t == f"{SECOND}\n{text_of(exported)}")
        assert await editor.json() == twice
    assert await fresh_json(editors_server, doc) == twice

    # Nothing else either editor did before the restore changes anything more.
    for editor in (alpha, bravo):
        await undo_everything(editor)
        await settle(alpha, bravo)
        assert await alpha.json() == twice and await bravo.json() == twice
    assert await fresh_json(editors_server, doc) == twice


@pytest.mark.timeout(120)
async def test_undoing_a_paragraph_join_made_before_a_restore_brings_the_joined_paragraph_back(
    browser: Browser,
    editors_server: RunningServer,
    pages: str,
) -> None:
    """The same case by the commonest way to delete a paragraph, pinned: alpha joins
    bravo's paragraph to its own (Backspace at its start) before the version is named.
    Lexical writes the joined text as new runs of the first paragraph and deletes the
    second paragraph's XmlText, an item at the top level of the root. After a restore of
    the joined version, alpha's Ctrl+Z re-inserts the second paragraph whole, before the
    restored one, which still holds its text: the document shows bravo's sentence twice.
    (Had alpha made that paragraph itself, undoing its own typing would delete the copy
    again: an undo manager follows an item it redid to its copy.)"""
    doc = "notes/lexical-join"
    alpha, bravo = await two_paragraphs(browser, pages, editors_server, doc)
    second = (await alpha.json())["root"][1]
    await edit(alpha, "Home", "Backspace")
    joined_text = f"Alpha keeps the first paragraph.{SECOND}"
    await bravo.wait_text(lambda t: t == joined_text)
    version = await name_version(editors_server, doc, "joined")
    exported = await version_json(editors_server, doc, version)
    assert paragraphs(exported) == [
        [
            (0, "Alpha keeps the first paragraph.Bravo writes "),
            (1, "bold words"),
            (0, " in the second."),
        ]
    ]

    await edit(bravo, " More.")
    await alpha.wait_text(lambda t: t.endswith(" More."))
    await restore_exactly(editors_server, doc, version, alpha, bravo)

    await alpha.page.locator("[contenteditable=true]").press("Control+z")
    rejoined = {"root": [second, *exported["root"]]}
    for editor in (alpha, bravo):
        await editor.wait_text(lambda t: t == f"{SECOND}\n{joined_text}")
        assert await editor.json() == rejoined
    assert await fresh_json(editors_server, doc) == rejoined

    for editor in (alpha, bravo):
        await undo_everything(editor)
        await settle(alpha, bravo)
        assert await alpha.json() == rejoined and await bravo.json() == rejoined
    assert await fresh_json(editors_server, doc) == rejoined
