"""The content formats against the real bundled editor in Chromium: the schema table is the
live editor's, what the API exports is what the editor's getJSON() and getHTML() give, and
content put through the API shows up live in open editors, whose undo then takes back
only their own edits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from playwright.async_api import Browser, Page

from collab.formats import parse
from collab.prosemirror.schema import BUNDLED
from tests.conftest import RunningServer
from tests.test_editor import WAIT_MS, at_the_end, open_doc, person
from tests.test_prosemirror import EVERYTHING, EVERYTHING_HTML

DUMP_SCHEMA = """() => {
  const schema = window.collab.editor.schema
  const attrs = (type) => Object.fromEntries(Object.entries(type.attrs).map(
    ([name, attr]) => [name, attr.hasDefault ? { default: attr.default } : {}]))
  return {
    topNode: schema.topNodeType.name,
    nodes: Object.values(schema.nodes).map((n) => ({
      name: n.name, attrs: attrs(n), content: n.spec.content ?? '', group: n.spec.group ?? '',
      inline: n.isInline, marks: n.spec.marks ?? null, code: !!n.spec.code, atom: n.isAtom,
      defining: !!n.spec.defining
    })),
    marks: Object.values(schema.marks).map((m) => ({
      name: m.name, rank: m.rank, attrs: attrs(m), excludes: m.spec.excludes ?? null,
      inclusive: m.spec.inclusive ?? null
    }))
  }
}"""

# Every node and mark the toolbar offers (and the rest of the schema), made with the
# editor's own commands on what was typed and on paragraphs added at the end. In a step,
# `c` is a chain of the editor's commands, `at(text)` where that text is, `p(text)` a
# paragraph of it.
PARAGRAPHS = [
    "Heading one",
    "Heading six",
    "first item",
    "nested item",
    "alpha",
    "beta",
    "quoted & <kept>",
    "x = 1\nprint(x)",
    "before the break, after",
    "the rule\u00a0follows",
]
BUILD = [
    f"c.insertContentAt(editor.state.doc.content.size, {json.dumps(PARAGRAPHS)}.map(p))",
    "c.setTextSelection(at('Hello')).toggleBold().toggleItalic()",
    "c.setTextSelection(at('world')).toggleStrike()",
    "c.setTextSelection(at('Second')).toggleUnderline()",
    "c.setTextSelection(at('line')).toggleCode()",
    "c.setTextSelection(at('typed')).setLink({href: 'https://example.com/?a=1&b=\"2\"'})",
    "c.setTextSelection(at('Heading one')).toggleHeading({level: 1})",
    "c.setTextSelection(at('Heading six')).toggleHeading({level: 6})",
    "c.setTextSelection(at('first item')).toggleBulletList()",
    "c.setTextSelection(at('nested item')).toggleBulletList()",
    "c.setTextSelection(at('nested item')).sinkListItem('listItem')",
    "c.setTextSelection(at('alpha')).toggleOrderedList()",
    "c.setTextSelection(at('beta')).toggleOrderedList()",
    "c.setTextSelection(at('quoted')).toggleBlockquote()",
    "c.setTextSelection(at('x = 1')).toggleCodeBlock({language: 'python'})",
    "c.setTextSelection(at('before the break,').to).setHardBreak()",
    "c.setTextSelection(at('the rule').from).setHorizontalRule()",
]
STEP = """(({editor}) => {
  const at = (text) => {
    let found = null
    editor.state.doc.descendants((node, pos) => {
      const i = node.isText && !found ? node.text.indexOf(text) : -1
      if (i >= 0) found = {from: pos + i, to: pos + i + text.length}
    })
    return found
  }
  const p = (text) => ({type: 'paragraph', content: [{type: 'text', text}]})
  const c = editor.chain()
  return %s.run()
})(window.collab)"""


async def get(server: RunningServer, doc: str, **params: str) -> tuple[str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.http}/api/docs/{doc}", params=params) as response,
    ):
        assert response.status == 200, await response.text()
        return response.headers["Content-Type"], await response.text()


async def put(server: RunningServer, doc: str, body: str, content_type: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            f"{server.http}/api/docs/{doc}", data=body, headers={"Content-Type": content_type}
        ) as response,
    ):
        assert response.status < 300, await response.text()
        return response.status


async def editor_json(page: Page) -> Any:
    return await page.evaluate("window.collab.editor.getJSON()")


async def until(check: Any, what: str) -> None:
    """Wait (bounded) until the coroutine function `check` returns true."""
    try:
        async with asyncio.timeout(WAIT_MS / 1000):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


async def test_the_schema_table_is_the_live_editors(
    browser: Browser, server: RunningServer
) -> None:
    page = await open_doc(await person(browser, "Ada", "#1f6feb"), server.http, "schema")
    assert await page.evaluate(DUMP_SCHEMA) == BUNDLED.dump()


async def test_exports_are_what_the_editor_itself_gives(
    browser: Browser, server: RunningServer
) -> None:
    page = await open_doc(await person(browser, "Ada", "#1f6feb"), server.http, "rich")
    await page.keyboard.type("Hello world")
    await page.keyboard.press("Enter")
    await page.keyboard.type("Second line typed")
    for step in BUILD:
        assert await page.evaluate(STEP % step), step
    await page.locator(".ProseMirror").press("Control+End")
    await at_the_end(page)
    await page.keyboard.type("The end, typed.")
    wanted = await editor_json(page)
    html = await page.evaluate("window.collab.editor.getHTML()")
    types = {node["type"] for node in _nodes(wanted)}
    marks = {mark["type"] for node in _nodes(wanted) for mark in node.get("marks", ())}
    assert types == set(BUNDLED.nodes) and marks == set(BUNDLED.marks)

    async def exported() -> bool:
        return json.loads((await get(server, "rich", format="prosemirror"))[1]) == wanted

    await until(exported, f"the export equals getJSON() {wanted}")
    assert await get(server, "rich", format="html") == ("text/html; charset=utf-8", html)
    kind, markdown = await get(server, "rich", format="markdown")
    assert kind == "text/markdown; charset=utf-8"
    for block in [
        "***Hello*** ~~world~~",
        'Second `line` [typed](https://example.com/?a=1&b="2")',  # underline has no Markdown
        "# Heading one",
        "###### Heading six",
        "- first item\n\n  - nested item",
        "1. alpha\n2. beta",
        "> quoted & <kept>",
        "```python\nx = 1\nprint(x)\n```",
        "before the break,\\\n after\n\n---\n\nthe rule\u00a0followsThe end, typed.",
    ]:
        assert f"\n{block}\n" in f"\n{markdown}", block


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("content", ()) for n in _nodes(child))]


MARKDOWN = """# Put through the API

Some **bold** and *italic* text, a [link](https://example.com).

- one
- two

```js
let x = 1
```
"""
HTML = (
    "<h2>Now HTML</h2><p>With <u>underline</u>, <s>strike</s> and <code>code</code>"
    '<script>alert("gone")</script></p><blockquote><p>quoted</p></blockquote>'
    '<ol start="3"><li><p>three</p></li></ol><hr><p onclick="gone()">end<br>line</p>'
)


async def test_content_put_through_the_api_shows_live_and_each_undo_takes_back_its_own(
    browser: Browser, server: RunningServer
) -> None:
    alice = await open_doc(await person(browser, "Alice", "#1f6feb"), server.http, "put")
    bob = await open_doc(await person(browser, "Bob", "#d1242f"), server.http, "put")
    await alice.keyboard.type("Alice's draft")
    await until(lambda: _shows(bob, "Alice's draft"), "Bob sees Alice's draft")
    await asyncio.sleep(0.6)  # past y-undo's capture timeout: her draft is a step of its own
    for body, content_type in [(MARKDOWN, "text/markdown"), (HTML, "text/html")]:
        wanted = parse("markdown" if content_type == "text/markdown" else "html", body.encode())
        assert await put(server, "put", body, content_type) == 200
        for page in (alice, bob):
            await shows_json(page, wanted, f"{content_type} shows live")
    wanted = await editor_json(alice)
    assert "gone" not in json.dumps(wanted) and wanted["content"][0]["type"] == "heading"
    for page, words in [(alice, " by Alice"), (bob, " by Bob")]:
        await page.locator(".ProseMirror h2").click()
        await page.keyboard.press("End")
        await page.keyboard.type(words)
        await asyncio.sleep(0.6)
    await until(lambda: _shows(alice, "Now HTML by Alice by Bob"), "Alice sees both edits")
    assert await alice.evaluate("window.collab.editor.commands.undo()")
    await until(lambda: _shows(bob, "Now HTML by Bob"), "Alice's undo takes only her edit")
    assert await bob.evaluate("window.collab.editor.commands.undo()")
    for page in (alice, bob):
        await shows_json(page, wanted, "both undos leave the PUT content")
    # Alice's draft was deleted by the PUT: undoing its typing cannot bring it back.
    await alice.evaluate("window.collab.editor.commands.undo()")
    await asyncio.sleep(0.6)
    for page in (alice, bob):
        assert await editor_json(page) == wanted


async def shows_json(page: Page, wanted: Any, what: str) -> None:
    """Wait (bounded) until the editor's getJSON() is `wanted`."""
    try:
        await until(lambda: _is(page, wanted), what)
    except AssertionError:
        raise AssertionError(f"{what}: {await editor_json(page)} is not {wanted}") from None


async def _is(page: Page, wanted: Any) -> bool:
    return bool(await editor_json(page) == wanted)


async def _shows(page: Page, text: str) -> bool:
    return text in str(await page.evaluate("window.collab.editor.getText()"))


async def test_a_document_put_as_json_opens_in_the_editor_as_exactly_that_json(
    browser: Browser, server: RunningServer
) -> None:
    body = json.dumps(EVERYTHING)
    assert await put(server, "fresh", body, "application/json") == 201
    page = await open_doc(await person(browser, "Ada", "#1f6feb"), server.http, "fresh")
    await shows_json(page, EVERYTHING, "the editor shows the JSON put")
    assert await page.evaluate("window.collab.editor.getHTML()") == EVERYTHING_HTML
    await asyncio.sleep(0.6)  # the editor wrote nothing back (no fix-ups of the content)
    assert json.loads((await get(server, "fresh", format="prosemirror"))[1]) == EVERYTHING
