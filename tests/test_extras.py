"""`pip install .` stays enough for the default server: without the cluster extra's
packages (redis, hiredis, asyncpg) it serves a SQLite file, and asking for a cluster
says what to install. Run in a child process whose imports of those packages fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCK = """
import sys
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("redis", "hiredis", "asyncpg"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _Missing())
"""

SERVE_AND_EDIT = (
    BLOCK
    + """
import asyncio
from pathlib import Path
import pycrdt
from collab.app import start
from collab.client import Client
from collab.config import Settings

async def main(db):
    runner, port = await start(Settings(port=0, db=Path(db)))
    try:
        async with Client(f"ws://127.0.0.1:{port}", "doc") as client:
            client.doc.get("t", type=pycrdt.Text).insert(0, "no extras")
            await client.flush()
        async with Client(f"ws://127.0.0.1:{port}", "doc") as again:
            assert str(again.doc.get("t", type=pycrdt.Text)) == "no extras"
    finally:
        await runner.cleanup()
    assert not [m for m in sys.modules if m.split(".")[0] in ("redis", "hiredis", "asyncpg")]
    print("served")

asyncio.run(main(sys.argv[1]))
"""
)

ASK_FOR_A_CLUSTER = (
    BLOCK
    + """
from collab.cli import main
sys.exit(main(sys.argv[1:]))
"""
)


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_the_default_server_runs_without_the_cluster_extra(tmp_path: Path) -> None:
    done = run(SERVE_AND_EDIT, str(tmp_path / "collab.db"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "served"


def test_a_cluster_without_the_cluster_extra_says_what_to_install(tmp_path: Path) -> None:
    db = str(tmp_path / "collab.db")
    for args in (
        ["serve", "--port", "0", "--db", db, "--redis", "redis://127.0.0.1:6379/0"],
        ["serve", "--port", "0", "--db", "postgresql://nobody@127.0.0.1:5432/none"],
    ):
        done = run(ASK_FOR_A_CLUSTER, *args)
        assert done.returncode == 1, done.stderr
        assert "pip install 'collab[cluster]'" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
