"""Durability: restarts, SIGKILL, and rooms that unload, with servers as child processes."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt

from collab.client import Client
from tests.conftest import RunningServer, ServerProcess

MakeProcess = Callable[..., ServerProcess]


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


def has_everything_of(server_state: bytes, client_state: bytes) -> bool:
    """Whether a document holding `server_state` already holds all of `client_state`."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(server_state)
    before = doc.get_update()
    doc.apply_update(client_state)
    return doc.get_update() == before


async def test_graceful_restart_keeps_every_document(server_process: MakeProcess) -> None:
    server = server_process()
    server.start()
    for name in ("alpha", "beta/gamma"):
        async with Client(server.url, name) as client:
            client.doc.get("t", type=pycrdt.Text).insert(0, f"content of {name}")
            await client.flush()
            async with Client(server.url, name) as check:
                await check.wait_for(lambda n=name: text_of(check) == f"content of {n}")
    async with Client(server.url, "alpha") as connected:
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        await connected.closed.wait()
        assert connected.close_code == 1001  # going away: providers reconnect elsewhere
    server.start()
    for name in ("alpha", "beta/gamma"):
        async with Client(server.url, name) as client:
            assert text_of(client) == f"content of {name}"
    with sqlite3.connect(server.db) as conn:
        # Shutdown snapshotted both documents, and the snapshots cover the whole log.
        assert conn.execute("SELECT count(DISTINCT doc_id) FROM versions").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM updates").fetchone() == (0,)


async def test_sigkill_after_a_burst_keeps_every_update_another_client_received(
    server_process: MakeProcess,
) -> None:
    server = server_process()
    server.start()
    async with Client(server.url, "burst") as writer, Client(server.url, "burst") as reader:
        text = writer.doc.get("t", type=pycrdt.Text)
        for i in range(3000):
            text.insert(len(text), f"{i},")
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the burst flow while it is being made
        await reader.wait_for(lambda: len(text_of(reader)) > 2000, timeout=20)
        server.kill()
        received = reader.doc.get_update()
        seen = text_of(reader)
    server.start()
    async with Client(server.url, "burst") as after:
        restored = after.doc.get_update()
        assert has_everything_of(restored, received)
        assert text_of(after).startswith(seen)


async def test_repeated_kills_lose_nothing_that_was_received(
    server_process: MakeProcess,
) -> None:
    server = server_process()
    received: list[bytes] = []
    for round_number in range(3):
        server.start()
        async with Client(server.url, "kills") as writer, Client(server.url, "kills") as reader:
            text = writer.doc.get("t", type=pycrdt.Text)
            for i in range(500):
                text.insert(0, f"r{round_number}.{i} ")
            await reader.wait_for(lambda n=round_number: f"r{n}.400 " in text_of(reader))
            server.kill()
            received.append(reader.doc.get_update())
    server.start()
    async with Client(server.url, "kills") as after:
        restored = after.doc.get_update()
        assert all(has_everything_of(restored, state) for state in received)


async def test_empty_room_unloads_after_the_grace_period_with_a_snapshot(
    make_server: Callable[..., Awaitable[RunningServer]], db_path: Path
) -> None:
    server = await make_server(room_grace_seconds=0.3)

    async def loaded_rooms() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.http}/healthz") as response:
                return int((await response.json())["rooms"])

    async with Client(server.url, "idle") as client:
        client.doc.get("t", type=pycrdt.Text).insert(0, "keep me")
        await client.flush()
        await asyncio.sleep(0.1)
    assert await loaded_rooms() == 1  # still within the grace period
    async with asyncio.timeout(5):
        while await loaded_rooms():
            await asyncio.sleep(0.05)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM versions").fetchone() == (1,)
    async with Client(server.url, "idle") as client:
        assert text_of(client) == "keep me"


async def test_reconnecting_within_the_grace_period_keeps_the_room(
    make_server: Callable[..., Awaitable[RunningServer]], db_path: Path
) -> None:
    server = await make_server(room_grace_seconds=0.5)
    for i in range(5):
        async with Client(server.url, "flappy") as client:
            client.doc.get("t", type=pycrdt.Text).insert(0, str(i))
            await client.flush()
            await asyncio.sleep(0.05)
    # Never unloaded between the reconnects, so never snapshotted yet.
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM versions").fetchone() == (0,)
