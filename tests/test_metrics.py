"""/metrics scraped from a live server with prometheus-client's own parser while real
clients connect, edit, get refused and disconnect; /readyz under a database that cannot
be written; the access rules of /metrics."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pycrdt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from collab import protocol
from collab.auth import mint
from collab.client import Client
from collab.config import Secret
from collab.errors import Forbidden, TooMany, Unauthorized
from collab.metrics import METRICS, PROCESS_METRICS
from tests.conftest import RunningServer, ServerProcess, free_port
from tests.test_server import close_code, raw_socket

MakeServer = Callable[..., Awaitable[RunningServer]]
SECRET = Secret("correct horse battery staple, long enough")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_counters_move_by_what_clients_did(make_server: MakeServer) -> None:
    server = await make_server(max_connections_per_room=3, max_message_bytes=64 * 1024)
    metrics_url = server.http + "/metrics"
    before = await scrape(metrics_url)
    assert value(before, "collab_connections_open") == 0
    assert value(before, "collab_rooms_loaded") == 0

    edits = 10
    async with Client(server.url, "a") as one, Client(server.url, "a") as two:
        async with Client(server.url, "a") as reader:
            texts = [client.doc.get("t", type=pycrdt.Text) for client in (one, two, reader)]
            expected = ""
            for i in range(edits):
                writer = texts[i % 2]
                writer.insert(len(str(writer)), f"{i},")
                expected += f"{i},"
                # One at a time, so that each commit holds one update: exact counts.
                for k, client in ((2, reader), ((i + 1) % 2, (one, two)[(i + 1) % 2])):
                    await client.wait_for(lambda k=k, e=expected: str(texts[k]) == e)  # type: ignore[misc]
            one.set_awareness({"user": "ada"})
            await two.wait_for(lambda: one.client_id in two.awareness)
            await reader.wait_for(lambda: one.client_id in reader.awareness)
            during = await scrape(metrics_url)
            # A fourth client of the room is refused before the upgrade.
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(server.url + "/a")
            assert refused.value.status == TooMany.status

    assert value(during, "collab_connections_open") == 3
    assert value(during, "collab_rooms_loaded") == 1
    assert moved(before, during, "collab_connections_opened_total") == 3
    assert moved(before, during, "collab_room_loads_total") == 1
    assert moved(before, during, "collab_room_load_seconds_count") == 1
    assert moved(before, during, "collab_updates_received_total") == edits
    assert moved(before, during, "collab_updates_applied_total") == edits
    # Each update went to the two clients that did not write it.
    assert moved(before, during, "collab_updates_relayed_total") == 2 * edits
    assert moved(before, during, "collab_commit_updates_sum") == edits
    assert moved(before, during, "collab_commit_updates_count") == edits
    assert moved(before, during, "collab_commit_seconds_count") == edits
    assert moved(before, during, "collab_sync_answers_total") == 3
    assert moved(before, during, "collab_sync_answer_bytes_count") == 3
    assert moved(before, during, "collab_awareness_received_total") >= 1
    # The state went to all three (the sender too: stock clients need to hear something).
    assert moved(before, during, "collab_awareness_sent_total") >= 3
    assert moved(before, during, "collab_received_bytes_total") > edits * 3
    assert moved(before, during, "collab_sent_bytes_total") > 2 * edits * 3

    # Bad input: a frame that is no message, a text frame. Each closes its connection.
    async with raw_socket(server.url + "/b") as ws:
        await ws.send_bytes(b"\x07\x07\x07")
        assert await close_code(ws) == 1003
    async with raw_socket(server.url + "/b") as ws:
        await ws.send_str("hello")
        assert await close_code(ws) == 1003
    async with raw_socket(server.url + "/b") as ws:
        await ws.send_bytes(protocol.encode_update(b"\x01\x01\xff\xff\xff\xff\x0f"))
        assert await close_code(ws) == 1002

    after = await scrape(metrics_url)
    async with asyncio.timeout(10):
        while value(after, "collab_connections_open"):
            await asyncio.sleep(0.05)
            after = await scrape(metrics_url)
    assert moved(before, after, "collab_connections_opened_total") == 6
    assert moved(before, after, "collab_connections_closed_total", code="1000") == 3
    assert moved(before, after, "collab_connections_closed_total", code="1003") == 2
    assert moved(before, after, "collab_connections_closed_total", code="1002") == 1
    assert moved(before, after, "collab_updates_refused_total", reason="invalid") == 1
    refusal = {"status": str(TooMany.status), "reason": TooMany.code}
    assert moved(before, after, "collab_upgrades_refused_total", **refusal) == 1
    assert value(after, "collab_outbox_bytes") == 0
    assert value(after, "collab_process_resident_memory_bytes") > 0
    async with asyncio.timeout(5):  # a tick every 0.25 s
        while not moved(before, after, "collab_event_loop_lag_seconds_count"):
            await asyncio.sleep(0.1)
            after = await scrape(metrics_url)


async def test_read_only_and_quota_refusals_are_counted_by_reason(make_server: MakeServer) -> None:
    server = await make_server(auth="token", auth_secret=SECRET, max_doc_bytes=2048)
    admin = {"Authorization": "Bearer " + mint(SECRET, "*", "admin", now=time.time(), ttl=600)}
    before = await scrape(server.http + "/metrics", admin)
    read = {"token": mint(SECRET, "d", "read", now=time.time(), ttl=600)}
    write = {"token": mint(SECRET, "d", "write", now=time.time(), ttl=600)}
    async with Client(server.url, "d", params=read) as reader:
        reader.doc.get("t", type=pycrdt.Text).insert(0, "not mine")
        await reader.wait_for(lambda: reader.denied is not None)
    async with Client(server.url, "d", params=write) as writer:
        writer.doc.get("t", type=pycrdt.Text).insert(0, "x" * 4096)
        await writer.wait_for(lambda: writer.denied is not None)
    after = await scrape(server.http + "/metrics", admin)
    assert moved(before, after, "collab_updates_refused_total", reason="read_only") == 1
    assert moved(before, after, "collab_updates_refused_total", reason="quota") == 1
    assert moved(before, after, "collab_updates_applied_total") == 0


async def test_with_tokens_metrics_need_an_admin_token_or_their_own_address(
    make_server: MakeServer,
) -> None:
    apart = free_port()
    server = await make_server(
        auth="token", auth_secret=SECRET, metrics_listen=f"127.0.0.1:{apart}"
    )
    now = time.time()
    async with aiohttp.ClientSession() as session:
        async with session.get(server.http + "/metrics") as response:
            assert response.status == Unauthorized.status
        writer = mint(SECRET, "d", "write", now=now, ttl=600)
        headers = {"Authorization": f"Bearer {writer}"}
        async with session.get(server.http + "/metrics", headers=headers) as response:
            assert response.status == Forbidden.status
        # The address of its own serves the metrics alone, and asks for no token.
        async with session.get(f"http://127.0.0.1:{apart}/api/docs") as response:
            assert response.status == 404
    samples = await scrape(f"http://127.0.0.1:{apart}/metrics")
    assert value(samples, "collab_connections_open") == 0
    admin = {"Authorization": "Bearer " + mint(SECRET, "*", "admin", now=now, ttl=600)}
    await scrape(server.http + "/metrics", admin)


async def test_metrics_off_serves_none(make_server: MakeServer) -> None:
    server = await make_server(metrics="off")
    async with aiohttp.ClientSession() as session:
        async with session.get(server.http + "/metrics") as response:
            assert response.status == 404


async def exported_names(url: str) -> set[str]:
    """The names `url` exports: every family, with its series (a labelled counter that
    nothing counted yet has no series, but its family is there)."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_listed_metric_is_exported(make_server: MakeServer) -> None:
    """METRICS is what the docs and the dashboard are checked against: each name is
    exported (the cluster's only with --redis, tests/test_bus.py)."""
    server = await make_server()
    names = await exported_names(server.http + "/metrics")
    for spec in METRICS:
        assert (spec.exported in names) != spec.cluster, spec.exported
    for name in PROCESS_METRICS:
        suffix = "_total" if name.endswith("cpu_seconds") else ""
        assert f"collab_{name}{suffix}" in names


async def test_readyz_answers_503_while_the_database_cannot_be_written(
    make_server: MakeServer, db_path: Path
) -> None:
    server = await make_server()
    async with aiohttp.ClientSession() as session:

        async def ready() -> tuple[int, dict[str, str]]:
            async with asyncio.timeout(10), session.get(server.http + "/readyz") as response:
                return response.status, json.loads(await response.text())

        assert await ready() == (200, {"status": "ready", "database": "ok", "commits": "ok"})
        # Another process takes the write lock and keeps it: nothing can be written.
        holder = sqlite3.connect(db_path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            status, body = await ready()
            assert status == 503
            assert body["status"] == "not ready"
            assert "database is locked" in body["database"]
            async with session.get(server.http + "/healthz") as response:
                assert response.status == 200  # alive all the same
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (await ready())[0] == 200


async def test_readyz_answers_503_while_draining_then_the_server_stops(
    server_process: Callable[..., ServerProcess],
) -> None:
    process = server_process("--drain-seconds", "3")
    process.start()
    http = f"http://127.0.0.1:{process.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(http + "/readyz") as response:
            assert response.status == 200
        async with Client(process.url, "d") as client:
            process.signal(signal.SIGTERM)
            async with asyncio.timeout(2.5):
                while True:
                    async with session.get(http + "/readyz") as response:
                        if response.status == 503:
                            body = json.loads(await response.text())
                            assert body == {"status": "shutting down"}
                            break
                    await asyncio.sleep(0.05)
            assert not client.closed.is_set()  # still served while draining
            async with asyncio.timeout(10):
                await client.closed.wait()
            assert client.close_code == 1001
    assert await asyncio.to_thread(process.wait, 20) == 0
