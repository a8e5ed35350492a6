"""The private names of dependencies that collab reaches, there in the versions pinned.

Each has no public equivalent, and each `getattr` falls back quietly at run time; these
tests fail instead when an upgrade removes or renames one, so the workaround gets looked
at rather than silently lost.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import aiosqlite
from aiohttp import web


def test_aiohttp_still_has_the_ping_timer_cancel_collab_calls() -> None:
    # collab/ws.py `_stop_heartbeat`: aiohttp 3.14 re-arms its ping timer on close, which
    # kept finished connections in memory (found by fuzzing, tens of MiB under churn).
    assert callable(getattr(web.WebSocketResponse, "_cancel_heartbeat", None))


async def test_aiosqlite_still_keeps_its_worker_thread_where_collab_joins_it(
    tmp_path: Path,
) -> None:
    # collab/store/sqlite.py `_connect_reader`: after a failed connect aiosqlite does not wait
    # for its worker thread, which then dies on a closed loop unless collab joins it.
    conn = aiosqlite.connect(tmp_path / "x.db")
    assert isinstance(getattr(conn, "_thread", None), threading.Thread)
    await conn
    await conn.close()


def test_the_core_imports_nothing_of_aiohttp() -> None:
    """The protocol, the Yjs knowledge, the room, the journal and the store run without
    the web layer (another transport, a worker, a test can use them alone)."""
    core = "collab.protocol, collab.yjs, collab.store, collab.store.sqlite, collab.store.postgres"
    script = (
        f"import sys, {core}, collab.room, collab.journal\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert found.stdout.strip() == "[]"
