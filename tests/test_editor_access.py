"""The bundled editor with --auth token: the page's ?token= reaches the provider and the
API; a read-only viewer sees everything live but cannot change anything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pycrdt
from playwright.async_api import Browser, expect

from collab.auth import mint, verify
from collab.client import Client
from collab.config import Secret
from tests.conftest import RunningServer
from tests.test_editor import WAIT_MS, open_doc, person, text, wait_text

SECRET = Secret("correct horse battery staple, long enough")


def token(docs: str, permission: str) -> str:
    return mint(SECRET, docs, permission, now=time.time(), ttl=600)  # type: ignore[arg-type]


async def test_a_read_only_viewer_follows_live_but_cannot_edit(
    browser: Browser,
    make_server: Callable[..., Awaitable[RunningServer]],
) -> None:
    server = await make_server(auth="token", auth_secret=SECRET)
    writer = await open_doc(
        await person(browser, "Wanda", "#1f6feb"),
        server.http,
        f"plans?token={token('plans', 'write')}",
    )
    viewer = await open_doc(
        await person(browser, "Vic", "#d1242f"),
        server.http,
        f"plans?token={token('plans', 'read')}",
    )
    await expect(viewer.locator("#access")).to_be_visible()
    await expect(writer.locator("#access")).to_be_hidden()
    assert await viewer.evaluate("window.collab.editor.isEditable") is False
    await writer.keyboard.type("Only Wanda writes.")
    await wait_text(viewer, lambda t: t == "Only Wanda writes.")
    await expect(writer.locator("#presence li")).to_have_text(["Wanda (you)", "Vic"])
    # Typing in a read-only editor changes nothing, anywhere.
    await viewer.locator(".ProseMirror").click()
    await viewer.keyboard.type("sneaky")
    await asyncio.sleep(0.3)
    assert await text(viewer) == "Only Wanda writes."
    assert await text(writer) == "Only Wanda writes."
    await expect(viewer.locator('button[data-command="bold"]')).to_be_disabled()
    await viewer.locator("#history-toggle").click()
    await expect(viewer.locator("#version-form")).to_be_hidden()
    async with Client(server.url, "plans", params={"token": token("plans", "read")}) as check:
        stored = str(check.doc.get("default", type=pycrdt.XmlFragment))
    assert "Only Wanda writes." in stored and "sneaky" not in stored


async def test_a_page_without_a_valid_token_never_connects(
    browser: Browser,
    make_server: Callable[..., Awaitable[RunningServer]],
) -> None:
    server = await make_server(auth="token", auth_secret=SECRET)
    page = await (await person(browser, "Nobody", "#6e7781")).new_page()
    await page.goto(f"{server.http}/d/plans?token=forged")
    await expect(page.locator("#status")).to_have_attribute(
        "data-status", "offline", timeout=WAIT_MS
    )


async def test_a_page_with_no_token_or_a_revoked_one_says_why_it_stopped(
    browser: Browser,
    make_server: Callable[..., Awaitable[RunningServer]],
) -> None:
    # 4401 (no token) and 4403 (revoked) are final for y-websocket: the page says so and
    # why, rather than "reconnecting" forever.
    server = await make_server(auth="token", auth_secret=SECRET)
    nobody = await (await person(browser, "Nobody", "#6e7781")).new_page()
    await nobody.goto(f"{server.http}/d/plans")
    await expect(nobody.locator("#status")).to_have_attribute(
        "data-status", "closed", timeout=WAIT_MS
    )
    await expect(nobody.locator("#notice")).to_contain_text("a token is needed")
    doomed = token("plans", "write")
    rita = await person(browser, "Rita", "#d1242f")
    page = await open_doc(rita, server.http, f"plans?token={doomed}")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.http}/api/revocations",
            headers={"Authorization": f"Bearer {token('*', 'admin')}"},
            json={"token_id": verify(SECRET, doomed, now=time.time()).token_id},
        ) as response:
            assert response.status == 201
    await expect(page.locator("#status")).to_have_attribute(
        "data-status", "closed", timeout=WAIT_MS
    )
    await expect(page.locator("#notice")).to_contain_text("revoked")
