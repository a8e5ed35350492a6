"""The editor's History panel in real headless Chromium: naming, previewing and restoring
versions against a real server, seen live in a second person's editor."""

from __future__ import annotations

import asyncio

import aiohttp
from playwright.async_api import Browser, Dialog, Page, expect

from tests.conftest import RunningServer
from tests.test_editor import (
    ARTIFACTS,
    WAIT_MS,
    at_the_end,
    open_doc,
    person,
    server_text,
    text,
    wait_text,
)

DOC = "team/history"  # a `/` in the name: the panel must send it as %2F


def accept_next_dialog(page: Page, expected: str) -> list[str]:
    """Accept the next confirm dialog; the list returned receives its message."""
    seen: list[str] = []

    async def handle(dialog: Dialog) -> None:
        seen.append(dialog.message)
        await (dialog.accept() if dialog.type == expected else dialog.dismiss())

    page.once("dialog", handle)
    return seen


async def open_history(page: Page) -> None:
    toggle = page.locator("#history-toggle")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(page.locator("#history")).to_be_visible()


async def version_id(page: Page, label: str) -> str:
    button = page.locator("#versions [data-version-id]", has_text=label)
    await expect(button).to_have_count(1)
    return str(await button.get_attribute("data-version-id"))


async def restore(page: Page, version: str, shows: str) -> None:
    """Preview `version`, check it shows `shows`, and restore it, accepting the confirm."""
    await page.locator(f'#versions [data-version-id="{version}"]').click()
    await expect(page.locator("#preview-title")).to_have_text(f"Version {version} — read only")
    await expect(page.locator("#preview-content .ProseMirror")).to_have_text(shows)
    dialog = accept_next_dialog(page, "confirm")
    await page.locator("#preview-restore").click()
    await expect(page.locator("#preview")).to_be_hidden()
    assert len(dialog) == 1 and f"Restore version {version}?" in dialog[0]


async def test_name_preview_and_restore_a_version_seen_live_by_everyone(
    browser: Browser,
    server: RunningServer,
) -> None:
    alice = await open_doc(await person(browser, "Alice", "#1f6feb"), server.http, DOC)
    bob = await open_doc(await person(browser, "Bob", "#d1242f"), server.http, DOC)
    await alice.keyboard.type("First draft.")
    await wait_text(bob, lambda t: t == "First draft.")

    await open_history(alice)
    await expect(alice.locator("#history-status")).to_have_text("No versions yet")
    await alice.locator("#version-label").fill("draft one")
    await alice.locator("#version-label").press("Enter")
    draft = await version_id(alice, "draft one")
    named = alice.locator(f'#versions [data-version-id="{draft}"]')
    await expect(named).to_contain_text("Today")
    await expect(alice.locator("#history-notice")).to_have_text("Saved “draft one”.")
    await expect(alice.locator("#version-label")).to_have_value("")

    await alice.locator("#editor .ProseMirror").press("Control+End")
    await at_the_end(alice)
    await alice.keyboard.type("Second thoughts.")
    later = "First draft.Second thoughts."
    await wait_text(bob, lambda t: t == later)

    # The preview shows the version, not the live text, and cannot be edited.
    await named.click()
    await expect(named).to_have_attribute("aria-current", "true")
    preview = alice.locator("#preview-content .ProseMirror")
    await expect(alice.locator("#preview-title")).to_have_text(f"Version {draft} — read only")
    await expect(alice.locator("#preview-meta")).to_contain_text("draft one")
    await expect(preview).to_have_text("First draft.")
    await expect(preview).to_have_attribute("contenteditable", "false")
    await preview.click()
    await alice.keyboard.type("typed into the preview")
    await asyncio.sleep(0.3)
    await expect(preview).to_have_text("First draft.")
    assert await text(alice) == later
    ARTIFACTS.mkdir(exist_ok=True)
    await alice.screenshot(path=ARTIFACTS / "history-panel.png")

    # Restoring is an ordinary edit: both live editors follow, Bob without reloading.
    await restore(alice, draft, "First draft.")
    assert await wait_text(alice, lambda t: t == "First draft.") == "First draft."
    assert await wait_text(bob, lambda t: t == "First draft.") == "First draft."
    assert await server_text(server.url, DOC) == "<paragraph>First draft.</paragraph>"
    await expect(alice.locator("#history-notice")).to_contain_text(f"Restored version {draft}")

    # The state before the restore is the newest version; restoring it undoes the restore.
    newest = alice.locator("#versions [data-version-id]").first
    await expect(newest).to_have_attribute("data-kind", "pre-restore")
    await expect(newest).to_contain_text("Before a restore")
    before = str(await newest.get_attribute("data-version-id"))
    assert int(before) > int(draft)
    await restore(alice, before, later)
    assert await wait_text(bob, lambda t: t == later) == later
    assert await wait_text(alice, lambda t: t == later) == later
    assert await server_text(server.url, DOC) == f"<paragraph>{later}</paragraph>"
    kinds = await alice.locator("#versions [data-version-id]").evaluate_all(
        "(buttons) => buttons.map((b) => b.dataset.kind)"
    )
    assert kinds[:2] == ["pre-restore", "pre-restore"] and "named" in kinds

    # What the panel shows is what the API says.
    async with aiohttp.ClientSession() as session:
        url = f"{server.http}/api/docs/team%2Fhistory/versions"
        async with session.get(url) as response:
            versions = (await response.json())["versions"]
    shown = await alice.locator("#versions [data-version-id]").evaluate_all(
        "(buttons) => buttons.map((b) => b.dataset.versionId)"
    )
    assert shown == [str(version["id"]) for version in versions]


async def test_the_panel_works_from_the_keyboard_alone(
    browser: Browser,
    server: RunningServer,
) -> None:
    page = await open_doc(await person(browser, "Kay", "#8250df"), server.http, "keyboard")
    toggle = page.locator("#history-toggle")
    await toggle.focus()
    await page.keyboard.press("Enter")
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(page.locator("#history-title")).to_be_focused()
    # Nothing stored yet: no versions, and naming one says why it cannot.
    await expect(page.locator("#history-status")).to_have_text("No versions yet")
    await page.keyboard.press("Tab")  # the close button
    await page.keyboard.press("Tab")
    await expect(page.locator("#version-label")).to_be_focused()
    await page.keyboard.type("too early")
    await page.keyboard.press("Enter")
    notice = page.locator("#history-notice")
    await expect(notice).to_have_text("Could not name this version: there is nothing to save yet")
    await expect(notice).to_have_class("history-line error")

    await page.keyboard.press("Escape")
    await expect(page.locator("#history")).to_be_hidden()
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await expect(toggle).to_be_focused()

    await page.locator("#editor .ProseMirror").focus()
    await page.keyboard.type("Kept.")
    await wait_text(page, lambda t: t == "Kept.")
    await toggle.focus()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    # The server's own refusal of a blank label is shown, not swallowed.
    await page.keyboard.type("   ")
    await page.keyboard.press("Enter")
    await expect(notice).to_contain_text(
        "Could not name this version: a label is 1 to 200 characters"
    )
    await page.keyboard.press("Control+a")
    await page.keyboard.type("by keyboard")
    await page.keyboard.press("Enter")
    version = await version_id(page, "by keyboard")

    await page.keyboard.press("Tab")  # Save
    await page.keyboard.press("Tab")  # the newest version
    button = page.locator(f'#versions [data-version-id="{version}"]')
    await expect(button).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#preview-content .ProseMirror")).to_have_text("Kept.")
    await expect(page.locator("#preview-title")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.locator("#preview-restore")).to_be_focused()
    await page.keyboard.press("Escape")  # closes the preview only, back to its version
    await expect(page.locator("#preview")).to_be_hidden()
    await expect(page.locator("#history")).to_be_visible()
    await expect(button).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.locator("#history")).to_be_hidden()
    await expect(toggle).to_be_focused()
    assert await text(page) == "Kept."


async def test_the_panel_covers_the_page_on_a_narrow_screen(
    browser: Browser,
    server: RunningServer,
) -> None:
    context = await person(browser, "Nia", "#0a7e8c")
    page = await open_doc(context, server.http, "narrow")
    await page.set_viewport_size({"width": 380, "height": 700})
    await page.keyboard.type("Small screen.")
    await wait_text(page, lambda t: t == "Small screen.")
    await open_history(page)
    box = await page.locator("#history").bounding_box()
    assert box is not None and box["x"] == 0 and box["width"] == 380
    await page.locator("#version-label").fill("pocket")
    await page.locator("#version-label").press("Enter")
    await page.locator("#versions [data-version-id]", has_text="pocket").click()
    await expect(page.locator("#preview-content .ProseMirror")).to_have_text("Small screen.")
    await page.locator("#history-close").click()
    await expect(page.locator("#history")).to_be_hidden()
    await expect(page.locator("#editor .ProseMirror")).to_be_visible()
    async with asyncio.timeout(WAIT_MS / 1000):
        assert "Small screen." in await server_text(server.url, "narrow")
