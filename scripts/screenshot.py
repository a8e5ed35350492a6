"""Regenerate docs/editor.png: two people editing one document in the bundled editor.

    python scripts/screenshot.py [--out docs/editor.png]

Starts a server on a free port with a throwaway database and drives Debian's chromium
(/usr/bin/chromium) through Playwright, as the browser tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from collab.app import start
from collab.config import Settings

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def open_as(browser: Browser, url: str, name: str, color: str) -> Page:
    context = await browser.new_context(viewport={"width": 1200, "height": 640})
    user = json.dumps({"name": name, "color": color})
    await context.add_init_script(f"localStorage.setItem('collab.user', {user!r})")
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_selector('#status[data-status="connected"]')
    return page


async def write_plan(page: Page) -> None:
    editor = page.locator(".ProseMirror")
    keys = page.keyboard
    await editor.press("Control+Alt+1")
    await keys.type("Launch plan")
    await keys.press("Enter")
    await keys.type("We ship the ")
    await editor.press("Control+b")
    await keys.type("collaborative editor")
    await editor.press("Control+b")
    await keys.type(" on Monday. Everything below is ")
    await editor.press("Control+i")
    await keys.type("still open")
    await editor.press("Control+i")
    await keys.type(".")
    await keys.press("Enter")
    await editor.press("Control+Alt+2")
    await keys.type("Checklist")
    await keys.press("Enter")
    await editor.press("Control+Shift+8")
    for item in ("Docs reviewed", "Benchmarks published", "Release notes"):
        await keys.type(item)
        await keys.press("Enter")
    await keys.press("Enter")
    await editor.press("Control+Shift+b")
    await keys.type("Ship small, ship often.")


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runner, port = await start(Settings(port=0, db=Path(tmp) / "shot.db"))
        try:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=FLAGS
                )
                url = f"http://127.0.0.1:{port}/d/team/launch-plan"
                ada = await open_as(browser, url, "Ada", "#1f6feb")
                grace = await open_as(browser, url, "Grace", "#d1242f")
                await write_plan(ada)
                await asyncio.sleep(0.5)
                await grace.locator(".ProseMirror li >> nth=1").click()
                await grace.keyboard.press("End")
                await grace.keyboard.type(" (done)")
                await asyncio.sleep(0.8)
                await ada.screenshot(path=out)
                await browser.close()
        finally:
            await runner.cleanup()
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/editor.png"))
    asyncio.run(main(parser.parse_args().out))
