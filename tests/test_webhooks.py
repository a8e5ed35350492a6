"""Webhooks end to end: a real HTTP receiver on a loopback port, real collab servers (in
this process, or child processes killed with SIGKILL), real SQLite, PostgreSQL and
Redis. Every event is verified with `standardwebhooks`, as a receiver would."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from collab.appkeys import DOCUMENTS, METRICS
from collab.config import Secret, Settings
from collab.delivery import LEASE_SECONDS, PARALLEL
from tests.conftest import RunningServer, ServerProcess, free_port

MakeServer = Callable[..., Awaitable[RunningServer]]
SECRET = Secret("whsec_" + base64.b64encode(os.urandom(32)).decode())


@dataclass
class Received:
    at: float  # time.monotonic()
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


@dataclass
class Receiver:
    """An HTTP endpoint that records every request and answers `status`; `stop()` makes
    its port refuse connections until `start()` again."""

    port: int = field(default_factory=free_port)
    status: int = 200
    fail_first: int = 0  # answer 500 to this many requests first
    fail_types: frozenset[str] = frozenset()  # answer 503 to events of these types
    requests: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if self.fail_first > 0 else self.status
        if json.loads(body)["type"] in self.fail_types:
            status = 503
        self.fail_first -= 1
        self.requests.append(Received(time.monotonic(), dict(request.headers), body, status))
        return web.Response(status=status)

    def events(self) -> list[dict[str, Any]]:
        """What was accepted (2xx), each verified, once per webhook-id, in arrival order."""
        seen: dict[str, dict[str, Any]] = {}
        for received in self.requests:
            event = Webhook(SECRET).verify(received.body, received.headers)
            event_id = received.headers["webhook-id"]
            if event_id in seen:
                assert seen[event_id] == event  # a retry is the same event
            elif 200 <= received.status < 300:
                seen[event_id] = event
        return list(seen.values())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    await made.start()
    yield made
    await made.stop()


def webhook_settings(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"webhook": (receiver.url,), "webhook_secret": SECRET, **extra}


def update(text: str) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.get("t", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with http.request(method, url, **kw) as response:
        assert response.status < 300, await response.text()
        return await response.json() if response.content_type == "application/json" else None


def of(events: list[dict[str, Any]], doc: str, *, changed: bool = False) -> list[str]:
    """The types of `doc`'s events in order (without document.changed unless asked)."""
    return [
        e["type"]
        for e in events
        if e["data"]["doc"] == doc and (changed or e["type"] != "document.changed")
    ]


# --- settings


def test_a_webhook_without_a_valid_secret_is_refused_at_start() -> None:
    for secret in ("", "not-prefixed", "whsec_short", "whsec_!!!not base64!!!"):
        with pytest.raises(ValueError, match="--webhook-secret"):
            Settings(webhook=("http://127.0.0.1:9/x",), webhook_secret=Secret(secret))
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings(webhook=("ftp://example.invalid/x",), webhook_secret=SECRET)


# --- events, headers, signatures


async def test_every_event_is_signed_verifiable_and_says_what_happened(
    make_server: MakeServer, receiver: Receiver
) -> None:
    server = await make_server(**webhook_settings(receiver))
    async with aiohttp.ClientSession() as http:
        api = server.http + "/api/docs/"
        await call(http, "POST", api + "notes/updates", data=update("hello"))
        first = await call(http, "POST", api + "notes/versions", json={"label": "first"})
        await call(http, "POST", api + "notes/updates", data=update("more "))
        restored = await call(http, "POST", api + f"notes/versions/{first['id']}/restore")
        await server.runner.app[DOCUMENTS].webhooks.changed("notes", 3)
        await server.runner.app[DOCUMENTS].webhooks.changed("notes", 3)  # recorded already
        await call(http, "DELETE", api + "notes")
    await receiver.wait_for(lambda: "document.deleted" in of(receiver.events(), "notes"))
    events = receiver.events()
    assert of(events, "notes") == [
        "document.created",
        "version.created",
        "version.restored",
        "document.deleted",
    ]
    new, created, restore, deleted = (e for e in events if e["type"] != "document.changed")
    assert new["data"] == {"doc": "notes"}
    assert created["data"] == {"doc": "notes", "version": first}
    assert restore["data"] == {
        "doc": "notes",
        "version": restored["restored"],
        "pre_restore": restored["pre_restore"],
    }
    assert deleted["data"] == {"doc": "notes"}
    assert [e["data"]["offset"] for e in events if e["type"] == "document.changed"] == [3]
    for received in receiver.requests:
        assert received.headers["Content-Type"] == "application/json"
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
        assert received.headers["webhook-id"].startswith("msg_")
        stamp = json.loads(received.body)["timestamp"]
        assert stamp.endswith("+00:00") and abs(time.time() - _parse(stamp)) < 60
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == len(receiver.requests)
    with pytest.raises(Exception, match="signature"):
        other = Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode())
        other.verify(receiver.requests[0].body, receiver.requests[0].headers)


def _parse(stamp: str) -> float:
    from collab.store import parse_time

    return parse_time(stamp)


@pytest.mark.timeout(60)
async def test_a_document_changed_while_no_event_reported_it_is_announced_once_quiet(
    server_process: Callable[..., ServerProcess], receiver: Receiver
) -> None:
    """What a server killed before its debounce fired leaves: the sender finds documents
    past their changed mark on start, and reports each once."""
    args = ("--webhook", receiver.url, "--webhook-secret", str(SECRET))
    proc = server_process(*args, "--change-debounce", "60")
    proc.start()
    base = f"http://127.0.0.1:{proc.port}"
    async with aiohttp.ClientSession() as http:
        for text in ("a", "b", "c"):
            await call(http, "POST", base + "/api/docs/quiet/updates", data=update(text))
    await receiver.wait_for(lambda: of(receiver.events(), "quiet") == ["document.created"])
    proc.kill()  # SIGKILL: the pause it waited for is never told
    again = server_process(*args, "--change-debounce", "0.2")
    again.start()
    await receiver.wait_for(lambda: bool(of(receiver.events(), "quiet", changed=True)[1:]))
    await asyncio.sleep(0.5)
    events = receiver.events()
    assert [(e["type"], e["data"].get("offset")) for e in events] == [
        ("document.created", None),
        ("document.changed", 3),
    ]


# --- retries, give-up, a dead endpoint


@pytest.mark.slow  # seconds of retries
async def test_backoff_grows_and_the_give_up_age_drops_an_event_and_the_next_goes_out(
    make_server: MakeServer, receiver: Receiver
) -> None:
    receiver.fail_types = frozenset({"document.created"})
    server = await make_server(
        **webhook_settings(
            receiver,
            webhook_retry_seconds=0.2,
            webhook_retry_max_seconds=1.0,
            webhook_give_up_seconds=3.5,
        )
    )
    webhooks = server.runner.app[DOCUMENTS].webhooks
    await webhooks.emit("document.created", "d", {})
    await webhooks.emit("document.deleted", "d", {})
    await receiver.wait_for(lambda: [e["type"] for e in receiver.events()] == ["document.deleted"])
    first_id = receiver.requests[0].headers["webhook-id"]
    tries = [r.at for r in receiver.requests if r.headers["webhook-id"] == first_id]
    # The document's next event waited for the first to be given up, then went out.
    assert receiver.requests[-1].at > tries[-1]
    assert len(receiver.requests) == len(tries) + 1
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    # Doubling from 0.2 s with jitter in each wait's second half, capped at 1 s; the last
    # try at the give-up age.
    assert len(tries) >= 5, gaps
    assert 0.1 <= gaps[0] <= 0.35, gaps
    for before, after in itertools.pairwise(gaps[:3]):
        assert after >= before * 0.9, gaps
    assert max(gaps) <= 1.2, gaps
    assert 3.0 <= tries[-1] - tries[0] <= 4.5, gaps
    metrics = server.runner.app[METRICS]
    assert metrics.webhook_give_ups["age"] == 1
    assert metrics.webhook_deliveries["failed"] == len(tries)
    assert metrics.webhook_deliveries["delivered"] == 1


@pytest.mark.slow  # seconds of retries
async def test_a_dead_endpoint_keeps_memory_flat_and_rows_in_flight_bounded(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Each failed try logs a warning, which pytest would keep in memory.
    caplog.set_level(logging.ERROR, logger="collab.delivery")
    dead = f"http://127.0.0.1:{free_port()}/nobody"  # nothing listens: refused at once
    server = await make_server(
        webhook=(dead,),
        webhook_secret=SECRET,
        webhook_retry_seconds=0.05,
        webhook_retry_max_seconds=0.2,
    )
    webhooks = server.runner.app[DOCUMENTS].webhooks
    metrics = server.runner.app[METRICS]
    for doc in range(200):
        for _ in range(5):
            await webhooks.emit("document.created", f"doc-{doc}", {"padding": "x" * 200})
    sender = webhooks.sender
    tracemalloc.start()
    try:
        await asyncio.sleep(1.0)
        failed_before, base = (
            metrics.webhook_deliveries["failed"],
            tracemalloc.get_traced_memory()[0],
        )
        most = 0
        for _ in range(40):
            await asyncio.sleep(0.1)
            most = max(most, sender.in_flight)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    tried = metrics.webhook_deliveries["failed"] - failed_before
    assert tried >= 200, tried  # every head was tried, many times over
    assert 0 < most <= PARALLEL
    print(f"dead endpoint: {tried} failed tries in 4 s, traced memory grew {grown} bytes")
    assert grown < 1_000_000, f"grew {grown} bytes over {tried} failed tries"
    assert metrics.webhook_outbox_depth() == 1000  # nothing dropped, nothing held in memory


# --- the done-when: failures, a receiver down across a kill -9, every event once


def server_args(receiver: Receiver, *extra: str) -> tuple[str, ...]:
    return (
        "--webhook",
        receiver.url,
        "--webhook-secret",
        str(SECRET),
        "--webhook-retry-seconds",
        "0.2",
        "--webhook-retry-max-seconds",
        "1",
        "--change-debounce",
        "0.2",
        *extra,
    )


async def version(http: aiohttp.ClientSession, base: str, doc: str, label: str) -> int:
    made = await call(http, "POST", f"{base}/api/docs/{doc}/versions", json={"label": label})
    return int(made["id"])


async def edit(http: aiohttp.ClientSession, base: str, doc: str, text: str) -> None:
    await call(http, "POST", f"{base}/api/docs/{doc}/updates", data=update(text))


def labels(events: list[dict[str, Any]], doc: str) -> list[str]:
    """`doc`'s events but document.changed, as type:label (of the version) in order."""
    return [
        e["type"] + ":" + str(e["data"].get("version", {}).get("label", ""))
        for e in events
        if e["data"]["doc"] == doc and e["type"] != "document.changed"
    ]


@pytest.mark.timeout(120)
async def test_a_receiver_failing_then_down_across_a_kill_gets_every_event_once_in_order(
    server_process: Callable[..., ServerProcess], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.fail_first = 4
    proc = server_process(*server_args(receiver))
    proc.start()
    base = f"http://127.0.0.1:{proc.port}"
    async with aiohttp.ClientSession() as http:
        await edit(http, base, "a", "one ")
        a1 = await version(http, base, "a", "a1")
        await edit(http, base, "b", "bee")
        await version(http, base, "b", "b1")
        await edit(http, base, "a", "two ")
        await version(http, base, "a", "a2")
        await call(http, "POST", f"{base}/api/docs/a/versions/{a1}/restore")
        await call(http, "DELETE", f"{base}/api/docs/b")
        await receiver.wait_for(lambda: len(receiver.requests) >= 6)
        await receiver.stop()  # refuses connections from now on
        await version(http, base, "a", "a3")
        await edit(http, base, "c", "sea")  # only ever reported by document.changed
        await edit(http, base, "d", "dee")
        await version(http, base, "d", "d1")
        await edit(http, base, "d", "more")
        await asyncio.sleep(1.0)  # tries meet a refused connection
        proc.kill()  # SIGKILL: nothing is flushed, nothing said goodbye
        proc.start()
        await asyncio.sleep(1.0)
        await receiver.start()
        expected = {
            "a": [
                "document.created:",
                "version.created:a1",
                "version.created:a2",
                "version.restored:a1",
                "version.created:a3",
            ],
            "b": ["document.created:", "version.created:b1", "document.deleted:"],
            "c": ["document.created:"],
            "d": ["document.created:", "version.created:d1"],
        }
        offsets = {
            doc["name"]: doc["update_count"]
            for doc in (await call(http, "GET", base + "/api/docs"))["docs"]
        }

        def complete() -> bool:
            events = receiver.events()
            changed = {
                e["data"]["doc"]: e["data"]["offset"]
                for e in events
                if e["type"] == "document.changed"
            }
            return all(labels(events, doc) == want for doc, want in expected.items()) and all(
                changed.get(doc) == offset for doc, offset in offsets.items()
            )

        try:
            await receiver.wait_for(complete, 30.0)
        finally:
            events = receiver.events()
            about = json.dumps(events, indent=1)
        await asyncio.sleep(1.5)  # nothing more comes: no event twice under two ids
    events = receiver.events()
    assert {doc: labels(events, doc) for doc in expected} == expected, about
    assert set(offsets) == {"a", "c", "d"}
    for doc in offsets:
        changes = [
            e["data"]["offset"]
            for e in events
            if e["type"] == "document.changed" and e["data"]["doc"] == doc
        ]
        assert changes == sorted(set(changes)) and changes[-1] == offsets[doc], about
    assert [r.status for r in receiver.requests[:4]] == [500] * 4
    log = proc.log_path.read_text()
    assert "failed (HTTP 500)" in log and "Cannot connect to host" in log


async def delivered(base: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "collab_webhook_deliveries_total" and sample.labels == {
                "result": "delivered"
            }:
                return float(sample.value)
    return 0.0


@pytest.mark.slow  # two server processes
@pytest.mark.timeout(120)
async def test_one_node_of_a_cluster_sends_and_another_takes_over_when_it_is_killed(
    tmp_path: Path, postgres_url: str, redis_url: str, receiver: Receiver
) -> None:
    nodes = [
        ServerProcess(
            postgres_url,
            tmp_path / f"n{i}.log",
            *server_args(receiver, "--redis", redis_url, "--node-id", f"n{i}"),
        )
        for i in range(2)
    ]
    try:
        for node in nodes:
            node.start()
        bases = [f"http://127.0.0.1:{node.port}" for node in nodes]
        async with aiohttp.ClientSession() as http:
            for i in range(4):
                await edit(http, bases[i % 2], f"x{i}", "x")
                await version(http, bases[i % 2], f"x{i}", f"v{i}")
            await receiver.wait_for(
                lambda: sum(map(len, (labels(receiver.events(), f"x{i}") for i in range(4)))) == 8
            )
            senders = [
                i
                for i, node in enumerate(nodes)
                if "this server sends them now" in node.log_path.read_text()
            ]
            assert len(senders) == 1, senders
            sender, other = senders[0], 1 - senders[0]
            assert await delivered(bases[other]) == 0
            assert await delivered(bases[sender]) == len(
                [r for r in receiver.requests if r.status == 200]
            )
            nodes[sender].kill()
            killed = time.monotonic()
            for i in range(4, 7):
                await edit(http, bases[other], f"x{i}", "x")
                await version(http, bases[other], f"x{i}", f"v{i}")
            await receiver.wait_for(
                lambda: all(len(labels(receiver.events(), f"x{i}")) == 2 for i in range(7)), 30.0
            )
            took = time.monotonic() - killed
        print(f"cluster: the other node delivered {took:.1f} s after the sender was killed")
        assert took <= LEASE_SECONDS + 3, took
        assert "this server sends them now" in nodes[other].log_path.read_text()
        events = receiver.events()
        assert {f"x{i}": labels(events, f"x{i}") for i in range(7)} == {
            f"x{i}": ["document.created:", f"version.created:v{i}"] for i in range(7)
        }
    finally:
        for node in nodes:
            node.kill()


# --- the README's receiver


README = (Path(__file__).parent.parent / "README.md").read_text()


async def test_the_readmes_receiver_verifies_and_handles_each_event_once(
    make_server: MakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    snippet = README.split("<!-- receiver -->\n```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("COLLAB_WEBHOOK_SECRET", str(SECRET))
    namespace: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(snippet, "README.md", "exec"), namespace)
    runner = web.AppRunner(namespace["app"], access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        url = f"http://127.0.0.1:{port}/collab-events"
        server = await make_server(webhook=(url,), webhook_secret=SECRET)
        async with aiohttp.ClientSession() as http:
            await edit(http, server.http, "notes", "hi")
            await version(http, server.http, "notes", "draft")
            await call(http, "DELETE", server.http + "/api/docs/notes")
            async with asyncio.timeout(15):
                while len(namespace["seen"]) < 3:
                    await asyncio.sleep(0.02)
            # A forged event is refused; a repeated one is acknowledged, not handled again.
            forged = {"webhook-id": "msg_x", "webhook-timestamp": str(int(time.time()))}
            forged["webhook-signature"] = "v1,AAAA"
            async with http.post(url, data=b"{}", headers=forged) as response:
                assert response.status == 400
            body = '{"type":"document.deleted","timestamp":"","data":{"doc":"again"}}'
            now = datetime.now(UTC)
            signed = {
                "webhook-id": "msg_repeat",
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(SECRET).sign("msg_repeat", now, body),
            }
            for _ in range(2):
                async with http.post(url, data=body.encode(), headers=signed) as response:
                    assert response.status == 204
    finally:
        await runner.cleanup()
    assert capsys.readouterr().out.splitlines() == [
        "document.created notes",
        "version.created notes",
        "document.deleted notes",
        "document.deleted again",
    ]


async def test_a_command_on_the_database_records_its_events_for_the_server_to_send(
    db_path: Path,
) -> None:
    from collab.cli import main
    from collab.store import open_store

    store = await open_store(db_path)
    await store.append({"notes": [update("hi")]})
    await store.close()
    environ = {"COLLAB_WEBHOOK": "http://127.0.0.1:9/hook", "COLLAB_WEBHOOK_SECRET": str(SECRET)}
    argv = ["version", "notes", "--label", "by hand", "--db", str(db_path)]
    assert await asyncio.to_thread(main, argv, environ) == 0
    store = await open_store(db_path)
    try:
        (due,) = await store.due(time.time() + 1, 10)
    finally:
        await store.close()
    assert due.endpoint == "http://127.0.0.1:9/hook"
    event = json.loads(due.body)
    assert (event["type"], event["data"]["version"]["label"]) == ("version.created", "by hand")
