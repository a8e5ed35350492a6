"""Fuzzing the live server: a short run of tests/fuzz.py, and the minimal reproductions
of what fuzzing found, each asserting the behaviour the README promises.

The short run starts a real `collab serve` child process and sends a few thousand random
and mutated frames in rooms of every state (empty, with content, with a pending update,
mid-sync, with presence, over 256 KiB) while `collab.client.Client` editors keep
editing; it checks the process, /healthz, the close codes, the server log, convergence,
a graceful restart, and that memory settles. The long run is
`python scripts/fuzz.py --frames 200000`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
import pytest

from collab import protocol
from collab.client import Client
from tests import fuzz
from tests.conftest import RunningServer

MakeServer = Callable[..., Awaitable[RunningServer]]


# Every room state once, then three more phases like the second, so that the memory of
# the second and the fourth phase of one kind can be compared.
PLAN = ("empty", "content", "pending", "syncing", "awareness", "large", "content", "content")
PLAN += ("content",)


# A fixed seed, so that CI runs the same frames every time (COLLAB_FUZZ_SEED picks
# another). Random seeds are for scripts/fuzz.py: about one run in six of this size
# finds a crafted history that pycrdt re-encodes unfaithfully, so that editors connected
# before and after a reload of the room differ (docs/security.md, and the xfail test in
# test_document.py); a seed that meets it would fail here on that, not on collab.
SEED = int(os.environ.get("COLLAB_FUZZ_SEED", "1"))


@pytest.mark.timeout(150)
async def test_short_fuzz_run_against_the_live_server(tmp_path: Path) -> None:
    seed = SEED
    options = fuzz.Options(
        frames=4500,
        seed=seed,
        workers=6,
        editors=2,
        states=PLAN,
        rounds=1,
        settle_seconds=2.0,
        converge_seconds=3.0,
        large_bytes=300 * 1024,
    )
    summary = await fuzz.run(options, tmp_path)
    report = f"seed {seed}\n{summary.report()}"
    figures = summary.figures

    # Not vacuous: thousands of frames of every kind, every documented close code seen,
    # connections that stayed open, mutated updates the server took, large syncs split.
    assert figures.total_frames >= 4500, report
    assert len(summary.phases) == len(PLAN), report
    for kind in ("bitflip", "truncate", "insert", "length", "random", "text", "shuffle"):
        assert figures.frames[kind] > 0, report
    assert figures.units["oversize"] > 0, report
    for outcome in ("1002", "1003", "1009", "open"):
        assert figures.outcomes[outcome] > 0, report
    assert figures.accepted_updates > 0, report
    assert figures.split_answers > 0, report
    assert summary.setup["large bytes"] > 256 * 1024, report
    assert summary.setup["pending held"] == [True], report
    assert sum(phase.edits for phase in summary.phases) > 50, report
    # The empty room is checked too when a mutated update happened to land in it.
    assert summary.setup.get("restart checked rooms", 0) >= 5, report

    # Memory settles: a second run of the same phase adds little (generous bound; the
    # absolute figure depends on the machine).
    growth = summary.rss_after("content", 4) - summary.rss_after("content", 2)
    assert growth < 30, f"RSS grew {growth:.1f} MiB between phases of one kind\n{report}"

    # Never anything but the documented close codes (or open); no undecodable answer,
    # no hang; nothing escaped a handler; documents converge and survive a restart.
    assert not figures.violations, report
    assert not summary.log_alarms, report
    assert not summary.problems, report


# --- what the fuzzing found, reduced to a few bytes -----------------------------------

# Client 2, clock 0: a string item whose parent is the item (1, 0). Until client 1 writes
# that item it waits in the document; once (1, 0) is a string, not a shared type, Yrs
# raises RuntimeError (not ValueError) on every re-apply of the pending part.
ITEM_UNDER_A_STRING = bytes.fromhex("0101020004000100017800")


async def _send_and_sync(url: str, frames: list[bytes]) -> int | None:
    """Send `frames`, then a SyncStep1; the close code if the server closes the
    connection instead of answering, None if it answers."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for frame in frames:
            await ws.send_bytes(frame)
        await ws.send_bytes(protocol.encode_sync_step1(protocol.EMPTY_STATE_VECTOR))
        async with asyncio.timeout(5):
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.BINARY:
                    return ws.close_code
                if isinstance(protocol.decode(message.data), protocol.SyncStep2):
                    return None


def _text(client: Client) -> str:
    return str(client.doc.get("t", type=pycrdt.Text))


async def test_an_update_under_a_non_type_parent_cannot_poison_the_room(
    make_server: MakeServer,
) -> None:
    """One 11-byte update must not make every later edit of the room fail, nor make its
    state unloadable (found: RuntimeError escapes Document.apply, the writer is closed
    with 1000, its edit is never stored, and after the room unloads every upgrade to it
    answers HTTP 500)."""
    server = await make_server(room_grace_seconds=0.2)
    code = await _send_and_sync(f"{server.url}/doc", [protocol.encode_update(ITEM_UNDER_A_STRING)])
    assert code in (None, 1002)
    async with Client(server.url, "doc", doc=pycrdt.Doc(client_id=1)) as alice:
        alice.doc.get("t", type=pycrdt.Text).insert(0, "ab")
        await alice.flush()
        async with Client(server.url, "doc") as bob:
            await bob.wait_for(lambda: _text(bob) == "ab", timeout=3)
        assert not alice.closed.is_set(), f"alice was closed with {alice.close_code}"
    await asyncio.sleep(1.0)  # the room unloads, snapshots, and is loaded again
    async with Client(server.url, "doc") as carol:
        assert _text(carol) == "ab"


async def test_a_deeply_nested_awareness_state_is_refused_with_1002(
    server: RunningServer,
) -> None:
    """check_awareness_state's json.loads raises RecursionError (not ProtocolError) at a
    nesting depth of about 1000; the connection must be closed with 1002, not 1000."""
    depth = 3000
    state = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    frame = protocol.encode_awareness([protocol.AwarenessEntry(7, 1, state)])
    assert await _send_and_sync(f"{server.url}/doc", [frame]) == 1002
    async with Client(server.url, "doc") as check:
        assert 7 not in check.awareness


@pytest.mark.parametrize(
    "state",
    [b'{"cursor":NaN}', b'{"a":Infinity}', "{}".encode("utf-16-le"), '{"a":1}'.encode("utf-32")],
)
async def test_awareness_states_stock_clients_cannot_parse_are_refused(
    server: RunningServer, state: bytes
) -> None:
    """y-protocols JSON.parse()s every relayed state (decoded as UTF-8): NaN, Infinity
    and UTF-16/32 text pass Python's json.loads but throw there, in every editor."""
    frame = protocol.encode_awareness([protocol.AwarenessEntry(7, 1, state)])
    assert await _send_and_sync(f"{server.url}/doc", [frame]) == 1002


async def test_newer_and_older_clocks_in_one_awareness_update_keep_the_newer(
    server: RunningServer,
) -> None:
    """Entries of one update are news each against the state before the update, so the
    older of two entries for one client, coming second, wins on the server while stock
    clients (entry after entry) keep the newer: presence differs by who you ask."""
    newer = protocol.AwarenessEntry(7, 5, b'{"v":"newer"}')
    older = protocol.AwarenessEntry(7, 3, b'{"v":"older"}')
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{server.url}/doc") as ws:
        await ws.send_bytes(protocol.encode_awareness([newer, older]))
        async with Client(server.url, "doc") as check:  # the states come with the greeting
            await check.wait_for(lambda: 7 in check.awareness, timeout=3)
            assert check.awareness[7] == {"v": "newer"}


async def test_content_after_a_clock_gap_looks_the_same_to_everyone(
    server: RunningServer,
) -> None:
    """Yrs integrates a struct whose client's earlier clocks are missing (Yjs keeps it
    pending). With a second such update, the live room and its clients show the map
    entry, while a fresh client, the REST export and the room reloaded from its snapshot
    do not: the document differs by when you joined."""
    gap = bytes.fromhex("010101052801016d016b0177017600")  # client 1, clock 5: m["k"] = "v"
    missing_origin = bytes.fromhex("010101048801000177017800")  # clock 4, after (1, 0)
    async with Client(server.url, "doc") as early:
        for update in (gap, missing_origin):  # relayed one by one, as they came
            assert (
                await _send_and_sync(f"{server.url}/doc", [protocol.encode_update(update)]) is None
            )
            await asyncio.sleep(0.2)
        seen_early = early.doc.get("m", type=pycrdt.Map).to_py()
        async with Client(server.url, "doc") as late:
            seen_late = late.doc.get("m", type=pycrdt.Map).to_py()
    assert seen_early == seen_late


# Client 1, two items whose left origins are each other: (1, 0) after (1, 1), (1, 1)
# after (1, 0). The server keeps it as pending; collab.yjs.roots follows origins to find an
# item's parent and never stops, allocating as it goes.
ORIGIN_CYCLE = bytes.fromhex("01020100880101017701788801000177017800")


@pytest.mark.timeout(60)
async def test_a_cycle_of_origins_cannot_hang_the_export(server_process: Any) -> None:
    """Found: after this 19-byte update, GET /api/docs/{name} never answers; the export
    thread spins in the origin walk that found each root's type (collab.yjs.tree refuses the
    cycle now) and the server's memory grows about 5 MB/s, and SIGTERM no longer stops
    the server. Run in a child process, killed at teardown."""
    server = server_process()
    server.start()
    url = f"{server.url}/doc"
    assert await _send_and_sync(url, [protocol.encode_update(ORIGIN_CYCLE)]) in (None, 1002)
    http = url.replace("ws://", "http://").replace("/doc", "/api/docs/doc")
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(10), session.get(http) as response:
            assert response.status in (200, 404, 409)
