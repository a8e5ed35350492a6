"""`collab backup`: one consistent copy of a SQLite database taken while a server commits,
that `collab serve` serves as the database was when the copy began; progress on stderr;
refusals that leave DEST as it was."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
import pytest

from collab.cli.backup import ProgressLines
from collab.client import Client
from collab.errors import DatabaseInUse, StoreError
from collab.lockfile import holder
from collab.store.backup import back_up
from collab.store.sqlite import SQLiteStore
from tests.conftest import RunningServer, ServerProcess
from tests.test_commands import collab

PROGRESS_LINE = rb"backup: (\d+)% \((\d+)/(\d+) pages\)"


async def ballast(db: Path, docs: int, megabytes: int) -> dict[str, str]:
    """Documents of `megabytes` of text each, stored through the real store; name -> the
    SHA-256 of its text. Random text, so that a torn copy cannot pass for a whole one."""
    store = await SQLiteStore.open(db)
    texts = {}
    try:
        for index in range(docs):
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            text = os.urandom(megabytes * 512 * 1024).hex()
            doc.get("t", type=pycrdt.Text).insert(0, text)
            await store.append({f"ballast/{index}": [doc.get_update()]})
            texts[f"ballast/{index}"] = hashlib.sha256(text.encode()).hexdigest()
    finally:
        await store.close()
    return texts


def is_standalone(copy: Path) -> bool:
    """A database in rollback-journal mode: opening it needs no -wal beside it."""
    header = copy.read_bytes()[:100]
    return header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x01\x01"


def offsets(copy: Path) -> dict[str, tuple[int, list[int]]]:
    """Each document of a database file: (its update count, the offsets its log holds
    past its newest version, which must run on to the count)."""
    with sqlite3.connect(f"{copy.absolute().as_uri()}?mode=ro", uri=True) as conn:
        found = {}
        for doc_id, name, count in conn.execute("SELECT id, name, update_count FROM docs"):
            covers = conn.execute(
                "SELECT coalesce(max(covers), 0) FROM versions WHERE doc_id = ?", (doc_id,)
            ).fetchone()[0]
            seqs = conn.execute(
                "SELECT seq FROM updates WHERE doc_id = ? AND seq > ? ORDER BY seq",
                (doc_id, covers),
            ).fetchall()
            found[name] = (count, [covers, *(seq for (seq,) in seqs)])
    return found


TYPED = 4  # documents typed into during the backup


async def test_a_backup_while_people_type_is_every_document_at_one_moment(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db = tmp_path / "collab.db"
    ballasts = await ballast(db, 4, 8)  # ~32 MB: the copy takes several steps
    live = server_process()
    live.start()
    names = [f"typed/{index}" for index in range(TYPED)]
    writers = [Client(live.url, name) for name in names]
    observers = [Client(live.url, name) for name in names]
    for client in (*writers, *observers):
        await client.connect()
    committed = 0  # tokens 0..committed-1 are committed, in that order
    stop = asyncio.Event()

    async def type_token(n: int) -> None:
        doc, token = n % TYPED, f"{n};"
        typed = writers[doc].doc.get("t", type=pycrdt.Text)
        typed += token
        seen = observers[doc].doc.get("t", type=pycrdt.Text)
        await observers[doc].wait_for(lambda: str(seen).endswith(token), timeout=10)

    async def type_() -> None:
        # Token n goes to document n % TYPED, and the next is typed only once another
        # client has it, which the server sends only after committing it: the commits
        # are in token order, so a copy of one moment holds tokens 0..N-1 and no other.
        nonlocal committed
        while not stop.is_set():
            await type_token(committed)
            committed += 1

    typing = asyncio.create_task(type_())
    try:
        async with asyncio.timeout(20):
            while committed < 2 * TYPED:  # every typed document exists before the backup
                await asyncio.sleep(0.01)
        dest = tmp_path / "copy.db"
        before = committed
        backup = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "collab", "backup", str(dest), "--db", str(db)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(backup.communicate(), timeout=60)
        after = committed
    finally:
        stop.set()
        await asyncio.wait_for(typing, timeout=15)
        for client in (*writers, *observers):
            await client.close()
    assert backup.returncode == 0, err.decode()
    assert b"restarted" not in out
    # It read the file beside the server: the server's claim on it is untouched.
    assert (holder(db) or {}).get("pid") == live.proc.pid  # type: ignore[union-attr]
    assert after > before, "nobody typed while the backup ran"
    assert is_standalone(dest) and not dest.with_name("copy.db-wal").exists()

    stored = offsets(dest)
    assert set(stored) == set(ballasts) | set(names)
    for name, (count, held) in stored.items():
        assert held == list(range(held[0], count + 1)), f"{name}: a gap in its log offsets"

    copy = server_process(db=dest)
    copy.start()
    contents = {}
    for name in names:
        async with Client(copy.url, name) as reader:
            contents[name] = str(reader.doc.get("t", type=pycrdt.Text))
    tokens = [int(t) for text in contents.values() for t in text.split(";") if t]
    total = len(tokens)
    # Tokens seen before the backup started are in; one typed but not yet seen when it
    # ended may be too (committed, on its way to the observer).
    assert before <= total <= after + 1, (before, total, after)
    for index, name in enumerate(names):
        assert contents[name] == "".join(f"{n};" for n in range(index, total, TYPED)), name
    async with aiohttp.ClientSession() as http:
        for name, digest in ballasts.items():
            async with http.get(
                f"http://127.0.0.1:{copy.port}/api/docs/{name.replace('/', '%2F')}",
                params={"format": "text"},
            ) as response:
                assert response.status == 200
                assert hashlib.sha256(await response.read()).hexdigest() == digest, name


async def test_the_copy_is_of_its_first_moment_however_much_is_committed_during_it(
    tmp_path: Path,
) -> None:
    db, dest = tmp_path / "collab.db", tmp_path / "copy.db"
    ballasts = await ballast(db, 3, 4)  # ~12 MB: 3 steps or more
    writer = sqlite3.connect(db, isolation_level=None)
    made: list[str] = []

    def commit(until: int) -> None:
        # Another connection commits a new document, which SQLite's backup takes for a
        # changed source (and starts again from page 1, unless the snapshot holds).
        if len(made) < until:
            made.append(f"during/{len(made)}")
            writer.execute(
                "INSERT INTO docs (name, created_at, updated_at) VALUES (?, 0, 0)", (made[-1],)
            )

    copied: list[int] = []

    def step(done: int, total: int, until: int) -> None:
        copied.append(done)
        commit(until)

    try:
        done = back_up(db, dest, progress=lambda done, total: step(done, total, 1_000))
        assert len(made) >= 3  # a commit between every two steps
        assert copied == sorted(set(copied)) and done.restarts == 0  # each step went on
        assert set(offsets(dest)) == set(ballasts) and done.docs == len(ballasts)
        # Without the snapshot held, the same commits do restart it (three only, so that
        # it ends): steps copy the first pages again.
        during = len(made)
        copied.clear()
        with sqlite3.connect(db) as source, sqlite3.connect(tmp_path / "plain.db") as plain:
            source.backup(
                plain,
                pages=1024,
                progress=lambda _, left, total: step(total - left, total, during + 3),
            )
        assert copied != sorted(set(copied)), copied
    finally:
        writer.close()


@pytest.mark.slow  # runs the command line in a child process
async def test_a_large_database_shows_its_progress_on_stderr(tmp_path: Path) -> None:
    db, dest = tmp_path / "collab.db", tmp_path / "copy.db"
    await ballast(db, 3, 4)
    result = await asyncio.to_thread(collab, "backup", str(dest), db=db)
    assert result.returncode == 0, result.stderr.decode()
    lines = re.findall(PROGRESS_LINE, result.stderr)
    assert len(lines) >= 2, result.stderr  # the first step, and the last
    percents = [int(percent) for percent, _, _ in lines]
    assert percents == sorted(percents) and percents[0] < 100 and percents[-1] == 100
    assert b"backed up 3 documents" in result.stdout
    assert is_standalone(dest)
    with sqlite3.connect(dest) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_progress_is_a_few_lines_a_second_and_always_the_last() -> None:
    now = [0.0]
    out = io.StringIO()
    lines = ProgressLines(out, every=0.5, clock=lambda: now[0])
    for copied in range(100, 1001, 100):  # a step every 0.1 s
        lines(copied, 1000)
        now[0] += 0.1
    assert out.getvalue().splitlines() == [
        "backup: 10% (100/1000 pages)",
        "backup: 60% (600/1000 pages)",
        "backup: 100% (1000/1000 pages)",
    ]


@pytest.mark.slow  # runs the command line in a child process
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("dest exists", b"copy.db exists: give --force to replace it"),
        ("a wal of an earlier copy", b"copy.db-wal exists: give --force to replace it"),
        ("postgresql", b"use its pg_dump, e.g. pg_dump -Fc -f"),
        ("no database", b"there is no database at"),
        ("not a collab database", b"is not a collab database"),
        ("dest is the database", b"is the database being backed up"),
    ],
)
async def test_a_refused_backup_says_why_and_leaves_dest_as_it_was(
    tmp_path: Path, case: str, message: bytes
) -> None:
    db, dest = tmp_path / "collab.db", tmp_path / "copy.db"
    await ballast(db, 1, 1)
    args: list[str] = []
    if case == "dest exists":
        dest.write_bytes(b"an earlier backup")
    elif case == "a wal of an earlier copy":
        dest.with_name("copy.db-wal").write_bytes(b"its log")
    elif case == "postgresql":
        db = "postgresql://collab:secret@127.0.0.1:5432/collab"  # type: ignore[assignment]
    elif case == "no database":
        db = tmp_path / "missing.db"
    elif case == "not a collab database":
        db = tmp_path / "other.db"
        with sqlite3.connect(db) as other:
            other.execute("CREATE TABLE t (x)")
    elif case == "dest is the database":
        dest, args = db, ["--force"]
    kept = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    result = await asyncio.to_thread(collab, "backup", str(dest), *args, db=db)
    assert result.returncode == 1
    assert result.stderr.startswith(b"collab: ") and message in result.stderr, result.stderr
    assert b"secret" not in result.stderr
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == kept


async def test_force_replaces_an_earlier_copy_and_the_wal_left_beside_it(tmp_path: Path) -> None:
    db, dest = tmp_path / "collab.db", tmp_path / "copy.db"
    ballasts = await ballast(db, 2, 1)
    dest.write_bytes(b"an earlier backup")
    dest.with_name("copy.db-wal").write_bytes(b"its log")
    done = back_up(db, dest, force=True)
    assert done.docs == 2 and set(offsets(dest)) == set(ballasts)
    assert is_standalone(dest) and not dest.with_name("copy.db-wal").exists()
    assert sorted(path.name for path in tmp_path.iterdir() if "copy" in path.name) == ["copy.db"]


async def test_a_failed_backup_leaves_no_file_at_dest_nor_beside_it(tmp_path: Path) -> None:
    db, dest = tmp_path / "collab.db", tmp_path / "copy.db"
    await ballast(db, 3, 4)

    def interrupt(copied: int, total: int) -> None:
        raise KeyboardInterrupt  # as Ctrl-C does, between two steps

    with pytest.raises(KeyboardInterrupt):
        back_up(db, dest, progress=interrupt)
    # (The database gains the -wal and -shm a reader of a WAL database needs: SQLite's.)
    assert [path.name for path in tmp_path.iterdir() if "copy" in path.name] == []


async def test_a_database_a_server_holds_is_backed_up_but_never_replaced(
    make_server: Callable[..., Awaitable[RunningServer]], tmp_path: Path
) -> None:
    db, dest = tmp_path / "collab.db", tmp_path / "served.db"
    await ballast(db, 1, 1)
    await make_server(db=db)
    await make_server(db=dest)
    done = await asyncio.to_thread(back_up, db, tmp_path / "copy.db")  # beside its server
    assert done.docs == 1
    with pytest.raises(DatabaseInUse, match=r"served\.db is in use by collab process"):
        back_up(db, dest, force=True)
    with pytest.raises(StoreError, match="cannot write beside"):
        back_up(db, tmp_path / "no" / "such" / "dir.db")
