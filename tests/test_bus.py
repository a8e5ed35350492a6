"""The bus (collab/bus.py) between servers on one PostgreSQL database and one real
redis-server: what one server commits reaches the clients of the others at once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pycrdt
import pytest
import redis.asyncio as aioredis

from collab import protocol
from collab.bus import Bus, key_prefix
from collab.client import Client
from collab.errors import StoreError
from collab.metrics import METRICS
from tests.conftest import RunningServer, ServerProcess
from tests.test_metrics import exported_names, moved, scrape, value

MakeServer = Callable[..., Awaitable[RunningServer]]


def text_of(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


async def test_edits_on_either_server_reach_the_clients_of_the_other_at_once(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> None:
    a = await make_server(db=postgres_url, redis=redis_url, node_id="a")
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    async with Client(a.url, "doc") as alice, Client(b.url, "doc") as bob:
        alice.doc.get("t", type=pycrdt.Text).insert(0, "from a")
        await bob.wait_for(lambda: text_of(bob) == "from a", timeout=5)
        bob.doc.get("t", type=pycrdt.Text).insert(6, ", then b")
        await alice.wait_for(lambda: text_of(alice) == "from a, then b", timeout=5)
        async with Client(b.url, "doc") as late:  # a fresh client of either has it all
            assert text_of(late) == "from a, then b"
    samples = await scrape(a.http + "/metrics")
    assert value(samples, "collab_bus_connected") == 1
    assert value(samples, "collab_bus_updates_received_total") >= 1  # bob's
    assert value(samples, "collab_bus_published_total") >= 1
    names = await exported_names(a.http + "/metrics")
    for spec in METRICS:  # the cluster's metrics too
        assert spec.exported in names, spec.exported


async def test_two_servers_given_one_node_id_by_mistake_still_hear_each_other(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> None:
    a = await make_server(db=postgres_url, redis=redis_url, node_id="same")
    b = await make_server(db=postgres_url, redis=redis_url, node_id="same")
    async with Client(a.url, "doc") as alice, Client(b.url, "doc") as bob:
        alice.set_awareness({"name": "alice"})
        alice.doc.get("t", type=pycrdt.Text).insert(0, "hello")
        await bob.wait_for(lambda: text_of(bob) == "hello", timeout=5)
        await bob.wait_for(lambda: names_seen(bob) == {"alice"}, timeout=5)


async def test_rooms_whose_names_are_prefixes_of_each_other_never_mix(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> None:
    a = await make_server(db=postgres_url, redis=redis_url, node_id="a")
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    async with (
        Client(a.url, "doc") as short,
        Client(b.url, "doc") as short_b,
        Client(b.url, "doc2") as long_b,
    ):
        short.doc.get("t", type=pycrdt.Text).insert(0, "short")
        await short_b.wait_for(lambda: text_of(short_b) == "short", timeout=5)
        long_b.doc.get("t", type=pycrdt.Text).insert(0, "long")
        async with Client(a.url, "doc2") as long_a:
            await long_a.wait_for(lambda: text_of(long_a) == "long", timeout=5)
        assert text_of(short_b) == "short" and text_of(long_b) == "long"


def test_clusters_on_one_redis_do_not_share_keys() -> None:
    one, other = key_prefix("postgresql://h/one"), key_prefix("postgresql://h/other")
    assert one != other and one.startswith("collab:") and one == key_prefix("postgresql://h/one")


def start_redis(port: int, directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A redis-server of the test's own on `port`, keeping nothing, once it accepts."""
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(directory), *extra]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
            break
        time.sleep(0.05)
    return proc


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own on a free port, stopped by its PID after it."""
    port = free_port()
    proc = start_redis(port, tmp_path)
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def test_healthz_says_whether_the_database_and_redis_answer(
    postgres_url: str,
    own_redis: tuple[str, subprocess.Popen[bytes]],
    make_server: MakeServer,
) -> None:
    """The server's Redis stops: the server stays up and says Redis does not answer."""
    url, redis = own_redis
    server = await make_server(db=postgres_url, redis=url)
    assert await health(server) == {"status": "ok", "database": "ok", "redis": "ok"}
    redis.terminate()
    await asyncio.to_thread(redis.wait, 10)
    found = await health(server)
    assert found["status"] == "degraded" and found["database"] == "ok"
    assert "Redis does not answer" in found["redis"] or "no answer" in found["redis"]


async def test_healthz_of_a_single_server_names_its_database(make_server: MakeServer) -> None:
    server = await make_server()
    assert await health(server) == {"status": "ok", "database": "ok"}


async def health(server: RunningServer) -> dict[str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.http}/healthz", timeout=aiohttp.ClientTimeout(10)) as r:
            assert r.status == 200
            body = await r.json()
    return {key: body[key] for key in ("status", "database", "redis") if key in body}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_redis_killed_and_restarted_empty_loses_nothing_and_the_relay_resumes(
    postgres_url: str,
    own_redis: tuple[str, subprocess.Popen[bytes]],
    make_server: MakeServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kill -9 of redis-server while both servers' clients type: each server reads the
    others' commits from the database meanwhile; a new, empty redis-server on the same
    port: the relay resumes, what was published before is not needed, nobody reconnects."""
    url, redis = own_redis
    a = await make_server(db=postgres_url, redis=url, node_id="a")
    b = await make_server(db=postgres_url, redis=url, node_id="b")
    async with Client(a.url, "doc") as alice, Client(b.url, "doc") as bob:
        alice_text = alice.doc.get("t", type=pycrdt.Text)
        bob_text = bob.doc.get("t", type=pycrdt.Text)
        alice_text.insert(0, "a0 ")
        await bob.wait_for(lambda: "a0" in text_of(bob), timeout=5)

        before = await scrape(a.http + "/metrics")
        redis.kill()
        await asyncio.to_thread(redis.wait, 10)
        for i in range(1, 4):  # while Redis is away: read from the database
            alice_text.insert(len(alice_text), f"a{i} ")
            bob_text.insert(0, f"b{i} ")
            await bob.wait_for(lambda i=i: f"a{i}" in text_of(bob), timeout=10)
            await alice.wait_for(lambda i=i: f"b{i}" in text_of(alice), timeout=10)
        async with aiohttp.ClientSession() as session, session.get(a.http + "/readyz") as ready:
            assert ready.status == 503  # editing goes on, but a balancer should look elsewhere
            assert (await ready.json())["redis"] != "ok"
        away = await scrape(a.http + "/metrics")
        assert value(away, "collab_bus_connected") == 0
        assert moved(before, away, "collab_catch_ups_total") >= 1  # bob's, from the database

        restarted = await asyncio.to_thread(start_redis, port_of(url), tmp_path)
        try:
            started = time.monotonic()
            async with asyncio.timeout(10):
                while caplog.text.count("bus: Redis is back") < 2:
                    await asyncio.sleep(0.05)
            resumed = time.monotonic() - started
            alice_text.insert(len(alice_text), "after")
            bob_text.insert(0, "before ")
            await bob.wait_for(lambda: text_of(bob).endswith("after"), timeout=5)
            await alice.wait_for(lambda: text_of(alice).startswith("before "), timeout=5)
            assert text_of(alice) == text_of(bob)
            fresh = aioredis.Redis.from_url(url, protocol=2)
            try:  # the new Redis carries the relay: both servers listen to the document
                channel = key_prefix(postgres_url) + "doc:doc"
                assert await fresh.pubsub_numsub(channel) == [(channel.encode(), 2)]
            finally:
                await fresh.aclose()
            print(f"relay resumed {resumed:.2f} s after redis-server was started again")
            back = await scrape(a.http + "/metrics")
            assert value(back, "collab_bus_connected") == 1
            assert moved(before, back, "collab_bus_reconnects_total") == 1
            async with asyncio.timeout(5):  # a heartbeat a second, back through Redis
                while not moved(away, back, "collab_bus_relay_seconds_count"):
                    await asyncio.sleep(0.2)
                    back = await scrape(a.http + "/metrics")
        finally:
            restarted.kill()
            await asyncio.to_thread(restarted.wait, 10)
        assert not alice.closed.is_set() and not bob.closed.is_set()  # nobody reconnected
    for server in (a, b):
        async with Client(server.url, "doc") as late:
            assert text_of(late) == text_of(alice)


# --- presence across servers


def names_seen(client: Client) -> set[str]:
    return {state.get("name") for cid, state in client.awareness.items() if cid != client.client_id}


async def test_presence_crosses_servers_and_a_client_gone_is_removed_everywhere_at_once(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> None:
    a = await make_server(db=postgres_url, redis=redis_url, node_id="a")
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    async with Client(a.url, "doc") as alice, Client(b.url, "doc") as bob:
        alice.set_awareness({"name": "alice"})
        await bob.wait_for(lambda: names_seen(bob) == {"alice"}, timeout=5)
        bob.set_awareness({"name": "bob"})
        await alice.wait_for(lambda: names_seen(alice) == {"bob"}, timeout=5)

        # A client that vanishes without a word (its socket just closes) on A.
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{a.url}/doc")
        entry = protocol.AwarenessEntry(424242, 1, b'{"name": "ghost"}')
        await ws.send_bytes(protocol.encode_awareness([entry]))
        await bob.wait_for(lambda: names_seen(bob) == {"alice", "ghost"}, timeout=5)
        await ws.close()
        await session.close()
        await bob.wait_for(lambda: names_seen(bob) == {"alice"}, timeout=2)

    # A server that loads the room later asks the others for their clients' states.
    c = await make_server(db=postgres_url, redis=redis_url, node_id="c")
    async with Client(a.url, "doc") as carol:
        carol.set_awareness({"name": "carol"})
        await asyncio.sleep(0.1)
        async with Client(c.url, "doc") as dave:
            await dave.wait_for(lambda: names_seen(dave) == {"carol"}, timeout=5)


async def test_the_clients_of_a_server_killed_disappear_from_the_others_within_12_s(
    postgres_url: str, redis_url: str, make_server: MakeServer, tmp_path: Path
) -> None:
    """kill -9 of a server: nothing tells the others its clients left but its silence;
    after 10 s without its heartbeat they drop its clients' states."""
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    a = ServerProcess(postgres_url, tmp_path / "a.log", "--redis", redis_url, "--node-id", "a")
    await asyncio.to_thread(a.start)
    try:
        async with Client(a.url, "doc") as alice, Client(b.url, "doc") as bob:
            alice.set_awareness({"name": "alice"})
            await bob.wait_for(lambda: names_seen(bob) == {"alice"}, timeout=5)
            await asyncio.to_thread(a.kill)
            killed = time.monotonic()
            await bob.wait_for(lambda: names_seen(bob) == set(), timeout=15)
            gone_after = time.monotonic() - killed
            print(f"the killed server's client was dropped after {gone_after:.1f} s")
            assert gone_after < 12
    finally:
        await asyncio.to_thread(a.kill)


# --- who takes a document's versions


async def test_one_server_at_a_time_holds_a_documents_versions(redis_url: str) -> None:
    prefix = key_prefix(f"lease-test-{time.time()}")
    a, b = await Bus.open(redis_url, "a", prefix), await Bus.open(redis_url, "b", prefix)
    try:
        assert await a.lease("doc", 0.3)
        assert not await b.lease("doc", 0.3)
        assert await a.lease("doc", 0.3)  # renewed by its holder
        assert await b.lease("other", 0.3)  # per document
        await asyncio.sleep(0.5)  # a stopped renewing it (gone, or paused): b takes over
        assert await b.lease("doc", 30)
        assert not await a.lease("doc", 30)
    finally:
        await a.close()
        await b.close()


async def test_a_server_without_the_lease_takes_no_automatic_versions(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> None:
    server = await make_server(db=postgres_url, redis=redis_url, node_id="b", version_updates=3)
    lease = key_prefix(postgres_url) + "lease:doc"
    redis = aioredis.Redis.from_url(redis_url, protocol=2)
    await redis.set(lease, "another server", px=60_000)
    try:
        async with aiohttp.ClientSession() as http, Client(server.url, "doc") as writer:
            text = writer.doc.get("t", type=pycrdt.Text)
            for i in range(8):
                text.insert(len(text), f"{i}")
                await writer.flush()
            await asyncio.sleep(0.3)
            assert await versions(http, server) == []  # the other server's to take
            await redis.delete(lease)  # that server is gone
            for i in range(8):
                text.insert(len(text), f"{i}")
                await writer.flush()
            async with asyncio.timeout(5):
                while not await versions(http, server):
                    await asyncio.sleep(0.05)
            assert (await redis.get(lease) or b"").startswith(b"b/")
    finally:
        await redis.aclose()


async def versions(http: aiohttp.ClientSession, server: RunningServer) -> list[str]:
    async with http.get(f"{server.http}/api/docs/doc/versions") as response:
        return [v["kind"] for v in (await response.json())["versions"]]


async def test_a_delete_while_redis_is_away_reaches_the_other_servers_when_it_is_back(
    postgres_url: str,
    own_redis: tuple[str, subprocess.Popen[bytes]],
    make_server: MakeServer,
    tmp_path: Path,
) -> None:
    url, redis = own_redis
    a = await make_server(db=postgres_url, redis=url, node_id="a")
    b = await make_server(db=postgres_url, redis=url, node_id="b")
    async with Client(b.url, "doomed") as on_b, aiohttp.ClientSession() as http:
        on_b.doc.get("t", type=pycrdt.Text).insert(0, "soon gone")
        await on_b.flush()
        await asyncio.sleep(0.2)
        redis.kill()
        await asyncio.to_thread(redis.wait, 10)
        async with http.delete(f"{a.http}/api/docs/doomed") as response:
            assert response.status == 204  # the announcement is lost with Redis
        await asyncio.sleep(1.5)
        assert not on_b.closed.is_set()
        restarted = await asyncio.to_thread(start_redis, port_of(url), tmp_path)
        try:
            await asyncio.wait_for(on_b.closed.wait(), 10)
            assert on_b.close_code == 4404
        finally:
            restarted.kill()
            await asyncio.to_thread(restarted.wait, 10)


async def test_a_redis_that_stops_answering_is_left_for_the_database_until_it_answers(
    postgres_url: str,
    own_redis: tuple[str, subprocess.Popen[bytes]],
    make_server: MakeServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGSTOP of redis-server: its sockets stay open and say nothing. Each server finds
    that its own heartbeat does not come back and reads the database meanwhile; after
    SIGCONT the relay goes on."""
    url, redis = own_redis
    a = await make_server(db=postgres_url, redis=url, node_id="a")
    b = await make_server(db=postgres_url, redis=url, node_id="b")
    async with Client(a.url, "doc") as alice, Client(b.url, "doc") as bob:
        alice_text = alice.doc.get("t", type=pycrdt.Text)
        alice_text.insert(0, "before ")
        await bob.wait_for(lambda: text_of(bob) == "before ", timeout=5)
        redis.send_signal(signal.SIGSTOP)
        try:
            alice_text.insert(len(alice_text), "during ")
            await bob.wait_for(lambda: text_of(bob) == "before during ", timeout=15)
            assert caplog.text.count("Redis stopped answering") == 2
        finally:
            redis.send_signal(signal.SIGCONT)
        async with asyncio.timeout(10):
            while caplog.text.count("bus: Redis is back") < 2:
                await asyncio.sleep(0.05)
        alice_text.insert(len(alice_text), "after")
        await bob.wait_for(lambda: text_of(bob) == "before during after", timeout=5)
        assert not alice.closed.is_set() and not bob.closed.is_set()


async def test_the_bus_speaks_to_a_redis_with_a_password_and_a_database(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.to_thread(start_redis, port, tmp_path, "--requirepass", "s3cret")
    try:
        with pytest.raises(StoreError, match="cannot reach Redis"):
            await Bus.open(f"redis://:wrong@127.0.0.1:{port}/2", "x", "collab:test:")
        one = await Bus.open(f"redis://:s3cret@127.0.0.1:{port}/2", "one", "collab:test:")
        two = await Bus.open(f"redis://default:s3cret@127.0.0.1:{port}/2", "two", "collab:test:")
        try:
            heard: list[str] = []
            two.on_deleted = heard.append
            one.publish_deleted("doc")
            async with asyncio.timeout(5):
                while not heard:
                    await asyncio.sleep(0.01)
            assert heard == ["doc"] and one.connected and two.connected
            assert await one.lease("doc", 10) and not await two.lease("doc", 10)
        finally:
            await one.close()
            await two.close()
    finally:
        proc.kill()
        await asyncio.to_thread(proc.wait, 10)


async def test_a_large_update_crosses_servers(
    postgres_url: str, redis_url: str, make_server: MakeServer
) -> None:
    a = await make_server(db=postgres_url, redis=redis_url, node_id="a")
    b = await make_server(db=postgres_url, redis=redis_url, node_id="b")
    big = "0123456789abcdef" * (3 * 65536)  # 3 MiB in one update
    async with Client(a.url, "doc") as alice, Client(b.url, "doc") as bob:
        alice.doc.get("t", type=pycrdt.Text).insert(0, big)
        await bob.wait_for(lambda: text_of(bob) == big, timeout=20)


def test_a_server_whose_redis_does_not_answer_says_so_and_exits(tmp_path: Path) -> None:
    """It gives up at start (a cluster node without its bus would serve stale rooms),
    releasing what it had opened: the file's lock, the store and its threads."""
    db = tmp_path / "collab.db"
    command = [sys.executable, "-m", "collab", "serve", "--port", "0", "--db", str(db)]
    down = f"redis://127.0.0.1:{free_port()}/0"
    done = subprocess.run([*command, "--redis", down], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"cannot reach Redis at {down}" in done.stderr and "Traceback" not in done.stderr
    lone = ServerProcess(db, tmp_path / "lone.log")
    try:
        lone.start()  # the lock was released
    finally:
        lone.kill()
