"""How long `collab backup` takes on a ~100 MB database while clients type, and whether it
restarts; beside it, SQLite's backup without a held snapshot on the same file and load.

A database of ballast documents (random text, through the real store) is served by
`collab serve`; typists (one client per document) insert a character every few
milliseconds, each commit a new WAL frame. Then `collab backup` runs as a user runs it,
and a plain `Connection.backup` in steps of the same size runs for at most --plain-seconds.

    python scripts/backup_under_load.py [--megabytes 100] [--typists 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt

from collab.client import Client
from collab.store.sqlite import SQLiteStore


async def ballast(db: Path, megabytes: int) -> None:
    store = await SQLiteStore.open(db)
    try:
        for index in range(max(1, megabytes // 10)):
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.get("t", type=pycrdt.Text).insert(0, os.urandom(5 * 1024 * 1024).hex())
            await store.append({f"ballast/{index}": [doc.get_update()]})
    finally:
        await store.close()


def serve(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collab", "serve", "--port", "0", "--db", str(db)],
            stdout=out,
            stderr=out,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(rb"serving documents at ws://[^:]+:(\d+)/", log.read_bytes())
        if found:
            return proc, int(found[1])
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not start: {log.read_text()}")


async def commits(port: int) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/api/docs") as response,
    ):
        return sum(doc["update_count"] for doc in (await response.json())["docs"])


async def type_into(url: str, name: str, stop: asyncio.Event, pause: float) -> None:
    async with Client(url, name) as client:
        text = client.doc.get("t", type=pycrdt.Text)
        for _ in range(200_000):  # bounded: the run stops it long before
            if stop.is_set():
                break
            text += "x"
            await asyncio.sleep(pause)
        await client.flush()


def plain_backup(db: Path, dest: Path, seconds: float) -> tuple[bool, int, int, float]:
    """SQLite's backup without a held read transaction: (finished, steps, restarts, s)."""
    steps, restarts, left = 0, 0, -1
    started = time.monotonic()

    def step(status: int, remaining: int, pages: int) -> None:
        nonlocal steps, restarts, left
        steps += 1
        if status == sqlite3.SQLITE_OK and 0 <= left <= remaining:
            restarts += 1
        left = remaining
        if time.monotonic() - started > seconds:
            raise TimeoutError

    with sqlite3.connect(db) as source, sqlite3.connect(dest) as target:
        try:
            source.backup(target, pages=1024, progress=step)
        except TimeoutError:
            return False, steps, restarts, time.monotonic() - started
    return True, steps, restarts, time.monotonic() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--typists", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between keys")
    parser.add_argument("--plain-seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "collab.db"
        await ballast(db, args.megabytes)
        print(f"database: {db.stat().st_size / 1e6:.1f} MB")
        proc, port = serve(db, Path(tmp) / "server.log")
        stop = asyncio.Event()
        url = f"ws://127.0.0.1:{port}"
        typists = [
            asyncio.create_task(type_into(url, f"typed/{i}", stop, args.pause))
            for i in range(args.typists)
        ]
        try:
            await asyncio.sleep(2.0)
            before, started = await commits(port), time.monotonic()
            backup = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "collab", "backup", f"{tmp}/copy.db", "--db", str(db)],
                capture_output=True,
                text=True,
                timeout=600,
            )
            seconds = time.monotonic() - started
            during = await commits(port) - before
            print(f"collab backup (exit {backup.returncode}, {seconds:.2f} s wall, including")
            print(f"  Python's start), {during} updates committed meanwhile:")
            print("  " + backup.stderr.strip().replace("\n", "\n  "))
            print("  " + backup.stdout.strip())
            before = await commits(port)
            finished, steps, restarts, spent = await asyncio.to_thread(
                plain_backup, db, Path(tmp) / "plain.db", args.plain_seconds
            )
            during = await commits(port) - before
            print(
                f"plain Connection.backup: {'finished' if finished else 'did not finish'} in "
                f"{spent:.1f} s, {steps} steps, {restarts} restarts, {during} updates committed"
            )
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*typists, return_exceptions=True), 30)
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
