"""The document commands, run as `python -m collab ...`: straight on the database when no
server runs, through the server's API when one holds the database; and the two ways of
reaching documents they use, which give the same records and errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
import pytest

from collab.appkeys import DOCUMENTS
from collab.auth import mint
from collab.cli.access import DocumentAccess, RemoteAccess
from collab.client import Client
from collab.documents import DocSummary, Restored
from collab.errors import BadRequest, DocNotFound, VersionNotFound
from collab.formats import FORMATS
from collab.store import Version
from tests.conftest import RunningServer, ServerProcess


def collab(
    *args: str, db: Path, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    return subprocess.run(
        [sys.executable, "-m", "collab", *args, "--db", str(db)],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**environ, **(env or {})},
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def update_file(tmp_path: Path, text: str, after: Path | None = None) -> Path:
    """A file holding an update that inserts `text` at the start (of the state in `after`)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    if after is not None:
        doc.apply_update(after.read_bytes())
    before = doc.get_state()
    doc.get("t", type=pycrdt.Text).insert(0, text)
    path = tmp_path / f"{text.strip() or 'update'}.bin"
    path.write_bytes(doc.get_update(before))
    return path


@pytest.mark.slow  # runs the command line in a child process
def test_commands_work_on_the_database_when_no_server_runs(tmp_path: Path) -> None:
    db = tmp_path / "collab.db"
    missing = collab("docs", db=db)
    assert missing.returncode == 1 and b"no database" in missing.stderr
    first = update_file(tmp_path, "first")
    imported = collab("import", "team/notes", str(first), db=db)
    assert "imported" in ok(imported)
    assert b"through the database" in imported.stderr
    assert "team/notes" in ok(collab("docs", db=db))
    named = ok(collab("version", "team/notes", "--label", "the first", db=db))
    version_id = named.split()[1]
    ok(
        collab(
            "import",
            "team/notes",
            "-",
            db=db,
            stdin=update_file(tmp_path, "second ", after=first).read_bytes(),
        )
    )
    assert json.loads(ok(collab("export", "team/notes", db=db))) == {"t": "second first"}
    listed = json.loads(ok(collab("versions", "team/notes", "--json", db=db)))
    assert [v["label"] for v in listed if v["kind"] == "named"] == ["the first"]
    restored = ok(collab("restore", "team/notes", version_id, db=db))
    assert f"to version {version_id}" in restored
    assert ok(collab("export", "team/notes", "--format", "text", db=db)) == "first"
    out = tmp_path / "state.bin"
    ok(collab("export", "team/notes", "--format", "update", "-o", str(out), db=db))
    copy: pycrdt.Doc[Any] = pycrdt.Doc()
    copy.apply_update(out.read_bytes())
    assert str(copy.get("t", type=pycrdt.Text)) == "first"
    compacted = collab("compact", db=db)
    assert "deleted" in ok(compacted) and b"[1/1] team/notes" in compacted.stderr


@pytest.mark.slow  # runs the command line in a child process
def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "collab.db"
    ok(collab("import", "doc", str(update_file(tmp_path, "x")), db=db))
    for args, message in [
        (("export", "nobody"), b"no document named 'nobody'"),
        (("restore", "doc", "999"), b"has no version 999"),
        (("version", "doc", "--label", " "), b"a label is 1 to 200 characters, not all blank"),
    ]:
        result = collab(*args, db=db)
        assert result.returncode == 1, result
        assert result.stderr.startswith(b"collab: ") and message in result.stderr
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not an update")
    assert b"not a Yjs update" in collab("import", "doc", str(bad), db=db).stderr


async def test_commands_go_through_the_running_server_so_editors_see_them(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_process()
    server.start()
    db = server.db

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return collab(*args, db=db)

    async with Client(server.url, "live") as editor:
        text = editor.doc.get("t", type=pycrdt.Text)
        imported = await asyncio.to_thread(run, "import", "live", str(update_file(tmp_path, "A")))
        assert b"through the server http://127.0.0.1" in imported.stderr
        await editor.wait_for(lambda: str(text) == "A")
        named = ok(await asyncio.to_thread(run, "version", "live", "--label", "just A"))
        text += "B"
        await editor.flush()
        await asyncio.sleep(0.2)
        ok(await asyncio.to_thread(run, "restore", "live", named.split()[1]))
        await editor.wait_for(lambda: str(text) == "A")
        assert "live" in ok(await asyncio.to_thread(run, "docs"))
        listed = json.loads(ok(await asyncio.to_thread(run, "docs", "--json")))
        assert [(doc["name"], doc["clients"]) for doc in listed] == [("live", 1)]


SECRET = "s" * 40


async def test_commands_show_a_token_to_a_server_that_wants_one(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_process("--auth", "token", "--auth-secret", SECRET)
    server.start()
    db = server.db
    update = str(update_file(tmp_path, "A"))

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
        return collab(*args, db=db, env=env)

    refused = await asyncio.to_thread(run, "docs")
    assert refused.returncode == 1
    assert b"--token" in refused.stderr and len(refused.stderr.splitlines()) == 1
    # Whoever holds the secret gets a short-lived admin token minted for the call.
    ok(await asyncio.to_thread(run, "import", "doc", update, COLLAB_AUTH_SECRET=SECRET))
    reader = mint(SECRET, "doc", "read", now=time.time(), ttl=600)
    exported = await asyncio.to_thread(run, "export", "doc", "--format", "text", "--token", reader)
    assert ok(exported) == "A"
    denied = await asyncio.to_thread(run, "version", "doc", "--label", "x", COLLAB_TOKEN=reader)
    assert denied.returncode == 1 and denied.stderr.startswith(b"collab: ")


async def test_the_server_way_gives_the_records_and_errors_of_the_database_way(
    make_server: Callable[..., Awaitable[RunningServer]], tmp_path: Path
) -> None:
    """RemoteAccess against `Documents` itself, on one live server: the same records (as
    the API shows them) and the same error classes, 404s told apart by their code."""
    server = await make_server()
    local: DocumentAccess = server.runner.app[DOCUMENTS]
    async with aiohttp.ClientSession() as session:
        remote: DocumentAccess = RemoteAccess(session, server.http)
        await remote.import_update("team/notes", update_file(tmp_path, "hello").read_bytes())
        named = await remote.take_version("team/notes", "  first  ")
        assert (named.doc, named.kind, named.label) == ("team/notes", "named", "first")
        await local.import_update("team/notes", update_file(tmp_path, "more").read_bytes())
        for ways in [
            (await local.summaries(), await remote.summaries()),
            (await local.versions("team/notes"), await remote.versions("team/notes")),
        ]:
            assert [r.as_json() for r in ways[0]] == [r.as_json() for r in ways[1]]
        assert named in [Version.from_json(v.as_json(), "team/notes") for v in ways[0]]
        for fmt in FORMATS:
            assert await local.export("team/notes", fmt) == await remote.export("team/notes", fmt)
        restored = await remote.restore("team/notes", named.id)
        assert restored.restored == named and restored.pre_restore.kind == "pre-restore"
        assert (await local.export("team/notes", "text")).body == b"hello"
        for access in (local, remote):
            with pytest.raises(DocNotFound, match="no document named 'nobody'"):
                await access.versions("nobody")
            with pytest.raises(VersionNotFound, match="has no version 999"):
                await access.export("team/notes", "json", 999)
            with pytest.raises(VersionNotFound):
                await access.restore("team/notes", 999)
            with pytest.raises(BadRequest, match="a label is 1 to 200"):
                await access.take_version("team/notes", " ")
            with pytest.raises(BadRequest, match="not a Yjs update"):
                await access.import_update("team/notes", b"not an update")
        assert await remote.compact() == 0


def test_records_survive_their_json() -> None:
    version = Version(7, "d", 1_763_795_527.619, "pre-restore", None, 42, 3)
    assert Version.from_json(version.as_json(), "d") == version
    summary = DocSummary("d", 1_763_795_527.5, 1_763_795_600.25, 100, 4, 2)
    assert DocSummary.from_json(summary.as_json()) == summary
    restored = Restored(replace(version, kind="auto"), version)
    assert Restored.from_json(restored.as_json(), "d") == restored
    # Stored times have microseconds; the API shows milliseconds, the same ones again.
    precise = replace(version, created_at=1_763_795_527.619_999)
    assert Version.from_json(precise.as_json(), "d").as_json() == precise.as_json()
