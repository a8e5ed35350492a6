"""The application as it starts: what it tells whoever runs it."""

from __future__ import annotations

import time
from typing import Any


def test_open_mode_warns_loudly_on_a_public_address(tmp_path: Any) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "collab",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--db",
            str(tmp_path / "open.db"),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("ANYONE" in line for line in lines):
            lines.append(proc.stderr.readline().decode())
        assert any("--auth open on 0.0.0.0" in line for line in lines)
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_event_loop_setting_picks_the_loop() -> None:
    import asyncio

    import uvloop

    from collab.app import run

    seen: list[type] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()))

    run(main(), "uvloop")
    run(main(), "auto")  # uvloop is installed with the test extra
    run(main(), "asyncio")
    assert seen[0] is uvloop.Loop and seen[1] is uvloop.Loop
    assert not issubclass(seen[2], uvloop.Loop)
