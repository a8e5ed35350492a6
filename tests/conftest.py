"""Shared fixtures: real servers on loopback ports with real SQLite files in temp dirs."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from hypothesis import settings as hypothesis_settings
from playwright.async_api import Browser, async_playwright

from collab.app import start
from collab.config import DatabaseURL, Settings

# Example counts stay as each test sets them; no per-example deadline, since CI machines
# are shared and a slow example is not a wrong one.
hypothesis_settings.register_profile("collab", deadline=None)
hypothesis_settings.load_profile("collab")

# Tests that start Node, Chromium or server processes are `slow`, by the fixtures they use
# (or a mark of their own): `./scripts/test.sh -m "not slow"` runs the rest.
SLOW_FIXTURES = frozenset({"browser", "node", "editors", "server_process", "pages"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@dataclasses.dataclass
class RunningServer:
    """A collab server started in this process."""

    settings: Settings
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "collab.db"


@pytest.fixture
async def make_server(db_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """Start in-process servers on free ports (default: the test's database); all are
    stopped at teardown."""
    servers: list[RunningServer] = []

    async def make(**overrides: Any) -> RunningServer:
        settings = Settings(**{"port": 0, "db": db_path, **overrides})
        runner, port = await start(settings)
        servers.append(RunningServer(settings, runner, port))
        return servers[-1]

    yield make
    for running in servers:
        await running.stop()


POSTGRES_ADMIN_URL = os.environ.get("COLLAB_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


@pytest.fixture
async def postgres_url() -> AsyncIterator[DatabaseURL]:
    """The URL of a PostgreSQL database made for the test (COLLAB_TEST_POSTGRES names
    the server and a database to connect to), dropped after it. No PostgreSQL is a
    failure, never a skip."""
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} (set COLLAB_TEST_POSTGRES): "
            f"{exc}",
            pytrace=False,
        )
    name = f"collab_{secrets.token_hex(8)}"
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield DatabaseURL(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


REDIS_URL = os.environ.get("COLLAB_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_url() -> str:
    """The Redis of the tests (COLLAB_TEST_REDIS). No Redis is a failure, never a skip.
    Clusters do not mix on it: their keys are prefixed by their database."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, protocol=2, socket_timeout=5)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} (set COLLAB_TEST_REDIS): {exc}",
            pytrace=False,
        )
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[RunningServer]]) -> RunningServer:
    return await make_server()


class ServerProcess:
    """`python -m collab serve` in a child process, as a user runs it."""

    def __init__(self, db: Path | str, log_path: Path, *extra: str) -> None:
        self.db = db
        self.log_path = log_path
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 20.0) -> None:
        """Start (or restart, on the same port and database) and wait until it serves."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        args = [
            sys.executable,
            "-m",
            "collab",
            "serve",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ})
        log.close()
        self.port = self._wait_for_port(timeout, offset)

    def _wait_for_port(self, timeout: float, offset: int) -> int:
        import time

        deadline = time.monotonic() + timeout
        pattern = re.compile(rb"serving documents at ws://[^:]+:(\d+)/")
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            text = self.log_path.read_bytes()
            matches = pattern.findall(text[offset:])
            if matches:
                return int(matches[-1])
            time.sleep(0.05)
        raise TimeoutError(f"server did not start: {self.log_path.read_text()}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Any]:
    """Make child-process servers sharing one database; all are killed at teardown."""
    made: list[ServerProcess] = []

    def make(*extra: str, db: Path | None = None) -> ServerProcess:
        proc = ServerProcess(db or tmp_path / "collab.db", tmp_path / "server.log", *extra)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()


# --- browsers (Debian's Chromium, never a downloaded one) and the editor pages


CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: apt-get install chromium", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        await browser.close()


EDITOR_PAGES = Path(__file__).parent / "editors" / "dist"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def pages() -> AsyncIterator[str]:
    """The base URL of tests/editors/dist, served on a loopback port."""
    if not (EDITOR_PAGES / "codemirror.html").exists():
        pytest.fail(
            "the editor pages are not built: npm ci --prefix tests/editors && "
            "npm run build --prefix tests/editors",
            pytrace=False,
        )
    app = web.Application()
    app.router.add_static("/", EDITOR_PAGES)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def editors_server(
    make_server: Callable[..., Awaitable[RunningServer]], pages: str
) -> RunningServer:
    return await make_server(allowed_origins=pages)
