"""The claim a server holds on its database: a second server on it is refused, naming the
first."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from tests.conftest import ServerProcess


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
