"""Log lines: `--log-format json` parses line by line and names the document, the peer and
the close code; the default text format is today's; no token or password reaches either,
with servers as child processes and real clients."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
import pytest

from collab import logs
from collab.auth import mint, verify
from collab.client import Client
from tests.conftest import ServerProcess

MakeProcess = Callable[..., ServerProcess]
Send = Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]]

SECRET = "correct horse battery staple, long enough"
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: .*"
)
JSON_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("GET /doc?token=abc.DEF-1&x=1 HTTP/1.1", "GET /doc?token=***&x=1 HTTP/1.1"),
        ("b'Authorization: Bearer abc.def\\x01'", "b'Authorization: Bearer ***\\x01'"),
        ("b'Cookie: session=abc; other=1'", "b'Cookie: ***'"),
        ("postgresql://collab:pa@ss@db:5432/x", "postgresql://collab:***@db:5432/x"),
        ("bus redis://:pw@127.0.0.1:6379/0", "bus redis://:***@127.0.0.1:6379/0"),
        ("bad eyJhbGciOiJIUzI1NiJ9.eyJkb2MiOiJ4In0.c2ln-_1 here", "bad *** here"),
        # What must stay as it is: our own hints, messages, URLs without a password.
        (
            "401 a token is needed: pass ?token=... or Authorization: Bearer",
            "401 a token is needed: pass ?token=... or Authorization: Bearer",
        ),
        ("refused 127.0.0.1 /doc: 401 invalid token", "refused 127.0.0.1 /doc: 401 invalid token"),
        ("at http://127.0.0.1:1234/api/docs", "at http://127.0.0.1:1234/api/docs"),
    ],
)
def test_redact_hides_credentials_and_keeps_the_rest(text: str, redacted: str) -> None:
    assert logs.redact(text) == redacted


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines, with the scope filter, to a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ScopeFilter())
    logger = logging.getLogger("collab.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines_of(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_has_the_base_fields_and_its_traceback_on_one_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    logger.warning("closed %s", "x", extra={"close_code": 1003, "document": "d"})
    try:
        raise ValueError("boom\nsecond line ?token=abcdef")
    except ValueError:
        logger.exception("failed")
    first, second = lines_of(out)
    assert JSON_TIME.fullmatch(first["time"])
    assert first == {
        "time": first["time"],
        "level": "WARNING",
        "logger": "collab.test_logs",
        "message": "closed x",
        "document": "d",
        "close_code": 1003,
    }
    assert second["message"] == "failed"
    assert second["exception"].startswith("Traceback (most recent call last):")
    assert second["exception"].endswith("ValueError: boom\nsecond line ?token=***")


async def test_the_scope_names_only_its_own_tasks_lines(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    done = asyncio.Event()
    with logs.context(peer="127.0.0.1:5000"):
        logs.add(document="notes")
        logger.info("mine")
        logger.info("about another", extra={"peer": "127.0.0.1:6000"})
        # Started here, but may serve every connection: they must not name this one.
        await asyncio.wait_for(asyncio.create_task(_log(logger, "task")), 5)
        asyncio.get_running_loop().call_soon(_log_soon, logger, done)
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.wait_for(asyncio.to_thread(logger.info, "thread"), 5)
    logger.info("after")
    by_message = {line["message"]: line for line in lines_of(out)}
    assert by_message["mine"]["peer"] == "127.0.0.1:5000"
    assert by_message["mine"]["document"] == "notes"
    assert by_message["about another"]["peer"] == "127.0.0.1:6000"
    assert by_message["about another"]["document"] == "notes"
    for other in ("task", "callback", "thread", "after"):
        assert "peer" not in by_message[other] and "document" not in by_message[other], other


async def _log(logger: logging.Logger, message: str) -> None:
    logger.info(message)


def _log_soon(logger: logging.Logger, done: asyncio.Event) -> None:
    logger.info("callback")
    done.set()


# --- a real server, as a child process


async def closed_after(url: str, send: Send, **kwargs: Any) -> tuple[str, int | None]:
    """Connect, `send`, and read until the server closes: the client's own address and
    the close code."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url, **kwargs) as ws:
        host, port = ws.get_extra_info("sockname")[:2]
        await send(ws)
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
        return f"{host}:{port}", ws.close_code


async def send_text(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str("hello")


async def send_garbage(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_bytes(b"\xff\xff\xff\xff")


async def send_oversize(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_bytes(b"\x00" * 8192)


def stopped(server: ServerProcess) -> str:
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    return server.log_path.read_text()


async def test_json_lines_parse_and_name_each_close(server_process: MakeProcess) -> None:
    server = server_process(
        "--log-format", "json", "--log-level", "debug", "--max-message-bytes", "4096"
    )
    server.start()
    async with Client(server.url, "notes") as editor:
        editor.doc.get("t", type=pycrdt.Text).insert(0, "hello")
        await editor.flush()
    closes = {
        code: await closed_after(f"{server.url}/notes", send)
        for code, send in ((1003, send_text), (1002, send_garbage), (1009, send_oversize))
    }
    for code, (_, closed_with) in closes.items():
        assert closed_with == code
    records = []
    for line in stopped(server).splitlines():
        record = json.loads(line)  # every line, or the test fails here
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        assert JSON_TIME.fullmatch(record["time"]), line
        records.append(record)
    for code, (address, _) in closes.items():
        closed = [r for r in records if r.get("close_code") == code and r.get("peer") == address]
        assert closed and all(r["document"] == "notes" for r in closed), (code, address)
        # The join line gets its fields from the connection's scope alone.
        joined = [r for r in records if r.get("peer") == address and "joined" in r["message"]]
        assert [r["document"] for r in joined] == ["notes"]
    # The editor left by itself, with 1000.
    refused = {address for address, _ in closes.values()}
    left = [r for r in records if "left (" in r["message"] and r["peer"] not in refused]
    assert [(r["document"], r["close_code"]) for r in left] == [("notes", 1000)]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", left[0]["peer"])


async def test_the_default_text_lines_are_unchanged(server_process: MakeProcess) -> None:
    server = server_process()
    server.start()
    address, code = await closed_after(f"{server.url}/notes", send_text)
    assert code == 1003
    lines = stopped(server).splitlines()
    for line in lines:
        assert TEXT_LINE.fullmatch(line), line
    assert any(
        line.endswith(
            f" WARNING collab.ws: <Peer {address} 'notes'>: closed with 1003: "
            "text frames are not part of the protocol"
        )
        for line in lines
    )


def token(docs: str = "doc", permission: str = "write", **kw: Any) -> str:
    return mint(SECRET, docs, permission, now=kw.pop("now", time.time()), **kw)


def failing(log_format: str, cwd: Path) -> Callable[..., str]:
    """Runs a collab command in `cwd` that must fail; returns its stderr."""

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "collab", *args],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=cwd,
            env={**os.environ, "COLLAB_LOG_FORMAT": log_format},
        )
        assert done.returncode == 1, done.stderr
        return done.stderr

    return run


async def raw_request(port: int, request: bytes) -> None:
    """Send bytes the HTTP parser refuses (and echoes into aiohttp's error log)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    async with asyncio.timeout(10):
        await writer.drain()
        await reader.read()  # until the server closes
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_token_or_password_reaches_the_log(
    server_process: MakeProcess, log_format: str
) -> None:
    server = server_process(
        *("--auth", "token", "--auth-secret", SECRET),
        *("--log-level", "debug", "--log-format", log_format),
    )
    server.start()
    http = f"http://127.0.0.1:{server.port}"
    valid, admin = token(subject="ann", ttl=600), token("*", "admin", ttl=600)
    revoked, short = token(ttl=600), token(ttl=3)  # exp is whole seconds: 2 s at least
    refused = {
        "expired": token(now=time.time() - 100, ttl=10),
        "foreign": mint("another secret of enough length!!", "doc", "write", now=time.time()),
        "malformed": "not-a-token-" + secrets.token_hex(12),
    }
    async with aiohttp.ClientSession() as session:
        async with Client(server.url, "doc", params={"token": valid}) as editor:
            editor.doc.get("t", type=pycrdt.Text).insert(0, "hello")
            await editor.flush()
        # Accepted, in the query and in the header, then closed by the server.
        await closed_after(f"{server.url}/doc?token={valid}", send_text)
        await closed_after(f"{server.url}/doc", send_garbage, headers=bearer(valid))
        _, expired_code = await closed_after(f"{server.url}/doc?token={short}", _wait)
        assert expired_code == 4501
        # Revoked while connected, then refused.
        async with session.ws_connect(f"{server.url}/doc?token={revoked}") as connected:
            answer = await session.post(
                f"{http}/api/revocations",
                headers=bearer(admin),
                json={"token_id": verify(SECRET, revoked, now=time.time()).token_id},
            )
            assert answer.status == 201
            async with asyncio.timeout(10):
                async for _ in connected:
                    pass
            assert connected.close_code == 4403
        refused["revoked"] = revoked
        for credential in refused.values():
            for kwargs in ({"params": {"token": credential}}, {"headers": bearer(credential)}):
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await session.ws_connect(f"{server.url}/doc", **kwargs)
                async with session.get(f"{http}/api/docs/doc", **kwargs) as response:
                    assert response.status in (401, 403)
        async with session.get(f"{http}/api/docs/doc", headers=bearer(valid)) as response:
            assert response.status == 200
    # Malformed requests that aiohttp's parser echoes, credential and all, into its log.
    await raw_request(server.port, f"GET /doc?token={valid}\x01 HTTP/1.1\r\n\r\n".encode())
    await raw_request(
        server.port, f"GET /doc HTTP/1.1\r\nAuthorization: Bearer {valid}\x01\r\n\r\n".encode()
    )
    # The CLI's messages: a refused token, unreachable databases with passwords.
    pg_password, redis_password = secrets.token_hex(12), secrets.token_hex(12)
    collab = failing(log_format, server.log_path.parent)
    cli = [
        collab("export", "doc", "--server", http, "--token", refused["malformed"]),
        collab("serve", "--port", "0", "--db", f"postgresql://collab:{pg_password}@127.0.0.1:1/c"),
        collab(
            *("serve", "--port", "0", "--db", "other.db"),
            *("--redis", f"redis://:{redis_password}@127.0.0.1:1/0"),
        ),
    ]
    log = stopped(server)
    output = log + "".join(cli)
    secrets_shown = [valid, admin, revoked, short, SECRET, pg_password, redis_password]
    for credential in [*secrets_shown, *refused.values()]:
        assert credential not in output
        assert credential.rsplit(".", 1)[-1] not in output  # not even a JWT's signature
    # The lines that would have shown them are there, redacted.
    assert "?token=***" in log and "Bearer ***" in log
    assert "collab:***@127.0.0.1:1" in output and "redis://:***@127.0.0.1:1" in output
    if log_format == "json":
        for line in output.splitlines():
            json.loads(line)  # the CLI's errors too


async def _wait(ws: aiohttp.ClientWebSocketResponse) -> None:
    del ws  # the server closes it when its token expires


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}
