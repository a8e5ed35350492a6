"""The stock npm client (yjs 13.6 + y-websocket 3.1 + ws 8) against a real collab server.

Each test runs tests/interop/client.mjs in Node child processes next to Python clients.
The Node packages come from tests/interop/package-lock.json: `npm ci --prefix tests/interop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import shutil
import signal
import string
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from collab.client import Client
from collab.config import KiB

INTEROP = Path(__file__).parent / "interop"
SCRIPT = INTEROP / "client.mjs"
# Frame bytes around a chunk: message type, sync type, length, block headers of the piece.
FRAME_MARGIN = 1 * KiB


class Node:
    """Runs client.mjs; every process it starts is killed at teardown if still running."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    @staticmethod
    def executable() -> str:
        """The `node` binary; fails the test (never skips it) if Node or the packages miss."""
        if not (INTEROP / "node_modules" / "y-websocket").is_dir():
            pytest.fail(
                "the Node interop packages are not installed: run `npm ci --prefix tests/interop`",
                pytrace=False,
            )
        executable = shutil.which("node")
        if executable is None:
            pytest.fail("`node` (v20 or later) is not on PATH; the interop tests need it")
        return executable

    async def start(self, *args: str, stdin: bool = False) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            self.executable(),
            str(SCRIPT),
            *args,
            cwd=INTEROP,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # result lines hold whole documents
        )
        self.procs.append(proc)
        return proc

    async def editor(
        self, url: str, room: str, name: str, peers: list[str], count: int, seed: int
    ) -> asyncio.subprocess.Process:
        """A provider named `name` that types `count` tokens into `room` (10 ms apart)
        and reports once it holds every peer's."""
        return await self.start(
            "edit", url, room, "--name", name, "--peers", ",".join(peers),
            "--count", str(count), "--seed", str(seed), "--delay", "10",
        )  # fmt: skip

    async def finish(self, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> Any:
        """Wait for `proc` to exit 0 and return its (last) JSON line."""
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await proc.communicate()
        except TimeoutError:
            proc.kill()
            stdout, stderr = await proc.communicate()
            raise AssertionError(
                f"node did not finish in {timeout} s\nstdout: {stdout.decode()[-2000:]}\n"
                f"stderr: {stderr.decode()[-4000:]}"
            ) from None
        assert proc.returncode == 0, (
            f"node exited with {proc.returncode}\nstderr: {stderr.decode()[-4000:]}"
        )
        lines = stdout.decode().strip().splitlines()
        assert lines, f"node printed nothing\nstderr: {stderr.decode()[-4000:]}"
        return json.loads(lines[-1])

    async def run(self, *args: str, timeout: float = 30.0) -> Any:
        return await self.finish(await self.start(*args), timeout)

    async def read_line(self, proc: asyncio.subprocess.Process, timeout: float = 20.0) -> Any:
        assert proc.stdout is not None
        async with asyncio.timeout(timeout):
            line = await proc.stdout.readline()
        if not line:
            _, stderr = await proc.communicate()
            raise AssertionError(f"node exited ({proc.returncode}): {stderr.decode()[-4000:]}")
        return json.loads(line)

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await proc.wait()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    runner = Node()
    yield runner
    await runner.close()


def content(client: Client) -> pycrdt.Text:
    return client.doc.get("content", type=pycrdt.Text)


def meta(client: Client) -> pycrdt.Map[Any]:
    return client.doc.get("meta", type=pycrdt.Map)


def has_all(client: Client, parts: list[str]) -> Callable[[], bool]:
    return lambda: all(part in str(content(client)) for part in parts)


async def test_two_node_providers_and_python_converge(server: Any, node: Node) -> None:
    room, count = "interop/concurrent", 40
    peers = ["nodeA", "nodeB", "py"]
    tokens = [f"<{peer}:{i}>" for peer in peers for i in range(count)]
    async with Client(server.url, room) as client:
        text, entries = content(client), meta(client)
        editors = [
            await node.editor(server.url, room, name, peers, count, seed)
            for seed, name in enumerate(peers[:2], start=1)
        ]
        # Start once both Node providers are typing, so that all three edit at once.
        await client.wait_for(has_all(client, ["<nodeA:0>", "<nodeB:0>"]), timeout=20)
        rng = random.Random(3)
        for i in range(count):
            # Only between tokens (after a '>'), so that no insert splits another's token.
            boundaries = [0] + [at + 1 for at, char in enumerate(str(text)) if char == ">"]
            text.insert(rng.choice(boundaries), f"<py:{i}>")
            await asyncio.sleep(0.01)
        entries["py"] = {"count": count, "by": "python"}
        await client.wait_for(
            lambda: has_all(client, tokens)() and all(peer in entries for peer in peers),
            timeout=20,
        )
        results = [await node.finish(editor) for editor in editors]
        python_text, python_map = str(text), entries.to_py()

    expected_map = {
        "nodeA": {"count": count, "by": "node"},
        "nodeB": {"count": count, "by": "node"},
        "py": {"count": count, "by": "python"},
    }
    assert python_map == expected_map
    for result in results:
        assert result["text"] == python_text
        assert result["map"] == expected_map
    assert len(python_text) == sum(map(len, tokens))
    assert all(python_text.count(token) == 1 for token in tokens)
    # The edits really interleave: authors alternate along the text many times.
    authors = [token.split(":")[0] for token in python_text[1:-1].split("><")]
    assert sum(a != b for a, b in itertools.pairwise(authors)) >= 10

    async with Client(server.url, room) as fresh:
        assert str(content(fresh)) == python_text
        assert meta(fresh).to_py() == expected_map


async def test_content_survives_graceful_restart(server_process: Any, node: Node) -> None:
    proc = server_process()
    await asyncio.to_thread(proc.start)
    room = "interop-restart"
    async with Client(proc.url, room) as client:
        content(client).insert(0, "python before restart;")
        await node.run(
            "sync",
            proc.url,
            room,
            "--insert",
            "node before restart;",
            "--expect",
            "python before restart;",
        )
        # The server relays an update only once it is committed: now both are on disk.
        await client.wait_for(has_all(client, ["node before restart;"]), timeout=10)
        expected = str(content(client))
    assert expected == "python before restart;node before restart;"

    proc.signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    await asyncio.to_thread(proc.start)

    result = await node.run("sync", proc.url, room)
    assert result["synced"]
    assert result["text"] == expected


async def test_connected_provider_reconnects_across_restart(
    server_process: Any, node: Node
) -> None:
    proc = server_process()
    await asyncio.to_thread(proc.start)
    room = "interop-reconnect"
    port = proc.port
    follower = await node.start(
        "sync",
        proc.url,
        room,
        "--insert",
        "node was here;",
        "--expect",
        "after restart;",
        "--timeout",
        "40000",
    )
    async with Client(proc.url, room) as client:
        await client.wait_for(has_all(client, ["node was here;"]), timeout=20)

    proc.signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    await asyncio.to_thread(proc.start)
    assert proc.port == port, "the restarted server must listen where the provider reconnects"

    async with Client(proc.url, room) as client:
        assert str(content(client)) == "node was here;"
        content(client).insert(len(content(client)), "after restart;")
        await client.flush()
        result = await node.finish(follower, timeout=40)
    assert result["text"] == "node was here;after restart;"
    assert result["stats"]["connections"] >= 2
    # The server said "going away" on shutdown; the provider came back and synced again.
    assert result["stats"]["closes"][0]["code"] == 1001
    assert result["events"]["synced"] >= 2
    assert result["synced"] and result["connected"]


async def test_provider_stays_synced_with_resync_interval(server: Any, node: Node) -> None:
    room = "interop-resync"
    async with Client(server.url, room) as client:
        content(client).insert(0, "seed;")
        await client.flush()
        provider = await node.start(
            "sync", server.url, room, "--resync", "500", "--hold", "3000", "--expect", "seed;"
        )
        await asyncio.sleep(1.0)
        content(client).insert(len(content(client)), "during hold;")
        result = await node.finish(provider)

    assert result["text"] == "seed;during hold;"
    assert result["synced"] and result["connected"]
    assert result["events"]["synced"] == 1
    assert result["events"]["statuses"] == ["connected"]
    assert result["events"]["connectionErrors"] == 0
    assert result["events"]["connectionCloses"] == 0
    assert result["stats"]["connections"] == 1
    assert result["stats"]["closes"] == []
    # The server answered the first SyncStep1 and the resyncs (every 500 ms for >= 3 s).
    assert result["stats"]["syncStep2"] >= 5, result["stats"]


@pytest.mark.parametrize("leave", ["null-state", "destroy", "kill"])
async def test_node_awareness_reaches_python_and_goes(server: Any, node: Node, leave: str) -> None:
    room = f"interop-awareness-{leave}"
    async with Client(server.url, room) as client:
        client.set_awareness({"user": {"name": "python"}})
        proc = await node.start("presence", server.url, room, "--name", "node", stdin=True)
        node_id = (await node.read_line(proc))["clientId"]
        await client.wait_for(lambda: node_id in client.awareness, timeout=10)
        assert client.awareness[node_id] == {"user": {"name": "node"}}

        assert proc.stdin is not None
        if leave == "null-state":
            # A removal while the provider stays connected.
            proc.stdin.write(b"leave\n")
            await proc.stdin.drain()
            await client.wait_for(lambda: node_id not in client.awareness, timeout=5)
            assert proc.returncode is None
            proc.stdin.close()
            await node.finish(proc)
        elif leave == "destroy":
            proc.stdin.close()
            await node.finish(proc)
            await client.wait_for(lambda: node_id not in client.awareness, timeout=5)
        else:
            proc.kill()
            async with asyncio.timeout(10):
                await proc.wait()
            await client.wait_for(lambda: node_id not in client.awareness, timeout=5)

        async with Client(server.url, room) as fresh:
            names = [state["user"]["name"] for state in fresh.awareness.values()]
            assert names == ["python"]


async def test_python_awareness_reaches_node(server: Any, node: Node) -> None:
    room = "interop-awareness-python"
    async with Client(server.url, room) as client:
        client.set_awareness({"user": {"name": "python"}})
        proc = await node.start(
            "presence", server.url, room, "--name", "node", "--expect-peer", "python", stdin=True
        )
        # Well under the clients' 15 s renewal: the first state must count, not a renewal.
        try:
            ready = await node.read_line(proc, timeout=8)
        except TimeoutError:
            raise AssertionError(
                "the Node provider did not see the Python client's awareness state within 8 s"
            ) from None
        assert sorted(ready["seen"]) == ["node", "python"]
        assert proc.stdin is not None
        proc.stdin.close()
        await node.finish(proc)


def _filler(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + " ", k=size))


@pytest.mark.timeout(180)
async def test_large_document_reaches_node_in_chunks(make_server: Any, node: Node) -> None:
    room, pieces, piece_size = "interop-large", 4000, 1000
    first = await make_server()
    rng = random.Random(5)
    async with Client(first.url, room) as client:
        text = content(client)
        for i in range(pieces):
            # One transaction each, at varying positions: thousands of separate structs.
            text.insert(rng.randint(0, len(text)), f"[{i:05d}]" + _filler(rng, piece_size - 7))
            if i % 250 == 0:
                await client.flush()
        await client.flush()
        expected = str(text)
    assert len(expected) == pieces * piece_size
    async with Client(first.url, room) as fresh:
        # The writer's last frames may still be in the server's hands when this one syncs;
        # they then arrive as updates.
        await fresh.wait_for(lambda: str(content(fresh)) == expected, timeout=30)

    for server, chunk in [(first, 960 * KiB), (None, 64 * KiB)]:  # the default, then smaller
        if server is None:
            await first.stop()
            server = await make_server(sync_chunk_bytes=chunk)
        assert server.settings.sync_chunk_bytes == chunk
        result = await node.run("sync", server.url, room, "--timeout", "60000", timeout=90)
        assert result["synced"]
        assert result["text"] == expected
        stats = result["stats"]
        assert stats["maxMessage"] <= chunk + FRAME_MARGIN, stats
        assert stats["updates"] + stats["syncStep2"] >= len(expected) // chunk, stats
        assert stats["closes"] == []


async def test_room_name_with_slashes_and_query_params(server: Any, node: Node) -> None:
    room = "team/notes/today"
    async with Client(server.url, room) as client:
        content(client).insert(0, "from python;")
        await client.flush()
        result = await node.run(
            "sync",
            server.url,
            room,
            "--params",
            json.dumps({"token": "x"}),
            "--insert",
            "from node;",
            "--expect",
            "from python;",
        )
        assert result["url"] == f"{server.url}/team/notes/today?token=x"
        await client.wait_for(has_all(client, ["from node;"]), timeout=10)

    async with Client(server.url, room) as fresh:
        assert str(content(fresh)) == "from python;from node;"
    for other in ["team", "team/notes", "today", "notes/today"]:
        async with Client(server.url, other) as elsewhere:
            assert str(content(elsewhere)) == ""
