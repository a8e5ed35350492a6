"""The stock npm client (yjs 13.6 + y-websocket 3.1) against a cluster: providers on
different servers of one PostgreSQL database and one Redis edit one document and see each
other's presence, as if they were on one server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from collab.client import Client
from tests.conftest import RunningServer
from tests.test_interop import Node, content, meta

MakeServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def two(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> tuple[RunningServer, RunningServer]:
    a = await make_server(db=postgres_url, redis=redis_url, node_id="a")
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    return a, b


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    runner = Node()
    yield runner
    await runner.close()


async def test_providers_on_two_servers_edit_one_document_and_converge(
    two: tuple[RunningServer, RunningServer], node: Node
) -> None:
    room, count, peers = "interop/cluster", 30, ["nodeA", "nodeB"]
    editors = [
        await node.editor(server.url, room, name, peers, count, seed)
        for seed, (server, name) in enumerate(zip(two, peers, strict=True), start=1)
    ]
    results = [await node.finish(editor, timeout=60) for editor in editors]
    assert results[0]["text"] == results[1]["text"]
    assert (
        results[0]["map"]
        == results[1]["map"]
        == {name: {"count": count, "by": "node"} for name in peers}
    )
    tokens = [f"<{name}:{i}>" for name in peers for i in range(count)]
    assert all(results[0]["text"].count(token) == 1 for token in tokens)
    for server in two:  # and each server's state is the whole document
        async with Client(server.url, room) as fresh:
            assert str(content(fresh)) == results[0]["text"]
            assert meta(fresh).to_py() == results[0]["map"]


async def test_a_providers_presence_reaches_the_clients_of_another_server_and_goes(
    two: tuple[RunningServer, RunningServer], node: Node
) -> None:
    a, b = two
    room = "interop/cluster-presence"
    async with Client(b.url, room) as client:
        client.set_awareness({"user": {"name": "python"}})
        proc = await node.start(
            "presence", a.url, room, "--name", "node", "--expect-peer", "python", stdin=True
        )
        ready = await node.read_line(proc, timeout=10)  # it saw the state from server b
        assert sorted(ready["seen"]) == ["node", "python"]
        node_id = ready["clientId"]
        await client.wait_for(lambda: node_id in client.awareness, timeout=10)
        assert client.awareness[node_id] == {"user": {"name": "node"}}
        proc.kill()  # no goodbye: server a finds the connection gone and tells b
        async with asyncio.timeout(10):
            await proc.wait()
        await client.wait_for(lambda: node_id not in client.awareness, timeout=5)
