"""Content formats over the API and the CLI: GET ?format=prosemirror|html|markdown (now
and at a version), PUT /api/docs/{name} with ProseMirror JSON, HTML or Markdown, and
`collab export/import --format`, against real servers and real SQLite files."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pycrdt
import pytest

from collab.appkeys import DOCUMENTS
from collab.auth import mint
from collab.cli.access import DocumentAccess, RemoteAccess
from collab.client import Client
from collab.config import Secret
from collab.errors import BadRequest, Conflict
from collab.formats import parse
from tests.conftest import RunningServer
from tests.test_commands import collab, ok

MakeServer = Callable[..., Awaitable[RunningServer]]
MARKDOWN = "# Notes\n\nSome **bold** text.\n\n- one\n- two\n"
NOTES = parse("markdown", MARKDOWN.encode())


async def call(
    server: RunningServer,
    method: str,
    doc: str,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, str, bytes]:
    url = f"{server.http}/api/docs/{quote(doc, safe='')}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, **kwargs) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def put(server: RunningServer, doc: str, body: str | bytes, kind: str, **kw: Any) -> Any:
    status, _, answer = await call(
        server, "PUT", doc, data=body, headers={"Content-Type": kind}, **kw
    )
    return status, json.loads(answer)


async def test_put_creates_then_replaces_and_get_gives_each_format(server: RunningServer) -> None:
    status, answer = await put(server, "team/notes", MARKDOWN, "text/markdown; charset=utf-8")
    assert (status, answer) == (
        201,
        {"doc": "team/notes", "field": "default", "format": "markdown", "created": True},
    )
    got = await call(server, "GET", "team/notes", params={"format": "prosemirror"})
    assert got[:2] == (200, "application/json") and json.loads(got[2]) == NOTES
    html = await call(server, "GET", "team/notes", params={"format": "html"})
    assert html == (
        200,
        "text/html; charset=utf-8",
        b"<h1>Notes</h1><p>Some <strong>bold</strong> text.</p>"
        b"<ul><li><p>one</p></li><li><p>two</p></li></ul><p></p>",
    )
    markdown = await call(server, "GET", "team/notes", params={"format": "markdown"})
    assert markdown == (200, "text/markdown; charset=utf-8", MARKDOWN.encode())
    doc = {
        "type": "doc",
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": "new"}]}],
    }
    status, answer = await put(server, "team/notes", json.dumps(doc), "application/json")
    assert (status, answer["created"], answer["format"]) == (200, False, "prosemirror")
    text = await call(server, "GET", "team/notes", params={"format": "text"})
    assert text[2] == b"new"


async def test_put_replaces_one_field_and_leaves_every_other_root(server: RunningServer) -> None:
    async with Client(server.url, "mixed") as editor:
        editor.doc.get("title", type=pycrdt.Text).insert(0, "Kept title")
        body = editor.doc.get("default", type=pycrdt.XmlFragment)
        body.children.append(pycrdt.XmlElement("paragraph")).children.append(pycrdt.XmlText("old"))
        await editor.flush()
        assert (await put(server, "mixed", "<p>new body</p>", "text/html"))[0] == 200
        assert (
            await put(server, "mixed", "side *note*", "text/markdown", params={"field": "aside"})
        )[0] == 200
        await editor.wait_for(lambda: "new body" in str(body))
        assert str(editor.doc.get("title", type=pycrdt.Text)) == "Kept title"
    exported = json.loads((await call(server, "GET", "mixed"))[2])
    assert exported["title"] == "Kept title"
    assert json.dumps(exported["default"]).count("new body") == 1 and "old" not in json.dumps(
        exported
    )
    aside = await call(server, "GET", "mixed", params={"format": "markdown", "field": "aside"})
    assert aside[2] == b"side *note*\n"
    conflict = await put(server, "mixed", "# no", "text/markdown", params={"field": "title"})
    assert conflict[0] == 409 and conflict[1]["error"]["code"] == "conflict"
    not_rich = await call(server, "GET", "mixed", params={"format": "html", "field": "title"})
    assert not_rich[0] == 400 and b"not rich text" in not_rich[2]


async def test_a_version_exports_in_the_rich_formats(server: RunningServer) -> None:
    await put(server, "v", MARKDOWN, "text/markdown")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.http}/api/docs/v/versions", json={"label": "one"}) as r:
            version = (await r.json())["id"]
    await put(server, "v", "<p>later</p>", "text/html")
    async with aiohttp.ClientSession() as session:
        url = f"{server.http}/api/docs/v/versions/{version}"
        async with session.get(url, params={"format": "markdown"}) as response:
            assert response.content_type == "text/markdown"
            assert await response.text() == MARKDOWN


@pytest.mark.parametrize(
    ("body", "kind", "status", "message"),
    [
        (b"hello", "text/plain", 415, "send content as one of application/json, text/html"),
        (b"hello", "application/octet-stream", 415, "not 'application/octet-stream'"),
        (b"{not json", "application/json", 400, "the body is not JSON"),
        (b"[" * 100_000, "application/json", 400, "the body is not JSON"),
        (
            b'{"type": "doc", "content": [{"type": "image"}]}',
            "application/json",
            400,
            "unknown node type 'image'",
        ),
        (
            b'{"type": "doc", "content": [{"type": "listItem"}]}',
            "application/json",
            400,
            "a listItem holds 'paragraph block\\*', not nothing",
        ),
        (
            b'{"type": "doc", "content": [{"type": "heading", "attrs": {"level": 9}}]}',
            "application/json",
            400,
            "attrs.level: 9",
        ),
        (b"\xff\xfe", "text/markdown", 400, "not UTF-8"),
        (b"<blockquote>" * 200, "text/html", 400, "nested more than"),
    ],
)
async def test_bad_content_is_refused_with_a_clear_error_and_changes_nothing(
    server: RunningServer, body: bytes, kind: str, status: int, message: str
) -> None:
    await put(server, "strict", MARKDOWN, "text/markdown")
    answer = await put(server, "strict", body, kind)
    assert answer[0] == status
    assert re.search(message, answer[1]["error"]["message"]), answer
    got = await call(server, "GET", "strict", params={"format": "prosemirror"})
    assert json.loads(got[2]) == NOTES


async def test_content_over_the_size_limit_is_413(make_server: MakeServer) -> None:
    server = await make_server(max_message_bytes=4096)
    status, answer = await put(server, "big", "x" * 5000, "text/markdown")
    assert status == 413 and answer["error"]["code"] == "http_error"
    status, _, _ = await call(server, "GET", "big")
    assert status == 404  # not created


SECRET = Secret("correct horse battery staple, long enough")


async def test_put_needs_write_permission(make_server: MakeServer) -> None:
    server = await make_server(auth="token", auth_secret=SECRET)
    reader = mint(SECRET, "doc", "read", now=time.time(), ttl=600)  # type: ignore[arg-type]
    writer = mint(SECRET, "doc", "write", now=time.time(), ttl=600)  # type: ignore[arg-type]
    for token, status in [(None, 401), (reader, 403), (writer, 201)]:
        headers = {"Content-Type": "text/markdown"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        answer = await call(server, "PUT", "doc", data=b"hi", headers=headers)
        assert answer[0] == status, answer


async def test_the_server_way_replaces_as_the_database_way(make_server: MakeServer) -> None:
    server = await make_server()
    local: DocumentAccess = server.runner.app[DOCUMENTS]
    async with aiohttp.ClientSession() as session:
        remote: DocumentAccess = RemoteAccess(session, server.http)
        assert await remote.replace("r", "markdown", MARKDOWN.encode()) is True
        assert await local.replace("r", "html", b"<p>x</p>") is False
        for fmt in ("prosemirror", "html", "markdown"):
            assert await local.export("r", fmt) == await remote.export("r", fmt)  # type: ignore[arg-type]
        title: pycrdt.Doc[Any] = pycrdt.Doc()
        title.get("t", type=pycrdt.Text).insert(0, "title")
        await local.import_update("r", title.get_update())
        unknown = b'{"type": "doc", "content": [{"type": "x"}]}'
        for access in (local, remote):
            with pytest.raises(BadRequest, match="format must be one of"):
                await access.replace("r", "rtf", b"x")  # type: ignore[arg-type]
            with pytest.raises(BadRequest, match="unknown node type 'x'"):
                await access.replace("r", "prosemirror", unknown)
            with pytest.raises(Conflict, match="root 't' is text now, xml then"):
                await access.replace("r", "html", b"<p>x</p>", field="t")
        assert (await local.export("r", "html")).body == b"<p>x</p>"


@pytest.mark.slow  # runs the command line in a child process
def test_cli_imports_and_exports_each_format(tmp_path: Path) -> None:
    db = tmp_path / "collab.db"
    source = tmp_path / "notes.md"
    source.write_text(MARKDOWN)
    assert "created notes (default) from" in ok(
        collab("import", "notes", str(source), "--format", "markdown", db=db)
    )
    assert ok(collab("export", "notes", "--format", "markdown", db=db)) == MARKDOWN
    exported = ok(collab("export", "notes", "--format", "prosemirror", db=db))
    assert json.loads(exported) == NOTES
    html = ok(collab("export", "notes", "--format", "html", db=db))
    assert html.startswith("<h1>Notes</h1>")
    replaced = collab(
        "import", "notes", "-", "--format", "html", "--field", "other", db=db, stdin=b"<p>other</p>"
    )
    assert "replaced the content of notes (other)" in ok(replaced)
    assert (
        ok(collab("export", "notes", "--format", "html", "--field", "other", db=db))
        == "<p>other</p>"
    )
    assert ok(collab("export", "notes", "--format", "markdown", db=db)) == MARKDOWN
    (tmp_path / "doc.json").write_text(exported.replace("Notes", "Renamed"))
    ok(collab("import", "notes", str(tmp_path / "doc.json"), "--format", "prosemirror", db=db))
    assert ok(collab("export", "notes", "--format", "markdown", db=db)).startswith("# Renamed\n")
    bad = collab("import", "notes", "-", "--format", "prosemirror", db=db, stdin=b'{"type": "p"}')
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[-1].startswith(b"collab: not a document of the bundled")
