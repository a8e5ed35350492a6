"""The stock `@hocuspocus/provider` (4.7.0, in Node, unchanged) against a real collab server:
at a document's URL and at the bare server URL, several documents over one socket, beside
y-websocket clients, with in-band tokens, read-only scope, revocation, stateless messages;
and what a Hocuspocus socket gets for frames that are wrong.

tests/interop/hocuspocus.mjs runs the providers; `npm ci --prefix tests/interop` installs them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from collab import hocuspocus
from collab.appkeys import METRICS, ROOMS
from collab.auth import mint, verify
from collab.client import Client
from collab.config import Secret
from collab.documents import Documents
from collab.errors import TooMany
from collab.hooks import Hooks, Stateless
from tests.conftest import RunningServer
from tests.test_interop import INTEROP, Node, content, node  # noqa: F401 - the fixture

SCRIPT = INTEROP / "hocuspocus.mjs"
SECRET = Secret("correct horse battery staple, long enough")
MakeServer = Callable[..., Awaitable[RunningServer]]


def token(docs: str, permission: str = "write", **kw: Any) -> str:
    return mint(SECRET, docs, permission, now=time.time(), ttl=600, **kw)  # type: ignore[arg-type]


class Providers:
    """One hocuspocus.mjs process: its providers answer one JSON line per command."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, cmd: str, doc: str, timeout: float = 20.0, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        line = json.dumps({"cmd": cmd, "doc": doc, **args}) + "\n"
        self.proc.stdin.write(line.encode())
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            answer = await self.proc.stdout.readline()
        if not answer:
            _, stderr = await self.proc.communicate()
            raise AssertionError(f"node exited ({self.proc.returncode}): {stderr.decode()[-3000:]}")
        return json.loads(answer)


async def providers(node: Node, url: str, name: str, *, shared: bool = False) -> Providers:  # noqa: F811
    if not (INTEROP / "node_modules" / "@hocuspocus" / "provider").is_dir():
        pytest.fail("run `npm ci --prefix tests/interop`: @hocuspocus/provider is missing")
    proc = await asyncio.create_subprocess_exec(
        node.executable(), str(SCRIPT), url, "--name", name, "--shared", "1" if shared else "0",
        cwd=INTEROP, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    node.procs.append(proc)
    return Providers(proc)


async def test_providers_at_a_document_url_and_the_bare_url_converge_with_y_websocket(
    server: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    doc = "hocus/converge"
    names = ["atDoc1", "atDoc2", "bare1", "bare2"]
    urls = [f"{server.url}/{doc}"] * 2 + [server.url] * 2
    clients = [await providers(node, url, name) for url, name in zip(urls, names, strict=True)]
    for client in clients:
        opened = await client.ask("open", doc)
        assert opened["synced"] and opened["scope"] == "read-write" and opened["failed"] is None
    for client, name in zip(clients, names, strict=True):
        await client.ask("insert", doc, text=f"<{name}>")
    async with Client(server.url, doc) as python:
        content(python).insert(0, "<py>")
        stock = await node.run(
            "sync", server.url, doc, "--insert", "<yws>", "--expect", "<bare2>", "--expect", "<py>"
        )
        texts = [f"<{name}>" for name in names] + ["<py>", "<yws>"]
        states = []
        for client, name in zip(clients, names, strict=True):
            others = [other for other in names if other != name]
            states.append(await client.ask("wait", doc, text=texts, peers=others, unsynced=0))
        await python.wait_for(lambda: all(t in str(content(python)) for t in texts), timeout=10)
        final = str(content(python))
    assert stock["synced"]
    assert all(state["text"] == final for state in states)
    assert all(final.count(t) == 1 for t in texts)


async def test_documents_over_one_socket_stay_separate_and_close_alone(
    server: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    both = await providers(node, server.url, "both", shared=True)
    for doc in ("one", "two"):
        assert (await both.ask("open", doc))["synced"]
    await both.ask("insert", "one", text="in one")
    await both.ask("insert", "two", text="in two")
    async with Client(server.url, "one") as one, Client(server.url, "two") as two:
        await one.wait_for(lambda: str(content(one)) == "in one", timeout=10)
        await two.wait_for(lambda: str(content(two)) == "in two", timeout=10)
        await both.ask("destroy", "one")
        content(two).insert(0, "still ")
        assert (await both.ask("wait", "two", text=["still in two"]))["text"] == "still in two"
        rooms = server.runner.app[ROOMS]
        async with asyncio.timeout(5):  # the socket left room "one" and stayed in "two"
            while len(rooms.get("one").peers) != 1:  # type: ignore[union-attr]
                await asyncio.sleep(0.02)
        assert len(rooms.get("two").peers) == 2  # type: ignore[union-attr]
    assert (await both.ask("state", "two"))["status"] == "connected"


@pytest.fixture
async def secured(make_server: MakeServer) -> RunningServer:
    return await make_server(auth="token", auth_secret=SECRET)


async def test_in_band_tokens_give_read_only_and_refuse_per_document(
    secured: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    shared = await providers(node, secured.url, "shared", shared=True)
    refused = await shared.ask("open", "secret", token=token("doc"))
    assert refused["failed"] and not refused["synced"]
    reader = await shared.ask("open", "doc", token=token("doc", "read"))
    assert reader["synced"] and reader["scope"] == "readonly" and reader["failed"] is None
    writer = await providers(node, secured.url, "writer")
    assert (await writer.ask("open", "doc", token=token("doc")))["scope"] == "read-write"
    await shared.ask("insert", "doc", text="refused edit;")
    await writer.ask("insert", "doc", text="kept edit;")
    # The writer's update is acknowledged once saved; the reader's never is.
    await writer.ask("wait", "doc", unsynced=0)
    read = await shared.ask("wait", "doc", text=["kept edit;"])
    assert read["unsynced"] > 0
    async with Client(secured.url, "doc", params={"token": token("doc")}) as check:
        await check.wait_for(lambda: "kept edit;" in str(content(check)), timeout=10)
        assert "refused edit;" not in str(content(check))


async def test_a_provider_at_a_document_url_sends_its_token_in_band_only(
    secured: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    # As TipTap's docs write it: url is the document's, the token only in-band. The
    # upgrade has no credential, so it opens; the provider's first frame carries the
    # token, checked per document as at the bare URL.
    alone = await providers(node, secured.url, "alone")
    at = f"{secured.url}/notes"
    writer = await alone.ask("open", "notes", token=token("notes"), url=at)
    assert writer["synced"] and writer["scope"] == "read-write" and writer["failed"] is None
    reader = await alone.ask("open", "notes2", token=token("notes2", "read"), url=f"{at}2")
    assert reader["synced"] and reader["scope"] == "readonly"
    refused = await alone.ask("open", "secret", token=token("notes"), url=f"{secured.url}/secret")
    assert refused["failed"] and not refused["synced"]
    await alone.ask("insert", "notes", text="in band;")
    await alone.ask("wait", "notes", unsynced=0)
    async with Client(secured.url, "notes", params={"token": token("notes")}) as check:
        await check.wait_for(lambda: "in band;" in str(content(check)), timeout=10)


async def test_a_stock_y_websocket_provider_with_no_token_is_closed_4401_once(
    secured: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    # Its upgrade opens (a Hocuspocus provider's token would be in its first frame); then
    # 4401, which y-websocket 3.1 takes as final (44xx): one socket, no reconnects.
    proc = await node.start("sync", secured.url, "doc", "--timeout", "7000")
    async with asyncio.timeout(30):
        await proc.wait()
    assert proc.returncode == 2  # it never synced
    metrics = secured.runner.app[METRICS]
    assert metrics.connections_opened == 1
    assert metrics.connections_closed["4401"] == 1


async def test_a_revoked_token_closes_its_document_and_nothing_else(
    secured: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    doomed, kept, admin = token("a"), token("b"), token("*", "admin")
    shared = await providers(node, secured.url, "shared", shared=True)
    assert (await shared.ask("open", "a", token=doomed))["synced"]
    assert (await shared.ask("open", "b", token=kept))["synced"]
    token_id = verify(SECRET, doomed, now=time.time()).token_id
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{secured.http}/api/revocations",
            headers={"Authorization": f"Bearer {admin}"},
            json={"token_id": token_id},
        ) as response:
            assert response.status == 201
            assert (await response.json())["connections"] == 1
    closed = await shared.ask("wait", "a", closed=True)
    assert closed["closed"] == "access revoked"
    async with Client(secured.url, "b", params={"token": kept}) as other:
        content(other).insert(0, "b lives")
        state = await shared.ask("wait", "b", text=["b lives"])
    assert state["status"] == "connected" and state["closed"] is None


async def test_stateless_messages_reach_the_hook_and_come_back(
    make_server: MakeServer,
    node: Node,  # noqa: F811
) -> None:
    heard: list[Stateless] = []
    started: list[Documents] = []

    async def on_stateless(event: Stateless) -> None:
        heard.append(event)
        event.reply(f"pong:{event.payload}")

    async def on_start(documents: Documents) -> None:
        started.append(documents)

    server = await make_server(hooks=Hooks(on_start=on_start, on_stateless=on_stateless))
    first = await providers(node, server.url, "first")
    second = await providers(node, server.url, "second")
    for client in (first, second):
        await client.ask("open", "talk")
    await first.ask("stateless", "talk", payload="ping")
    assert (await first.ask("wait", "talk", stateless=["pong:ping"]))["stateless"] == ["pong:ping"]
    assert [(e.doc, e.payload, e.peer.access) for e in heard] == [("talk", "ping", "admin")]
    assert started[0].send_stateless("talk", "to all") == 2
    for client in (first, second):
        assert "to all" in (await client.ask("wait", "talk", stateless=["to all"]))["stateless"]
    assert (await second.ask("state", "talk"))["stateless"] == ["to all"]


async def test_wrong_frames_on_a_hocuspocus_socket_are_answered_for_their_document(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_message_bytes=64 * 1024)
    prefix = hocuspocus.key_prefix("g")
    async with (
        Client(server.url, "g") as bystander,
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url) as sock,
    ):
        await sock.send_bytes(prefix + b"\x02\x00\x00")
        assert await sock.receive_bytes(timeout=5) == prefix + b"\x02\x02\x0aread-write"
        await sock.send_bytes(hocuspocus.key_prefix("h") + b"\x02\x00\x00")
        # A bad name is refused for that key only.
        bad = hocuspocus.key_prefix("../x")
        await sock.send_bytes(bad + b"\x02\x00\x00")
        # A malformed message for "g" closes "g" alone.
        await sock.send_bytes(prefix + b"\x00\x09\x00")
        await _receive_until(sock, bad + b"\x02\x01")
        assert (
            await _receive_until(sock, prefix + b"\x07") == prefix + b"\x07\x13unknown sync step 9"
        )
        # "h" still syncs: its SyncStep1 is answered.
        await sock.send_bytes(hocuspocus.key_prefix("h") + b"\x00\x00\x01\x00")
        answer = await _receive_until(sock, hocuspocus.key_prefix("h") + b"\x00\x01")
        assert answer
        # A frame that names no document ends the socket, with the protocol's close code.
        await sock.send_bytes(b"\xff")
        closing = await sock.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1002
        content(bystander).insert(0, "unharmed")
        await bystander.flush()
        assert not bystander.closed.is_set()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url) as big:
            await big.send_bytes(prefix + b"\x02\x00\x00")
            await big.send_bytes(prefix + b"\x05" + bytes(70 * 1024))
            assert (await _receive_close(big)) == 1009
        async with http.ws_connect(server.url) as stock:  # y-websocket at the bare URL
            await stock.send_bytes(b"\x00\x00\x01\x00")
            assert (await _receive_close(stock)) == 4400


async def _receive_until(sock: aiohttp.ClientWebSocketResponse, start: bytes) -> bytes:
    async with asyncio.timeout(5):
        while not (frame := await sock.receive_bytes()).startswith(start):
            pass
    return frame


async def _receive_close(sock: aiohttp.ClientWebSocketResponse) -> int:
    async with asyncio.timeout(5):
        while (message := await sock.receive()).type is not aiohttp.WSMsgType.CLOSE:
            pass
    assert isinstance(message.data, int)
    return message.data


async def test_a_hocuspocus_socket_that_reads_nothing_is_dropped_and_others_go_on(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_outbox_bytes=256 * 1024)
    metrics = server.runner.app[METRICS]
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url) as stuck,
        Client(server.url, "flood") as writer,
        Client(server.url, "flood") as reader,
    ):
        await stuck.send_bytes(hocuspocus.key_prefix("flood") + b"\x02\x00\x00")
        await _receive_until(stuck, hocuspocus.key_prefix("flood") + b"\x02\x02")
        # From now on `stuck` reads nothing: its kernel buffers fill, then its outbox.
        text = content(writer)
        async with asyncio.timeout(60):
            while not metrics.slow_consumers_closed:
                text.insert(len(text), "x" * 20_000)
                await writer.flush()
        await reader.wait_for(lambda: len(str(content(reader))) == len(str(text)), timeout=20)
    assert metrics.slow_consumers_closed == 1


async def test_providers_on_two_servers_of_a_cluster_converge_and_see_each_other(
    postgres_url: str,
    redis_url: str,
    make_server: MakeServer,
    node: Node,  # noqa: F811
) -> None:
    started: list[Documents] = []

    async def on_start(documents: Documents) -> None:
        started.append(documents)

    a = await make_server(
        db=postgres_url, redis=redis_url, node_id="a", hooks=Hooks(on_start=on_start)
    )
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    doc = "hocus/cluster"
    on_a = await providers(node, a.url, "onA")
    on_b = await providers(node, f"{b.url}/{doc}", "onB")
    for client in (on_a, on_b):
        assert (await client.ask("open", doc))["synced"]
    await on_a.ask("insert", doc, text="<a>")
    await on_b.ask("insert", doc, text="<b>")
    final_a = await on_a.ask("wait", doc, text=["<a>", "<b>"], peers=["onB"], unsynced=0)
    final_b = await on_b.ask("wait", doc, text=["<a>", "<b>"], peers=["onA"], unsynced=0)
    assert final_a["text"] == final_b["text"]
    async with Client(b.url, doc) as fresh:
        assert str(content(fresh)) == final_a["text"]
    # The app's broadcast on one server reaches the document's clients on the other too.
    assert started[0].send_stateless(doc, "to everyone") == 1  # the one on this server
    for client in (on_a, on_b):
        heard = await client.ask("wait", doc, stateless=["to everyone"])
        assert heard["stateless"] == ["to everyone"]


async def test_an_expired_in_band_token_closes_the_socket_and_is_refused_after(
    secured: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    short = mint(SECRET, "doc", "write", now=time.time(), ttl=2)
    client = await providers(node, secured.url, "short")
    assert (await client.ask("open", "doc", token=short))["synced"]
    # The socket closes with 4501; the provider reconnects with the same, now expired,
    # token and is refused for that document.
    state = await client.ask("wait", "doc", failed=True, timeout=20, waitTimeout=15000)
    assert "expired" in state["failed"]


async def test_a_hocuspocus_socket_past_the_message_rate_is_closed_like_y_websocket(
    make_server: MakeServer,
) -> None:
    server = await make_server(max_messages_per_second=5)
    query = hocuspocus.key_prefix("rate") + b"\x03"
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as sock:
        await sock.send_bytes(hocuspocus.key_prefix("rate") + b"\x02\x00\x00")
        for _ in range(100):
            await sock.send_bytes(query)
        assert await _receive_close(sock) == TooMany.close_code


async def test_a_provider_killed_leaves_no_ghost_cursor(
    server: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    stays, goes = (
        await providers(node, server.url, "stays"),
        await providers(node, server.url, "goes"),
    )
    for client in (stays, goes):
        await client.ask("open", "ghosts")
    assert (await stays.ask("wait", "ghosts", peers=["goes"]))["peers"] == ["goes"]
    goes.proc.kill()  # no goodbye: the server removes its presence when the socket drops
    await goes.proc.wait()
    assert (await stays.ask("wait", "ghosts", gone=["goes"]))["peers"] == []


async def test_what_sync_status_acknowledged_survives_a_kill_9(
    server_process: Any,
    node: Node,  # noqa: F811
) -> None:
    proc = server_process()
    await asyncio.to_thread(proc.start)
    writer = await providers(node, proc.url, "writer")
    await writer.ask("open", "durable")
    for i in range(50):
        await writer.ask("insert", "durable", text=f"<{i}>")
    acknowledged = await writer.ask("wait", "durable", unsynced=0)
    proc.signal(signal.SIGKILL)  # at once after the last acknowledgement: no final save
    await asyncio.to_thread(proc.wait, 10)
    await asyncio.to_thread(proc.start)
    async with Client(proc.url, "durable") as fresh:
        assert str(content(fresh)) == acknowledged["text"]
    assert acknowledged["text"] == "".join(f"<{i}>" for i in range(50))


async def test_a_downgraded_provider_is_told_it_is_read_only(
    secured: RunningServer,
    node: Node,  # noqa: F811
) -> None:
    bob = await providers(node, secured.url, "bob", shared=True)
    assert (await bob.ask("open", "doc", token=token("doc", subject="bob")))[
        "scope"
    ] == "read-write"
    assert (await bob.ask("open", "other", token=token("other", subject="bob")))["synced"]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{secured.http}/api/revocations",
            headers={"Authorization": f"Bearer {token('*', 'admin')}"},
            json={"subject": "bob", "docs": "doc", "permission": "read"},
        ) as response:
            assert (await response.json())["connections"] == 1
    assert (await bob.ask("wait", "doc", scope="readonly"))["scope"] == "readonly"
    await bob.ask("insert", "doc", text="after")
    await bob.ask("insert", "other", text="still writes")
    assert (await bob.ask("wait", "other", unsynced=0))["scope"] == "read-write"
    async with Client(secured.url, "doc", params={"token": token("doc")}) as check:
        await asyncio.sleep(0.3)
        assert "after" not in str(content(check))


async def test_a_hocuspocus_client_at_a_document_url_is_sent_only_hocuspocus_frames(
    make_server: Callable[..., Awaitable[RunningServer]],
) -> None:
    """Found with the shared harness' load generator, which reads every frame as
    Hocuspocus': the server once sent a document URL's y-websocket SyncStep1 and
    awareness before it knew the client's protocol."""
    server = await make_server()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.url}/notes") as ws,
    ):
        await ws.send_bytes(hocuspocus.key_prefix("notes") + b"\x02\x00\x00")  # Auth(token "")
        frames: list[bytes] = []
        deadline = time.monotonic() + 1.5  # past the wait for a first frame
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await ws.receive(timeout=left)
            except TimeoutError:
                break
            assert message.type is aiohttp.WSMsgType.BINARY, message
            frames.append(message.data)
    assert frames  # at least the answer to the token
    assert [hocuspocus.peek_key(frame) for frame in frames] == ["notes"] * len(frames)


async def test_a_kill_9_while_providers_type_loses_nothing_a_reader_saw(
    server_process: Any,
    node: Node,  # noqa: F811
) -> None:
    proc = server_process()
    await asyncio.to_thread(proc.start)
    writer = await providers(node, proc.url, "writer")
    reader = await providers(node, proc.url, "reader")
    await writer.ask("open", "typing")
    await reader.ask("open", "typing")
    for i in range(20):  # typing, not waiting for anything: the kill lands mid-stream
        await writer.ask("insert", "typing", text=f"<{i}>")
        await asyncio.sleep(0.01)
    await reader.ask("wait", "typing", text=["<5>"])
    for i in range(20, 60):
        await writer.ask("insert", "typing", text=f"<{i}>")
        if i == 40:
            proc.signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    seen = (await reader.ask("state", "typing"))["text"]
    assert "<5>" in seen
    await asyncio.to_thread(proc.start)
    async with Client(proc.url, "typing") as fresh:
        kept = str(content(fresh))
    # Everything the reader was sent was committed first; the writer's later edits
    # may be lost with the server (its provider sends them again on reconnecting).
    assert kept.startswith(seen), (seen, kept)
