"""The claim a server holds on its database: a second server on it is refused, naming the
first."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pycrdt

from collab.client import Client
from tests.conftest import REDIS_URL, ServerProcess


def test_a_second_server_on_the_same_database_is_refused(
    server_process: Callable[..., ServerProcess],
) -> None:
    first = server_process()
    first.start()
    second = subprocess.run(
        [sys.executable, "-m", "collab", "serve", "--port", "0", "--db", str(first.db)],
        capture_output=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert f"in use by collab process {first.proc.pid}".encode() in second.stderr  # type: ignore[union-attr]


async def test_the_nodes_of_a_cluster_share_one_sqlite_file_and_a_lone_server_is_refused(
    tmp_path: Path, redis_url: str
) -> None:
    db = tmp_path / "shared.db"
    nodes = [ServerProcess(db, tmp_path / f"node-{i}.log", "--redis", redis_url) for i in (0, 1)]
    try:
        for node in nodes:
            node.start()
        lone = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "collab", "serve", "--port", "0", "--db", str(db)],
            capture_output=True,
            timeout=30,
        )
        assert lone.returncode == 1
        assert b"in use by collab" in lone.stderr and b"pass --redis" in lone.stderr

        async with Client(nodes[0].url, "doc") as alice, Client(nodes[1].url, "doc") as bob:
            alice.doc.get("t", type=pycrdt.Text).insert(0, "one file")
            await bob.wait_for(lambda: str(bob.doc.get("t", type=pycrdt.Text)) == "one file", 5)
            bob.doc.get("t", type=pycrdt.Text).insert(0, "two nodes, ")
            await alice.wait_for(
                lambda: str(alice.doc.get("t", type=pycrdt.Text)) == "two nodes, one file", 5
            )
        # The CLI finds the file held and asks a node (which reads the shared database).
        listed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "collab", "docs", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listed.returncode == 0, listed.stderr
        # NAME, SIZE (its bytes vary with the clients' random ids), UPDATES
        name, _, _, updates = listed.stdout.splitlines()[1].split()[:4]
        assert (name, updates) == ("doc", "2")
    finally:
        for node in nodes:
            node.kill()


def test_a_cluster_node_is_refused_on_the_file_of_a_lone_server(tmp_path: Path) -> None:
    db = tmp_path / "lone.db"
    lone = ServerProcess(db, tmp_path / "lone.log")
    try:
        lone.start()
        node = subprocess.run(
            [
                sys.executable,
                "-m",
                "collab",
                "serve",
                "--port",
                "0",
                "--db",
                str(db),
                "--redis",
                REDIS_URL,
            ],
            capture_output=True,
            timeout=30,
        )
        assert node.returncode == 1
        assert f"in use by collab process {lone.proc.pid}".encode() in node.stderr  # type: ignore[union-attr]
    finally:
        lone.kill()
