"""What is done through any server of a cluster takes effect on every server: versions and
restores, deletes, revocations; and a document spread over three servers converges. Real
PostgreSQL and redis-server, servers in this process on loopback ports."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pycrdt
import pytest

from collab.auth import mint, verify
from collab.client import Client
from collab.config import Secret
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]
SECRET = Secret("correct horse battery staple, long enough")


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


@pytest.fixture
async def cluster(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> Callable[..., Awaitable[list[RunningServer]]]:
    async def make(count: int = 3, **settings: Any) -> list[RunningServer]:
        return [
            await make_server(db=postgres_url, redis=redis_url, node_id=f"n{i}", **settings)
            for i in range(count)
        ]

    return make


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, status: int, **kw: Any) -> Any:
    async with http.request(method, url, **kw) as response:
        assert response.status == status, await response.text()
        if response.content_type == "application/json":
            return await response.json()
        return await response.text()


async def test_clients_spread_over_three_servers_converge_and_a_fresh_one_has_it_all(
    cluster: Callable[..., Awaitable[list[RunningServer]]],
) -> None:
    servers = await cluster(3)
    clients = [Client(servers[i % 3].url, "doc") for i in range(6)]
    for client in clients:
        await client.connect()
    try:
        for round_ in range(5):
            for i, client in enumerate(clients):
                text = client.doc.get("t", type=pycrdt.Text)
                text.insert(len(text), f"[{i}.{round_}]")
        expected = {f"[{i}.{r}]" for i in range(6) for r in range(5)}
        for client in clients:
            await client.wait_for(lambda c=client: all(p in text_of(c) for p in expected), 10)
        assert len({text_of(client) for client in clients}) == 1
        for server in servers:  # complete at its sync event, on every server
            async with Client(server.url, "doc") as fresh:
                assert text_of(fresh) == text_of(clients[0])
    finally:
        for client in clients:
            await client.close()


async def test_a_version_named_on_one_server_restored_through_another_reaches_every_client(
    cluster: Callable[..., Awaitable[list[RunningServer]]], http: aiohttp.ClientSession
) -> None:
    a, b, c = await cluster(3)
    async with (
        Client(a.url, "story") as on_a,
        Client(b.url, "story") as on_b,
        Client(c.url, "story") as on_c,
    ):
        on_a.doc.get("t", type=pycrdt.Text).insert(0, "Once upon a time.")
        await on_c.wait_for(lambda: text_of(on_c) == "Once upon a time.", 5)
        named = await call(
            http, "POST", f"{a.http}/api/docs/story/versions", 201, json={"label": "opening"}
        )
        text_b = on_b.doc.get("t", type=pycrdt.Text)
        text_b.insert(len(text_b), " The end.")
        for client in (on_a, on_b, on_c):
            await client.wait_for(lambda cl=client: text_of(cl).endswith("The end."), 5)
        listed = await call(http, "GET", f"{b.http}/api/docs/story/versions", 200)
        assert named["id"] in [v["id"] for v in listed["versions"]]
        await call(http, "POST", f"{c.http}/api/docs/story/versions/{named['id']}/restore", 200)
        for client in (on_a, on_b, on_c):
            await client.wait_for(lambda cl=client: text_of(cl) == "Once upon a time.", 5)
        for server in (a, b, c):
            exported = await call(http, "GET", f"{server.http}/api/docs/story?format=text", 200)
            assert "Once upon a time." in str(exported) and "The end." not in str(exported)


async def test_a_delete_through_one_server_closes_the_documents_clients_on_every_server(
    cluster: Callable[..., Awaitable[list[RunningServer]]], http: aiohttp.ClientSession
) -> None:
    a, b, c = await cluster(3)
    async with (
        Client(b.url, "doomed") as on_b,
        Client(c.url, "doomed") as on_c,
        Client(c.url, "kept") as bystander,
    ):
        on_b.doc.get("t", type=pycrdt.Text).insert(0, "soon gone")
        await on_c.wait_for(lambda: text_of(on_c) == "soon gone", 5)
        await call(http, "DELETE", f"{a.http}/api/docs/doomed", 204)
        for client in (on_b, on_c):
            await asyncio.wait_for(client.closed.wait(), 5)
            assert client.close_code == 4404
        assert not bystander.closed.is_set()
    for server in (a, b, c):
        await call(http, "GET", f"{server.http}/api/docs/doomed", 404)
        async with Client(server.url, "doomed") as fresh:
            assert text_of(fresh) == ""


def token(docs: str, permission: str = "write", **kw: Any) -> str:
    return mint(SECRET, docs, permission, now=time.time(), ttl=600, **kw)  # type: ignore[arg-type]


async def test_a_revocation_through_one_server_applies_on_every_server_within_a_second(
    cluster: Callable[..., Awaitable[list[RunningServer]]], http: aiohttp.ClientSession
) -> None:
    a, b, c = await cluster(3, auth="token", auth_secret=SECRET)
    doomed, bob = token("doc"), token("doc", subject="bob")
    async with (
        Client(b.url, "doc", params={"token": doomed}) as victim,
        Client(c.url, "doc", params={"token": bob}) as downgraded,
        Client(c.url, "doc", params={"token": token("doc")}) as bystander,
    ):
        admin = {"Authorization": f"Bearer {token('*', 'admin')}"}
        token_id = verify(SECRET, doomed, now=time.time()).token_id
        started = time.monotonic()
        await call(
            http,
            "POST",
            f"{a.http}/api/revocations",
            201,
            headers=admin,
            json={"token_id": token_id},
        )
        await call(
            http,
            "POST",
            f"{a.http}/api/revocations",
            201,
            headers=admin,
            json={"subject": "bob", "docs": "doc", "permission": "read"},
        )
        await asyncio.wait_for(victim.closed.wait(), 5)
        await downgraded.wait_for(lambda: downgraded.denied is not None, 5)
        took = time.monotonic() - started
        assert victim.close_code == 4403
        assert took < 1.0, took
        assert not bystander.closed.is_set() and not downgraded.closed.is_set()
    for server in (b, c):  # and later connections are refused by every server
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{server.url}/doc?token={doomed}")
            assert refused.value.status == 403


async def test_the_cli_on_the_database_with_redis_reaches_the_clients_of_the_servers(
    postgres_url: str,
    redis_url: str,
    cluster: Callable[..., Awaitable[list[RunningServer]]],
    http: aiohttp.ClientSession,
) -> None:
    """A document command run on the database itself, as a node of the cluster for as
    long as it runs: its restore reaches live clients at once."""
    (server,) = await cluster(1)
    async with Client(server.url, "story") as live:
        text = live.doc.get("t", type=pycrdt.Text)
        text.insert(0, "Once upon a time.")
        await live.flush()
        named = await call(
            http, "POST", f"{server.http}/api/docs/story/versions", 201, json={"label": "v1"}
        )
        text.insert(len(text), " The end.")
        await live.flush()
        base = [sys.executable, "-m", "collab"]
        where = ["--db", postgres_url, "--redis", redis_url]
        done = await asyncio.to_thread(
            subprocess.run,
            [*base, "restore", "story", str(named["id"]), *where],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        await live.wait_for(lambda: text_of(live) == "Once upon a time.", 5)
