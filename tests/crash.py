"""Crash test of the durability promise: SIGKILL the server while clients edit, restart it,
and check that everything any client had received from the server is still there.

    python scripts/crash_test.py --rounds 200
    python scripts/crash_test.py --clients 6 --rooms 3 --rounds 50 --seed 7 --keep

Each round, K clients (`collab.client.Client`) join the rooms (client i in room i mod R)
of a `python -m collab serve` child process and edit continuously: inserts, deletes and
formatting in a Y.Text, sets and deletes in a Y.Map, appends and deletes in a Y.Array,
with random pauses. Every update a client receives from the server (the SyncStep2 of its
first sync, and the live updates of the other clients) is recorded. Once every client has
received live updates, the server is killed with SIGKILL at a random moment, the clients
are closed, and the server is restarted on the same port and database. Then, for every
client, each update it received must be contained in the restarted server's state
(`GET /api/docs/{name}?format=update`): its structs' clock ranges and its deletions. As a
second, independent check, the received updates applied over a copy of the server state
must change nothing (state vector, encoded state and content). The rooms' documents carry
on growing from round to round, so what survived one crash must survive the next ones.

Updates a client made that never came back to it may be lost (the protocol has no acks);
how many were is reported as a figure, not a failure. Any loss of a received update exits
1 and keeps the run's directory (database, server log, the received updates and a JSON
report of what is missing).

With `--nodes N` (N > 1) the same test runs on a cluster, the configuration in which a
kill must not lose anything either: N servers share one PostgreSQL database and relay
over Redis (docs/architecture.md), and each room's clients are spread over the nodes.

    python scripts/crash_test.py --nodes 3 --clients 6 --rooms 2 --rounds 20
    python scripts/crash_test.py --nodes 3 --clients 6 --rooms 2 --rounds 5 --rolling

Each round one node, chosen at random, is SIGKILLed; its clients move to the other nodes
(new connections of the same docs, as a provider behind a load balancer reconnects) and
carry on editing until they hear the others again; the node restarts on its port with
its node id. Then every node's state of every room must become equal within a bounded
time (a node that missed an announcement finds the gap by the next offset it hears of),
and what every client received, through any of its connections, must be in the state of
a node that was not killed. With `--rolling` a round SIGTERMs each node in turn (waiting
for its exit, code 0, and restarting it) while clients type: the upgrade of a cluster.
Rooms left diverged fail the run as losses do. Without `--db` the script makes a fresh
PostgreSQL database for the run, dropped after a run that passed.

With `--kill-redis` no node is touched: Redis is what dies, the failure the cluster must
absorb without anyone noticing (docs/deployment.md: "Editing goes on on every server...
Nobody reconnects").

    python scripts/crash_test.py --nodes 3 --clients 6 --rooms 2 --rounds 20 --kill-redis

The script runs a redis-server of its own on a free port (the machine's Redis is not
its to kill). Each round, while the clients of every room type on every node, it is
SIGKILLed at a random moment; the clients type on for a random while (`--min-down`,
`--max-down`) and a new, empty redis-server starts on the same port. Besides losses and
divergence as above, a round fails if a connection was closed (nobody may reconnect),
if a node did not log "bus: Redis is back" within 2 s of the new Redis accepting
connections, if fewer servers listen to a room's channel on the new Redis than have
clients of it (the relay resumed), or if, Redis being down longer than 2 s, a
client received no edit made meanwhile by a client of another node (the nodes read each
other's commits from the database). The delay from an edit on one node to its arrival
at a client of another is reported for both paths, the database and the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import bisect
import contextlib
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pycrdt

from collab import protocol
from collab.client import Client
from collab.yjs.update import structs

TEXT, MAP, ARRAY = "content", "meta", "items"
EMPTY_UPDATE = b"\x00\x00"
SERVING = re.compile(rb"serving documents at ws://[^:]+:(\d+)/")


@dataclass
class Options:
    clients: int = 4
    rooms: int = 2
    rounds: int = 20
    seed: int | None = None
    min_kill: float = 0.3  # seconds after every client is busy
    max_kill: float = 2.0
    max_pause: float = 0.02  # between two edits of one client
    version_updates: int = 100  # small, so crashes also land around versions
    server_args: list[str] = field(default_factory=list)
    round_timeout: float = 120.0
    # A cluster: with nodes > 1, that many servers share the PostgreSQL database `db` and
    # relay over the Redis `redis`; clients of each room are spread over the nodes.
    nodes: int = 1
    db: str | None = None  # default: an SQLite file in the run's directory (one node)
    redis: str | None = None
    rolling: bool = False  # cluster: each round SIGTERMs every node in turn, no SIGKILL
    converge_timeout: float = 20.0  # for the nodes' states of each room to become equal
    # Cluster, --kill-redis: the run's own redis-server is killed each round instead of a
    # node, left down for min_down..max_down seconds, and started again empty.
    kill_redis: bool = False
    min_down: float = 1.0
    max_down: float = 3.0
    max_resume: float = 2.0  # new Redis accepting -> every node relays again (the promise)
    # Down this long, every client must receive edits other nodes' clients made meanwhile:
    # the nodes read the database each second (docs/deployment.md).
    starved_after: float = 2.0


# --- the server ------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: its own process group, and SIGKILL when this script dies (Linux)."""
    os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ServerProcess:
    """`python -m collab serve` in a child process of its own process group.

    Start it from the main thread (the parent-death signal follows the starting thread).
    """

    def __init__(self, db: Path | str, log_path: Path, extra: list[str]) -> None:
        self.db = db
        self.log_path = log_path
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, port: int) -> int:
        """Start the process; returns the log offset where its output begins."""
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== crash_test: start {self.starts} (port {port})\n".encode())
            log.flush()
            offset = log.tell()
            args = [sys.executable, "-m", "collab", "serve", "--port", str(port)]
            args += ["--db", str(self.db), *self.extra]
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
        _LIVE.add(self)
        return offset

    async def start(self, timeout: float = 30.0) -> None:
        """Start (on the last port if there was one) and wait for the "serving" line."""
        for port in dict.fromkeys((self.port, 0)):
            offset = self.spawn(port)
            try:
                self.port = await self._wait_serving(offset, timeout)
                return
            except RuntimeError:
                if port == 0:
                    raise
                # The old port could not be taken again: fall back to any free port.

    async def _wait_serving(self, offset: int, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := SERVING.search(self._log_from(offset)):
                return int(match.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            await asyncio.sleep(0.01)
        self.kill()
        raise TimeoutError(f"server did not start within {timeout} s: {self.tail()}")

    def _log_from(self, offset: int) -> bytes:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read()

    def kill(self) -> None:
        """SIGKILL the server's process group and reap it (bounded)."""
        if self.proc is None:
            return
        if self.proc.returncode is None:  # not reaped yet: its pid is still its group's id
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        _LIVE.discard(self)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop: connections closed with 1001, rooms saved) and wait
        for the exit; returns its code. Killed if it does not exit within `timeout`."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"no exit {timeout} s after SIGTERM: {self.tail()}") from None
        _LIVE.discard(self)
        return code

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_size(self) -> int:
        """Where the log's next line will begin: what the server says from now on."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0


class RedisProcess:
    """The run's own redis-server (`--kill-redis`), on a free port it keeps across
    restarts, without persistence: each start is a new, empty Redis, as one restarted on
    a host without its disk would be. Killed by its PID only: the machine's own Redis (and
    any other) is not the harness's to touch.

    Start it from the main thread (the parent-death signal follows the starting thread).
    """

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"  # where it would write, were persistence on
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "redis.log"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process (not waiting for it to accept connections)."""
        self.starts += 1
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        with open(self.log_path, "ab") as log:
            log.write(f"=== crash_test: start {self.starts} (port {self.port})\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self)
        return self.proc

    async def start(self, timeout: float = 10.0) -> float:
        """Start a new redis-server on the port; returns the monotonic time at which it
        first accepted a connection (what the nodes' reconnection is measured from)."""
        proc = self.spawn()
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}") from None
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(f"redis-server not accepting within {timeout} s") from None
                await asyncio.sleep(0.005)
                continue
            accepted = time.monotonic()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if proc.poll() is not None:  # someone else's on the port: not ours
                raise RuntimeError(f"redis-server exited with {proc.returncode}")
            return accepted

    def kill(self) -> None:
        """kill -9 of the redis-server, by its PID, and reap it (bounded)."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        _LIVE.discard(self)

    async def subscribers(self, prefix: str, names: list[str]) -> dict[str, int]:
        """Room -> how many servers listen to its channel on this Redis (the relay)."""
        import redis.asyncio as aioredis  # the cluster extra's

        client = aioredis.Redis.from_url(self.url, protocol=2, socket_timeout=10)
        try:
            counts = await client.pubsub_numsub(*(f"{prefix}doc:{name}" for name in names))
            return {name: int(count) for name, (_, count) in zip(names, counts, strict=True)}
        finally:
            await client.aclose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Servers (and the run's redis-server) to kill at exit, however the script ends.
_LIVE: set[ServerProcess | RedisProcess] = set()


def kill_all_servers() -> None:
    for server in list(_LIVE):
        server.kill()


atexit.register(kill_all_servers)


# --- clients -----------------------------------------------------------------------------


class RecordingClient(Client):
    """A Client that keeps every update it received from the server, in order.

    The client has no public hook for received updates; `_handle` is where every message
    from the server passes, so this wraps it and records what was applied.
    """

    def __init__(self, url: str, name: str, *, doc: pycrdt.Doc[Any]) -> None:
        super().__init__(url, name, doc=doc)
        self.room = name
        self.received: list[bytes] = []
        self.arrived: list[float] = []  # when each of `received` came (monotonic)
        self.sync_updates = 0  # of the first sync: its SyncStep2 and any pieces before it
        self.live_updates = 0  # after it: other clients' edits, relayed by the server
        self.edits = 0  # local transactions
        self.live = asyncio.Event()  # set on the first live update

    def _handle(self, message: protocol.Message) -> None:
        # Until the SyncStep2, updates are pieces of a large first sync (or edits relayed
        # while it was on its way): counted with the first sync.
        first_sync = not self.synced.is_set()
        super()._handle(message)  # raises if the update could not be applied
        if isinstance(message, protocol.SyncUpdate | protocol.SyncStep2):
            if message.update == EMPTY_UPDATE:
                return
            self.received.append(message.update)
            self.arrived.append(time.monotonic())
            if first_sync:
                self.sync_updates += 1
            else:
                self.live_updates += 1
                self.live.set()

    def successor(self, url: str) -> RecordingClient:
        """A new connection of the same doc to the server at `url`, recording on into the
        same list: a Client does not reconnect by itself, and in a cluster what a client
        received through any of its connections must survive."""
        successor = RecordingClient(url, self.room, doc=self.doc)
        successor.received = self.received
        successor.arrived = self.arrived
        successor.sync_updates = self.sync_updates
        successor.live_updates = self.live_updates
        successor.edits = self.edits
        return successor


_WORDS = "lorem ipsum dolor sit amet crash kill durable commit relay sync wal".split()


def edit_once(doc: pycrdt.Doc[Any], rng: random.Random) -> None:
    """One random transaction; the text stays around a few thousand characters."""
    text = doc.get(TEXT, type=pycrdt.Text)
    meta = doc.get(MAP, type=pycrdt.Map)
    items = doc.get(ARRAY, type=pycrdt.Array)
    op = rng.random()
    size = len(text)
    with doc.transaction():
        if (op < 0.5 and size < 4000) or size == 0:
            word = rng.choice(_WORDS) + rng.choice(" .,\n")
            text.insert(rng.randint(0, size), word[: rng.randint(1, len(word))])
        elif op < 0.75:
            start = rng.randrange(size)
            del text[start : min(size, start + rng.randint(1, 12))]
        elif op < 0.8:
            start = rng.randrange(size)
            end = min(size, start + rng.randint(1, 20))
            text.format(start, end, {rng.choice(("bold", "italic")): rng.choice((True, None))})
        elif op < 0.93:
            key = f"k{rng.randrange(16)}"
            if rng.random() < 0.2 and key in meta:
                del meta[key]
            else:
                meta[key] = rng.choice((rng.randrange(1000), rng.choice(_WORDS), [1, 2], None))
        elif len(items) > 40 or (len(items) and rng.random() < 0.3):
            del items[rng.randrange(len(items))]
        else:
            items.append(rng.choice((rng.randrange(1000), rng.choice(_WORDS))))


async def edit(client: RecordingClient, rng: random.Random, max_pause: float) -> None:
    while not client.closed.is_set():
        edit_once(client.doc, rng)
        client.edits += 1
        await asyncio.sleep(rng.uniform(0, max_pause))


# --- the check ---------------------------------------------------------------------------

Ranges = dict[int, list[tuple[int, int]]]  # client -> sorted, merged [start, end)


def _var_uint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _merged(ranges: dict[int, list[tuple[int, int]]]) -> Ranges:
    out: Ranges = {}
    for client, spans in ranges.items():
        merged: list[tuple[int, int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        out[client] = merged
    return out


def update_ranges(update: bytes) -> tuple[Ranges, Ranges]:
    """(clock ranges of the structs, Skips aside; clock ranges of the delete set)."""
    found = structs(update)
    inserted: dict[int, list[tuple[int, int]]] = {}
    for (client, clock), struct in found:
        if not struct.is_skip:
            inserted.setdefault(client, []).append((clock, clock + struct.length))
    # The delete set follows the last struct (or the 0 that says there are no structs).
    pos = max((struct.end for _, struct in found), default=1)
    deleted: dict[int, list[tuple[int, int]]] = {}
    clients, pos = _var_uint(update, pos)
    for _ in range(clients):
        client, pos = _var_uint(update, pos)
        count, pos = _var_uint(update, pos)
        for _ in range(count):
            clock, pos = _var_uint(update, pos)
            length, pos = _var_uint(update, pos)
            deleted.setdefault(client, []).append((clock, clock + length))
    if pos != len(update):
        raise ValueError(f"{len(update) - pos} unexpected bytes after the delete set")
    return _merged(inserted), _merged(deleted)


def _uncovered(spans: Ranges, cover: Ranges) -> list[tuple[int, int, int]]:
    """The parts of `spans` that `cover` lacks, as (client, start, end)."""
    missing = []
    for client, wanted in spans.items():
        have = cover.get(client, [])
        starts = [start for start, _ in have]
        for start, end in wanted:
            pos = start
            i = bisect.bisect_right(starts, pos) - 1
            while pos < end:
                if 0 <= i < len(have) and have[i][0] <= pos < have[i][1]:
                    pos = have[i][1]
                    i += 1
                    continue
                gap_end = min(end, have[i + 1][0] if i + 1 < len(have) else end)
                gap_end = max(gap_end, pos + 1)
                missing.append((client, pos, gap_end))
                pos = gap_end
                i += 1
    return missing


@dataclass
class Missing:
    """What of one received update the server's state lacks."""

    index: int  # in the client's received list
    structs: list[tuple[int, int, int]]  # (client, start clock, end clock)
    deletions: list[tuple[int, int, int]]


class ServerState:
    """The restarted server's state of one document, indexed for containment checks."""

    def __init__(self, state: bytes) -> None:
        self.state = state
        self.inserted, self.deleted = update_ranges(state)
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.doc.apply_update(state)

    def missing(self, index: int, update: bytes) -> Missing | None:
        inserted, deleted = update_ranges(update)
        lost = Missing(
            index, _uncovered(inserted, self.inserted), _uncovered(deleted, self.deleted)
        )
        return lost if lost.structs or lost.deletions else None

    def clock_of(self, client: int) -> int:
        """How far the server holds `client`'s structs from clock 0."""
        spans = self.inserted.get(client, [])
        return spans[0][1] if spans and spans[0][0] == 0 else 0


def content(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    return {
        TEXT: doc.get(TEXT, type=pycrdt.Text).diff(),
        MAP: doc.get(MAP, type=pycrdt.Map).to_py(),
        ARRAY: doc.get(ARRAY, type=pycrdt.Array).to_py(),
    }


def changes_applied(server: ServerState, received: list[bytes]) -> str | None:
    """Apply the received updates over a copy of the server's state: what changes, if
    anything (None: nothing, the server holds all of it)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(server.state)
    for update in received:
        doc.apply_update(update)
    changed = []
    if doc.get_state() != server.doc.get_state():
        changed.append("state vector")
    if doc.get_update() != server.doc.get_update():
        changed.append("encoded state")
    before, after = content(server.doc), content(doc)
    changed += [
        f"{root}: {before[root]!r} -> {after[root]!r}"
        for root in before
        if before[root] != after[root]
    ]
    return "; ".join(changed) or None


# --- one round ---------------------------------------------------------------------------


@dataclass
class ClientResult:
    round: int
    room: str
    client_id: int
    edits: int  # local transactions
    sync_updates: int
    live_updates: int
    verified: int  # received updates the restarted server holds entirely
    own_ticks: int  # clock ticks of this client's own edits
    own_ticks_lost: int  # ... not on the server after the restart (allowed: never relayed)
    missing: list[Missing] = field(default_factory=list)
    changed: str | None = None  # what applying everything received changed on the server

    @property
    def received(self) -> int:
        return self.sync_updates + self.live_updates

    @property
    def lost(self) -> bool:
        return bool(self.missing or self.changed)


@dataclass
class RedisRound:
    """What a round of `--kill-redis` measured, beyond losses and divergence."""

    down_seconds: float  # kill -9 -> the new redis-server accepts connections
    resume_seconds: dict[str, float]  # node -> new Redis accepting -> "Redis is back"
    # Client id -> live updates it received while Redis was down; and of those, the ones
    # bringing an edit a client of another node made after the kill (so they came from
    # the database).
    down_updates: dict[int, int]
    down_cross: dict[int, int]
    # Edit on one node -> arrival on another, Redis down: at a node whose clients type
    # (it reads the others' commits when its own commit's offset shows a gap), and at the
    # quiet node, whose clients type nothing meanwhile (it reads the log each second).
    down_delays: list[float]
    quiet_delays: list[float]
    relay_delays: list[float]  # the same for edits made once every node was back
    closes: list[int | None]  # codes of connections that ended during the round: none
    problems: list[str]  # why the round failed, beyond losses and divergence
    quiet: str = ""  # the node whose clients typed nothing while Redis was down

    @property
    def resumed(self) -> float:
        """Until the last node relayed again."""
        return max(self.resume_seconds.values(), default=0.0)


@dataclass
class RoundResult:
    round: int
    kill_after: float  # seconds of editing after every client was busy
    restart_seconds: float  # SIGKILL -> the restarted server serves
    clients: list[ClientResult]
    state_bytes: dict[str, int]  # room -> size of its state after the restart
    refused: int = 0  # connections the server refused with 503 (then retried)
    # A cluster's round:
    stopped: list[str] = field(default_factory=list)  # the nodes killed (or SIGTERMed)
    checked_on: str = ""  # the surviving node whose state the clients were checked on
    moves: int = 0  # connections that moved to another node when theirs went away
    converge_seconds: float = 0.0  # until every node's state of every room was equal
    diverged: list[str] = field(default_factory=list)  # rooms whose nodes still differ
    exit_codes: list[int] = field(default_factory=list)  # of the nodes SIGTERMed
    redis: RedisRound | None = None  # a round that killed redis-server instead

    @property
    def lost(self) -> bool:
        return any(client.lost for client in self.clients)

    @property
    def failed(self) -> bool:
        """A loss, nodes left diverged, a node that did not stop cleanly on SIGTERM, or
        Redis killed and something noticed it (a reconnect, a relay not resuming...)."""
        problems = self.redis is not None and bool(self.redis.problems)
        return self.lost or bool(self.diverged) or any(self.exit_codes) or problems


def room_name(index: int) -> str:
    return f"crash-test/room-{index}"


async def fetch_state(session: aiohttp.ClientSession, http: str, name: str) -> bytes:
    url = f"{http}/api/docs/{quote(name, safe='')}"
    async with session.get(url, params={"format": "update"}) as response:
        if response.status == 404:
            return EMPTY_UPDATE
        response.raise_for_status()
        return await response.read()


def _state_clock(state_vector: bytes, client: int) -> int:
    count, pos = _var_uint(state_vector, 0)
    for _ in range(count):
        found, pos = _var_uint(state_vector, pos)
        clock, pos = _var_uint(state_vector, pos)
        if found == client:
            return clock
    return 0


def check_client(number: int, client: RecordingClient, server: ServerState) -> ClientResult:
    missing = [
        lost
        for index, update in enumerate(client.received)
        if (lost := server.missing(index, update)) is not None
    ]
    own_ticks = _state_clock(client.doc.get_state(), client.client_id)
    return ClientResult(
        round=number,
        room=client.room,
        client_id=client.client_id,
        edits=client.edits,
        sync_updates=client.sync_updates,
        live_updates=client.live_updates,
        verified=len(client.received) - len(missing),
        own_ticks=own_ticks,
        own_ticks_lost=max(0, own_ticks - server.clock_of(client.client_id)),
        missing=missing,
        changed=changes_applied(server, client.received),
    )


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the typing tasks and wait until they have stopped."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _close_all(clients: list[RecordingClient]) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(15):
            await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def connect(client: RecordingClient, attempts: int = 10) -> int:
    """Connect and sync; retry a 503 (a document the server could not load). Returns the
    number of refusals."""
    for attempt in range(attempts):
        try:
            await client.connect(timeout=30)
            return attempt
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status != 503 or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _new_client_id(rng: random.Random, used: set[int]) -> int:
    while (client_id := rng.getrandbits(32)) in used:
        pass
    used.add(client_id)
    return client_id


async def run_round(
    server: ServerProcess,
    number: int,
    options: Options,
    rng: random.Random,
    used_ids: set[int],
    evidence: Path | None = None,
) -> RoundResult:
    """One round: connect, edit, SIGKILL, restart, check. The server serves on return."""
    clients = [
        RecordingClient(
            server.url,
            room_name(i % options.rooms),
            doc=pycrdt.Doc(client_id=_new_client_id(rng, used_ids)),
        )
        for i in range(options.clients)
    ]
    editors: list[asyncio.Task[None]] = []
    try:
        refused = sum(await asyncio.gather(*(connect(client) for client in clients)))
        editors = [
            asyncio.create_task(edit(client, random.Random(rng.random()), options.max_pause))
            for client in clients
        ]
        # Busy: every client that shares its room has received a live update.
        sharing = [c for c in clients if sum(o.room == c.room for o in clients) > 1]
        async with asyncio.timeout(30):
            await asyncio.gather(*(client.live.wait() for client in sharing))
        kill_after = rng.uniform(options.min_kill, options.max_kill)
        await asyncio.sleep(kill_after)
        killed_at = time.monotonic()
        server.kill()
        await _stop(editors)
        # The sockets are dead; each client reads what was already on its way to it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*(client.closed.wait() for client in clients))
        await _close_all(clients)
        await server.start()
        restart_seconds = time.monotonic() - killed_at
        states: dict[str, ServerState] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for index in range(options.rooms):
                name = room_name(index)
                states[name] = ServerState(await fetch_state(session, server.http, name))
        result = RoundResult(
            number,
            kill_after,
            restart_seconds,
            [check_client(number, client, states[client.room]) for client in clients],
            {name: len(state.state) for name, state in states.items()},
            refused,
        )
        if result.lost and evidence is not None:
            save_evidence(evidence, result, clients, states)
        return result
    finally:
        await _stop(editors)
        await _close_all(clients)


def save_evidence(
    directory: Path,
    result: RoundResult,
    clients: list[RecordingClient],
    states: dict[str, ServerState],
    nodes: dict[str, dict[str, bytes]] | None = None,
) -> None:
    """Write what a loss needs to be studied: the states, every received update, a report
    (and in a cluster each node's state of each room)."""
    base = directory / f"round-{result.round}"
    base.mkdir(parents=True, exist_ok=True)
    for name, state in states.items():
        (base / f"server-{quote(name, safe='')}.update").write_bytes(state.state)
    for name, by_node in (nodes or {}).items():
        for node, state in by_node.items():
            (base / f"{node}-{quote(name, safe='')}.update").write_bytes(state)
    for client, checked in zip(clients, result.clients, strict=True):
        if not checked.lost:
            continue
        folder = base / f"client-{client.client_id}"
        folder.mkdir(exist_ok=True)
        for index, update in enumerate(client.received):
            (folder / f"received-{index:05d}.update").write_bytes(update)
        (folder / "client-doc.update").write_bytes(client.doc.get_update())
    (base / "report.json").write_text(json.dumps(asdict(result), indent=1, default=str))


# --- a cluster ---------------------------------------------------------------------------


class Cluster:
    """`nodes` servers on one PostgreSQL database, relaying over one Redis; each keeps its
    node id (n0, n1...) and port across restarts, as a fixed set of nodes would."""

    def __init__(self, options: Options, workdir: Path, extra: list[str]) -> None:
        assert options.db is not None and options.redis is not None
        self.nodes = [
            ServerProcess(
                options.db,
                workdir / f"server-n{k}.log",
                [*extra, "--redis", options.redis, "--node-id", f"n{k}"],
            )
            for k in range(options.nodes)
        ]
        self.down: set[int] = set()  # killed or stopping: no client may move there

    def up(self) -> list[int]:
        return [k for k in range(len(self.nodes)) if k not in self.down]

    async def start(self) -> None:
        await asyncio.gather(*(node.start() for node in self.nodes))

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


@dataclass
class Seat:
    """One editor of a cluster round: its doc, and its connection to some node, which
    moves to another node when that one goes away."""

    client: RecordingClient
    node: int
    rng: random.Random
    moves: int = 0
    refused: int = 0
    # (own clock before the edit, when): which edit of this doc an update carries, and
    # how long after it was made it reached another client.
    made: list[tuple[int, float]] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)  # codes of connections ended
    paused: bool = False  # connected, typing nothing: its node only relays to it


async def move(seat: Seat, cluster: Cluster) -> None:
    """Connect the seat's doc to another node that is up, as a provider reconnecting
    through a load balancer would; the edits made meanwhile go with its first sync."""
    await seat.client.close()
    for _ in range(50):
        up = cluster.up()
        others = [k for k in up if k != seat.node] or up
        if not others:
            await asyncio.sleep(0.1)
            continue
        target = seat.rng.choice(others)
        # Chained even when it fails: what a failed attempt received counts too.
        seat.client = seat.client.successor(cluster.nodes[target].url)
        try:
            seat.refused += await connect(seat.client)
        except (aiohttp.ClientError, OSError, TimeoutError):
            await seat.client.close()
            await asyncio.sleep(0.1)  # that node went away meanwhile: another one
            continue
        seat.node = target
        seat.moves += 1
        return
    raise RuntimeError(f"client {seat.client.client_id} could not move to any node")


async def keep_editing(seat: Seat, cluster: Cluster, max_pause: float) -> None:
    """Edit through whichever node the seat is on, moving when its connection ends."""
    while True:
        client = seat.client
        if client.closed.is_set():
            seat.closes.append(client.close_code)
            await move(seat, cluster)
            continue
        if seat.paused:
            await asyncio.sleep(0.01)
            continue
        seat.made.append((_state_clock(client.doc.get_state(), client.client_id), time.monotonic()))
        edit_once(client.doc, seat.rng)
        client.edits += 1
        await asyncio.sleep(seat.rng.uniform(0, max_pause))


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise TimeoutError(f"not within {timeout} s: {what}") from None


def _settled(seats: list[Seat], cluster: Cluster) -> bool:
    """Every seat synced on a node that is up (the ones that had to move have moved)."""
    return all(
        seat.node not in cluster.down
        and seat.client.synced.is_set()
        and not seat.client.closed.is_set()
        for seat in seats
    )


def _fingerprint(state: bytes) -> tuple[Ranges, Ranges, dict[str, Any]]:
    """What two nodes' states of a room must share to be the same document: the structs'
    clock ranges, the delete set, and the content."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(state)
    return (*update_ranges(state), content(doc))


def _difference(name: str, node: str, state: bytes, other: str, others: bytes) -> str:
    lacks = ServerState(state).missing(0, others)
    what = f"{len(lacks.structs)} struct ranges, {len(lacks.deletions)} deletions" if lacks else ""
    return f"{name}: {node} differs from {other}" + (f" (lacks {what} of it)" if what else "")


async def converge(
    cluster: Cluster, options: Options
) -> tuple[dict[str, dict[str, bytes]], float, list[str]]:
    """Fetch every node's state of every room until they are all equal or the timeout
    passes: the bus relays at once, and a node that missed an announcement (its sender
    killed between commit and publish) finds the gap by the next offset it hears of.
    Returns the states (room -> node -> state), the seconds it took, and the rooms
    still diverged."""
    started = time.monotonic()
    names = [room_name(index) for index in range(options.rooms)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while True:
            states = {
                name: {
                    f"n{k}": await fetch_state(session, node.http, name)
                    for k, node in enumerate(cluster.nodes)
                }
                for name in names
            }
            diverged = []
            for name, by_node in states.items():
                (first, state), *rest = by_node.items()
                expected = _fingerprint(state)
                diverged += [
                    _difference(name, node, other, first, state)
                    for node, other in rest
                    if _fingerprint(other) != expected
                ]
            elapsed = time.monotonic() - started
            if not diverged or elapsed > options.converge_timeout:
                return states, elapsed, diverged
            await asyncio.sleep(0.1)


async def run_cluster_round(
    cluster: Cluster,
    number: int,
    options: Options,
    rng: random.Random,
    used_ids: set[int],
    evidence: Path | None = None,
) -> RoundResult:
    """One round on a cluster: clients of every room spread over the nodes edit; one node
    is SIGKILLed (or, rolling, each node in turn is SIGTERMed and restarted); its clients
    move to other nodes and carry on; then the nodes must converge, and everything any
    client received must be in a surviving node's state. Every node serves on return."""
    count = len(cluster.nodes)
    shift = rng.randrange(count)

    def new_seat(node: int, room: str) -> Seat:
        doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=_new_client_id(rng, used_ids))
        client = RecordingClient(cluster.nodes[node].url, room, doc=doc)
        return Seat(client, node, random.Random(rng.random()))

    seats = [
        new_seat((i // options.rooms + shift) % count, room_name(i % options.rooms))
        for i in range(options.clients)
    ]
    sharing = [s for s in seats if sum(o.client.room == s.client.room for o in seats) > 1]
    editors: list[asyncio.Task[None]] = []
    refused = 0
    stopped: list[int] = []
    exit_codes: list[int] = []
    try:
        refused += sum(await asyncio.gather(*(connect(s.client) for s in seats)))
        editors = [asyncio.create_task(keep_editing(s, cluster, options.max_pause)) for s in seats]
        async with asyncio.timeout(30):
            await asyncio.gather(*(seat.client.live.wait() for seat in sharing))
        kill_after = rng.uniform(options.min_kill, options.max_kill)
        restarts = []
        for victim in list(range(count)) if options.rolling else [rng.randrange(count)]:
            if stopped:  # rolling: the clients type on between two stops
                await asyncio.sleep(rng.uniform(options.min_kill, options.max_kill))
            else:
                await asyncio.sleep(kill_after)
            node = cluster.nodes[victim]
            cluster.down.add(victim)
            stopped.append(victim)
            moving = [seat for seat in seats if seat.node == victim]
            for seat in moving:  # each must hear from its new node, later
                seat.client.live.clear()
            began = time.monotonic()
            if options.rolling:
                exit_codes.append(await node.terminate())
            else:
                node.kill()
            # The killed node's clients carry on through the others...
            await _until(lambda: _settled(seats, cluster), 30, "clients moved off the node")
            await node.start()
            restarts.append(time.monotonic() - began)
            cluster.down.discard(victim)
            # A new client (an empty doc, which repairs nothing) joins each room on the
            # restarted node while the others type: the node loads the rooms under load,
            # and its first sync must be the whole document.
            late = [new_seat(victim, room_name(i)) for i in range(options.rooms)]
            refused += sum(await asyncio.gather(*(connect(s.client) for s in late)))
            seats.extend(late)
            sharing.extend(late)
            editors.extend(
                asyncio.create_task(keep_editing(s, cluster, options.max_pause)) for s in late
            )
            # The moved clients' edits reach the rest of the room, and theirs reach them.
            async with asyncio.timeout(30):
                await asyncio.gather(
                    *(s.client.live.wait() for s in [*moving, *late] if s in sharing)
                )
        await asyncio.sleep(rng.uniform(0.3, 0.8))
        await _stop(editors)
        clients = [seat.client for seat in seats]
        await _close_all(clients)  # each sends what it has queued first
        by_room, converge_seconds, diverged = await converge(cluster, options)
        # Checked on a node that was never stopped this round, if there is one.
        survivors = [k for k in range(count) if k not in stopped] or list(range(count))
        checked_on = f"n{rng.choice(survivors)}"
        states = {name: ServerState(by_node[checked_on]) for name, by_node in by_room.items()}
        result = RoundResult(
            number,
            kill_after,
            statistics.mean(restarts),
            [check_client(number, client, states[client.room]) for client in clients],
            {name: len(state.state) for name, state in states.items()},
            refused + sum(seat.refused for seat in seats),
            stopped=[f"n{k}" for k in stopped],
            checked_on=checked_on,
            moves=sum(seat.moves for seat in seats),
            converge_seconds=converge_seconds,
            diverged=diverged,
            exit_codes=exit_codes,
        )
        if result.failed and evidence is not None:
            save_evidence(evidence, result, clients, states, by_room)
        return result
    finally:
        await _stop(editors)
        await _close_all([seat.client for seat in seats])


async def _nodes_back(
    cluster: Cluster, offsets: list[int], accepted_at: float, timeout: float
) -> dict[str, float]:
    """Node -> seconds from `accepted_at` until its log said "bus: Redis is back" (after
    its offset): each server logs it when its bus reads Redis again. A node that did not
    within `timeout` is missing."""
    back: dict[str, float] = {}
    deadline = accepted_at + timeout
    while len(back) < len(cluster.nodes) and time.monotonic() < deadline:
        for k, node in enumerate(cluster.nodes):
            if f"n{k}" not in back and b"bus: Redis is back" in node._log_from(offsets[k]):
                back[f"n{k}"] = time.monotonic() - accepted_at
        await asyncio.sleep(0.01)
    return back


def _edits_carried(
    update: bytes, made: dict[int, tuple[list[int], list[float]]]
) -> tuple[float, float] | None:
    """When the oldest and the newest edits of the seats in `made` that `update` carries
    were made (None: it carries none of theirs, only other structs or deletions)."""
    found: list[float] = []
    for client, spans in update_ranges(update)[0].items():
        if client not in made:
            continue
        clocks, times = made[client]
        for start, end in spans:
            # The edits that made the span's first and last clocks: the last ones begun
            # at or below its start, and below its end.
            first = bisect.bisect_right(clocks, start) - 1
            last = bisect.bisect_left(clocks, end) - 1
            found += [times[index] for index in (first, last) if index >= 0]
    return (min(found), max(found)) if found else None


def _cross_node(
    seats: list[Seat], killed_at: float, accepted_at: float, back_at: float, quiet: int
) -> tuple[dict[int, int], dict[int, int], list[float], list[float], list[float]]:
    """From the arrival times of what each client received and the times of every
    seat's edits: (client id -> live updates received while Redis was down; -> of those,
    the ones bringing an edit another node's client made after the kill, which only the
    database can have brought; the delays of those, edit to arrival, at busy nodes and at
    the `quiet` one; the delays of cross-node edits made once every node was back on
    Redis, which the relay brings)."""
    down_updates: dict[int, int] = {}
    down_cross: dict[int, int] = {}
    down_delays: list[float] = []
    quiet_delays: list[float] = []
    relay_delays: list[float] = []
    for seat in seats:
        client = seat.client
        others = {
            other.client.client_id: ([c for c, _ in other.made], [t for _, t in other.made])
            for other in seats
            if other.client.room == client.room and other.node != seat.node
        }
        down_updates[client.client_id] = down_cross[client.client_id] = 0
        for update, arrived in zip(client.received, client.arrived, strict=True):
            if arrived < killed_at:
                continue
            # The delay of an update is that of the oldest edit it brings.
            made = _edits_carried(update, others)
            if arrived <= accepted_at:
                down_updates[client.client_id] += 1
                if made is not None and made[1] > killed_at:
                    down_cross[client.client_id] += 1
                    delays = quiet_delays if seat.node == quiet else down_delays
                    delays.append(arrived - made[0])
            elif made is not None and made[0] > back_at:
                relay_delays.append(arrived - made[0])
    return down_updates, down_cross, down_delays, quiet_delays, relay_delays


async def run_redis_round(
    cluster: Cluster,
    redis: RedisProcess,
    number: int,
    options: Options,
    rng: random.Random,
    used_ids: set[int],
    evidence: Path | None = None,
) -> RoundResult:
    """One round of `--kill-redis`: clients of every room spread over the nodes edit;
    redis-server is SIGKILLed at a random moment, they type on with Redis down for a
    random while, and a new, empty redis-server starts on its port while they type. The
    nodes must converge, everything any client received must be in a node's state, and
    nothing of it may show to the clients but a delay: no connection ends, the nodes read
    each other's commits from the database while Redis is down, and every node relays
    through the new Redis soon after it accepts connections. Every node serves and Redis
    answers on return."""
    from collab.bus import key_prefix  # the cluster extra's

    assert options.db is not None
    count = len(cluster.nodes)
    shift = rng.randrange(count)
    seats = []
    for i in range(options.clients):
        doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=_new_client_id(rng, used_ids))
        node = (i // options.rooms + shift) % count
        client = RecordingClient(cluster.nodes[node].url, room_name(i % options.rooms), doc=doc)
        seats.append(Seat(client, node, random.Random(rng.random())))
    sharing = [s for s in seats if sum(o.client.room == s.client.room for o in seats) > 1]
    editors: list[asyncio.Task[None]] = []
    try:
        refused = sum(await asyncio.gather(*(connect(s.client) for s in seats)))
        editors = [asyncio.create_task(keep_editing(s, cluster, options.max_pause)) for s in seats]
        async with asyncio.timeout(30):
            await asyncio.gather(*(seat.client.live.wait() for seat in sharing))
        kill_after = rng.uniform(options.min_kill, options.max_kill)
        await asyncio.sleep(kill_after)
        # A node that commits learns of the others' commits by the gap in its offsets;
        # one whose clients only read learns of them only by reading the log each second:
        # that is what the quiet node's clients see.
        quiet = rng.randrange(count)
        for seat in seats:
            seat.paused = seat.node == quiet
        offsets = [node.log_size() for node in cluster.nodes]
        killed_at = time.monotonic()
        redis.kill()
        await asyncio.sleep(rng.uniform(options.min_down, options.max_down))
        accepted_at = await redis.start()
        for seat in seats:
            seat.paused = False
        down_seconds = accepted_at - killed_at
        back = await _nodes_back(cluster, offsets, accepted_at, timeout=10.0)
        back_at = accepted_at + max(back.values(), default=0.0)
        # The relay carries the edits again: type on a while to see it.
        await asyncio.sleep(rng.uniform(0.5, 1.0))
        await _stop(editors)
        names = [room_name(index) for index in range(options.rooms)]
        listening = await redis.subscribers(key_prefix(str(options.db)), names)
        clients = [seat.client for seat in seats]
        await _close_all(clients)  # each sends what it has queued first
        by_room, converge_seconds, diverged = await converge(cluster, options)
        checked_on = f"n{rng.randrange(count)}"  # no node was stopped: any of them
        states = {name: ServerState(by_node[checked_on]) for name, by_node in by_room.items()}
        down_updates, down_cross, down_delays, quiet_delays, relay_delays = _cross_node(
            seats, killed_at, accepted_at, back_at, quiet
        )
        closes = [code for seat in seats for code in seat.closes]
        problems = []
        if closes:
            problems.append(f"{len(closes)} connections ended (close codes {closes}): reconnects")
        for k in range(count):
            if f"n{k}" not in back:
                problems.append(f'n{k} did not log "bus: Redis is back" within 10 s')
        slow = {node: seconds for node, seconds in back.items() if seconds > options.max_resume}
        if slow:
            problems.append(f"relay resumed after more than {options.max_resume} s: {slow}")
        for name in names:
            expected = {f"n{seat.node}" for seat in seats if seat.client.room == name}
            if listening[name] < len(expected):
                problems.append(
                    f"{name}: {listening[name]} servers listen to it on the new Redis, "
                    f"not the {len(expected)} with clients of it"
                )
        if down_seconds > options.starved_after:
            for seat in seats:
                cross = any(
                    o.client.room == seat.client.room and o.node != seat.node for o in seats
                )
                if cross and not down_cross[seat.client.client_id]:
                    problems.append(
                        f"client {seat.client.client_id} on n{seat.node} in {seat.client.room}:"
                        f" none of the other nodes' edits in the {down_seconds:.1f} s Redis "
                        f"was down ({down_updates[seat.client.client_id]} updates received)"
                    )
        result = RoundResult(
            number,
            kill_after,
            down_seconds,
            [check_client(number, client, states[client.room]) for client in clients],
            {name: len(state.state) for name, state in states.items()},
            refused + sum(seat.refused for seat in seats),
            checked_on=checked_on,
            moves=sum(seat.moves for seat in seats),
            converge_seconds=converge_seconds,
            diverged=diverged,
            redis=RedisRound(
                down_seconds,
                back,
                down_updates,
                down_cross,
                down_delays,
                quiet_delays,
                relay_delays,
                closes,
                problems,
                quiet=f"n{quiet}",
            ),
        )
        if result.failed and evidence is not None:
            save_evidence(evidence, result, clients, states, by_room)
        return result
    finally:
        await _stop(editors)
        await _close_all([seat.client for seat in seats])


# --- the whole run -----------------------------------------------------------------------


@dataclass
class Summary:
    options: Options
    seed: int
    workdir: Path
    rounds: list[RoundResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # why the run stopped early, if it did
    final_sync: str | None = None  # WebSocket sync vs REST state at the end

    @property
    def clients(self) -> list[ClientResult]:
        return [client for result in self.rounds for client in result.clients]

    @property
    def failed(self) -> bool:
        """A loss, an error, a cluster round that failed otherwise (nodes left diverged),
        or a final sync that differs from the stored state."""
        final_ok = self.final_sync is not None and self.final_sync.startswith("equal")
        failed_round = any(result.failed for result in self.rounds)
        return bool(self.losses) or self.error is not None or not final_ok or failed_round

    @property
    def kills(self) -> int:
        """Servers killed (or, in a rolling restart, stopped; with `kill_redis`, the
        redis-servers killed)."""
        if self.options.nodes > 1 and not self.options.kill_redis:
            return sum(len(result.stopped) for result in self.rounds)
        return len(self.rounds)

    @property
    def received(self) -> int:
        return sum(client.received for client in self.clients)

    @property
    def verified(self) -> int:
        return sum(client.verified for client in self.clients)

    @property
    def losses(self) -> list[ClientResult]:
        return [client for client in self.clients if client.lost]

    def figures(self) -> list[tuple[str, str]]:
        clients = self.clients
        restarts = [result.restart_seconds for result in self.rounds] or [0.0]
        kill_after = [result.kill_after for result in self.rounds] or [0.0]
        live = [client.live_updates for client in clients] or [0]
        lost_updates = sum(len(client.missing) for client in self.losses)
        sizes = self.rounds[-1].state_bytes if self.rounds else {}
        log_text = "".join(
            log.read_text(errors="replace") for log in sorted(self.workdir.glob("server*.log"))
        )
        own_lost = sum(client.own_ticks_lost for client in clients)
        own = sum(client.own_ticks for client in clients)
        kills = ("server kills (SIGKILL)", str(self.kills))
        if self.options.nodes > 1:
            stopped = [node for result in self.rounds for node in result.stopped]
            per_node = ", ".join(f"{n} {stopped.count(n)}" for n in sorted(set(stopped)))
            how = "node stops (SIGTERM)" if self.options.rolling else "node kills (SIGKILL)"
            kills = (how, f"{self.kills} ({per_node})")
            if self.options.kill_redis:
                kills = ("redis-server kills (kill -9), restarted empty", str(self.kills))
        figures = [
            ("seed", str(self.seed)),
            ("rounds", f"{len(self.rounds)} of {self.options.rounds}"),
            kills,
            ("clients per round / rooms", self._clients_per_round()),
            ("edits made by clients", str(sum(client.edits for client in clients))),
            (
                "updates received from the server",
                f"{self.received} ({sum(live)} live, "
                f"{sum(c.sync_updates for c in clients)} first syncs)",
            ),
            (
                "live updates per client per round",
                f"min {min(live)}, median {statistics.median(live):g}, max {max(live)}",
            ),
            ("received updates verified after restart", str(self.verified)),
            (
                "LOSSES (received, then missing)",
                f"{lost_updates} updates, {len(self.losses)} clients",
            ),
            (
                "own edits never relayed, lost (allowed)",
                f"{own_lost} of {own} clock ticks ({100 * own_lost / max(own, 1):.2f} %)",
            ),
            (
                "kill after busy, avg / max",
                f"{statistics.mean(kill_after):.2f} / {max(kill_after):.2f} s",
            ),
            (
                f"{'SIGTERM' if self.options.rolling else 'SIGKILL'} -> serving again, avg / max",
                f"{1000 * statistics.mean(restarts):.0f} / {1000 * max(restarts):.0f} ms",
            ),
            ("final document states", ", ".join(f"{n} {b} B" for n, b in sizes.items())),
            (
                "connections refused with 503, retried",
                str(sum(result.refused for result in self.rounds)),
            ),
            ("server log ERROR / Traceback lines", _log_counts(log_text)),
            ("final WebSocket sync vs REST state", self.final_sync or "not checked"),
            ("run time", f"{self.seconds:.1f} s"),
        ]
        if self.options.nodes > 1:
            converge = [result.converge_seconds for result in self.rounds] or [0.0]
            figures[3:3] = [
                ("nodes", f"{self.options.nodes}, one PostgreSQL database, Redis bus"),
                (
                    "connections moved to another node",
                    str(sum(result.moves for result in self.rounds)),
                ),
                (
                    "all nodes equal (fetched, compared), avg / max",
                    f"{1000 * statistics.mean(converge):.0f} / {1000 * max(converge):.0f} ms",
                ),
                (
                    "ROOMS LEFT DIVERGED",
                    str(sum(len(result.diverged) for result in self.rounds)),
                ),
            ]
            if self.options.rolling:
                codes = [code for result in self.rounds for code in result.exit_codes]
                figures.insert(7, ("exit codes after SIGTERM", _counts(codes)))
            if self.options.kill_redis:
                figures[3] = (
                    "nodes",
                    f"{self.options.nodes}, one PostgreSQL database, a redis-server of the run's",
                )
                figures[4] = (
                    "RECONNECTS (connections that ended)",
                    str(sum(len(r.redis.closes) for r in self.rounds if r.redis)),
                )
                at = next(i for i, (name, _) in enumerate(figures) if name.startswith("SIGKILL"))
                figures[at : at + 1] = self._redis_figures()
        return figures

    def _redis_figures(self) -> list[tuple[str, str]]:
        """What the rounds that killed redis-server measured."""
        measured = [result.redis for result in self.rounds if result.redis is not None]
        down = [m.down_seconds for m in measured] or [0.0]
        resumed = [m.resumed for m in measured] or [0.0]
        during = [n for m in measured for n in m.down_updates.values()] or [0]
        cross = [n for m in measured for n in m.down_cross.values()] or [0]
        problems = [problem for m in measured for problem in m.problems]
        limit = self.options.max_resume

        def spread(values: list[int]) -> str:
            return f"min {min(values)}, median {statistics.median(values):g}, max {max(values)}"

        def delays(values: list[float]) -> str:
            if not values:
                return "-"
            median, top = statistics.median(values), max(values)
            return f"{1000 * median:.0f} / {1000 * top:.0f} ms ({len(values)} updates)"

        return [
            (
                "Redis down (kill -9 -> new one accepts), avg / max",
                f"{statistics.mean(down):.2f} / {max(down):.2f} s",
            ),
            ("live updates per client while Redis was down", spread(during)),
            ("... other nodes' edits made meanwhile (database)", spread(cross)),
            (
                "edit -> other node's client, Redis down, median / max",
                delays([d for m in measured for d in m.down_delays]),
            ),
            (
                "... to a node whose clients only read, median / max",
                delays([d for m in measured for d in m.quiet_delays]),
            ),
            (
                f"relay resumed (new Redis -> all nodes), avg / max (<= {limit:g} s)",
                f"{1000 * statistics.mean(resumed):.0f} / {1000 * max(resumed):.0f} ms",
            ),
            (
                "edit -> other node's client, relay again, median / max",
                delays([d for m in measured for d in m.relay_delays]),
            ),
            ("ROUND PROBLEMS (starved, relay, reconnects)", str(len(problems))),
        ]

    def _clients_per_round(self) -> str:
        clients, rooms = self.options.clients, self.options.rooms
        if self.options.nodes == 1 or self.options.kill_redis:
            return f"{clients} / {rooms}"
        return f"{clients}, + {rooms} joining each restarted node / {rooms}"

    def table(self) -> str:
        figures = self.figures()
        width = max(len(name) for name, _ in figures)
        lines = [f"{name:<{width}}  {value}" for name, value in figures]
        if self.error:
            lines.append(f"{'STOPPED':<{width}}  {self.error}")
        return "\n".join(lines)


def _counts(values: list[int]) -> str:
    return ", ".join(f"{value}: {values.count(value)}" for value in sorted(set(values))) or "-"


def _log_counts(text: str) -> str:
    lines = text.splitlines()
    return f"{sum(' ERROR ' in f' {line} ' for line in lines)} / " + str(
        sum("Traceback" in line for line in lines)
    )


async def run(
    options: Options,
    workdir: Path,
    *,
    stop_on_loss: bool = True,
    progress: bool = False,
    summary: Summary | None = None,
) -> Summary:
    """Run the rounds against one server and database in `workdir`; the server is killed
    on return, however this ends. Results go into `summary` as they come (give one to
    keep them if this is interrupted)."""
    if summary is None:
        seed = options.seed if options.seed is not None else random.randrange(2**32)
        summary = Summary(options, seed, workdir)
    rng = random.Random(summary.seed)
    used_ids: set[int] = set()
    extra = ["--version-updates", str(options.version_updates)] if options.version_updates else []
    if options.nodes > 1:
        return await run_cluster(
            options, workdir, rng, used_ids, extra, summary, stop_on_loss, progress
        )
    server = ServerProcess(
        options.db or workdir / "crash.db", workdir / "server.log", extra + options.server_args
    )
    started = time.monotonic()
    try:
        await server.start()
        for number in range(1, options.rounds + 1):
            async with asyncio.timeout(options.round_timeout):
                result = await run_round(
                    server, number, options, rng, used_ids, workdir / "evidence"
                )
            summary.rounds.append(result)
            if progress:
                _print_round(result)
            if result.lost and stop_on_loss:
                summary.error = f"loss in round {number}: evidence in {workdir / 'evidence'}"
                break
        async with asyncio.timeout(60):
            summary.final_sync = await final_sync_check(server, options)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, and exit 1
        summary.error = f"round {len(summary.rounds) + 1}: {type(exc).__name__}: {exc}"
        summary.error += "\n" + "".join(traceback.format_exception(exc)[-6:])
    finally:
        server.kill()
        summary.seconds = time.monotonic() - started
    return summary


async def run_cluster(
    options: Options,
    workdir: Path,
    rng: random.Random,
    used_ids: set[int],
    extra: list[str],
    summary: Summary,
    stop_on_loss: bool,
    progress: bool = False,
) -> Summary:
    """`run` on a cluster of `options.nodes` nodes (with `kill_redis`, on a redis-server
    of the run's own, which the rounds kill)."""
    redis = RedisProcess(workdir) if options.kill_redis else None
    cluster: Cluster | None = None
    started = time.monotonic()
    try:
        if redis is not None:
            await redis.start()
            options = replace(options, redis=redis.url)
        cluster = Cluster(options, workdir, extra + options.server_args)
        await cluster.start()
        for number in range(1, options.rounds + 1):
            async with asyncio.timeout(options.round_timeout):
                if redis is not None:
                    result = await run_redis_round(
                        cluster, redis, number, options, rng, used_ids, workdir / "evidence"
                    )
                else:
                    result = await run_cluster_round(
                        cluster, number, options, rng, used_ids, workdir / "evidence"
                    )
            summary.rounds.append(result)
            if progress:
                _print_round(result)
            if result.failed and stop_on_loss:
                summary.error = f"failed round {number}: evidence in {workdir / 'evidence'}"
                break
        async with asyncio.timeout(60):
            found = [await final_sync_check(node, options) for node in cluster.nodes]
        differ = [f"n{k}: {text}" for k, text in enumerate(found) if not text.startswith("equal")]
        summary.final_sync = "; ".join(differ) or f"equal ({options.rooms} rooms, on every node)"
    except Exception as exc:  # noqa: BLE001 - reported in the summary, and exit 1
        summary.error = f"round {len(summary.rounds) + 1}: {type(exc).__name__}: {exc}"
        summary.error += "\n" + "".join(traceback.format_exception(exc)[-6:])
    finally:
        if cluster is not None:
            cluster.kill()
        if redis is not None:
            redis.kill()
        summary.seconds = time.monotonic() - started
    return summary


async def final_sync_check(server: ServerProcess, options: Options) -> str:
    """Whether a fresh client's first sync brings exactly the REST API's state, per room."""
    differing = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for index in range(options.rooms):
            name = room_name(index)
            state = ServerState(await fetch_state(session, server.http, name))
            client = RecordingClient(server.url, name, doc=pycrdt.Doc())
            await connect(client)
            await client.close()
            if (
                changes_applied(state, client.received) is not None
                or client.doc.get_state() != state.doc.get_state()
                or content(client.doc) != content(state.doc)
            ):
                differing.append(name)
    return f"differ: {', '.join(differing)}" if differing else f"equal ({options.rooms} rooms)"


def _print_round(result: RoundResult) -> None:
    live = [client.live_updates for client in result.clients]
    verdict = "LOSS" if result.lost else "ok"
    if result.redis is not None:  # a round that killed redis-server
        measured = result.redis
        verdict = "DIVERGED" if result.diverged and not result.lost else verdict
        verdict = "FAILED" if measured.problems and verdict == "ok" else verdict
        cross = list(measured.down_cross.values())
        print(
            f"round {result.round:4d}: redis killed {result.kill_after:.2f} s after busy, "
            f"down {measured.down_seconds:.2f} s (received {min(cross)}-{max(cross)} other "
            f"nodes' edits per client; {measured.quiet} quiet), relay back in "
            f"{1000 * measured.resumed:4.0f} ms, "
            f"{len(measured.closes)} reconnects, equal in "
            f"{1000 * result.converge_seconds:4.0f} ms, received "
            f"{sum(c.received for c in result.clients):5d} (live {min(live)}-{max(live)} per "
            f"client), checked on {result.checked_on}, {verdict}",
            flush=True,
        )
        for line in [*result.diverged, *measured.problems]:
            print(f"  {line}", flush=True)
    elif result.stopped:  # a cluster's
        verdict = "DIVERGED" if result.diverged and not result.lost else verdict
        if any(result.exit_codes):
            verdict += f", exit codes {result.exit_codes}"
        how = "stopped" if result.exit_codes else "killed"
        print(
            f"round {result.round:4d}: {how} {','.join(result.stopped)} "
            f"{result.kill_after:.2f} s after busy, restart {1000 * result.restart_seconds:4.0f}"
            f" ms, {result.moves} moved, equal in {1000 * result.converge_seconds:4.0f} ms, "
            f"received {sum(c.received for c in result.clients):5d} "
            f"(live {min(live)}-{max(live)} per client), checked on {result.checked_on}, "
            f"{verdict}",
            flush=True,
        )
        for diverged in result.diverged:
            print(f"  {diverged}", flush=True)
    else:
        print(
            f"round {result.round:4d}: killed {result.kill_after:.2f} s after busy, "
            f"restart {1000 * result.restart_seconds:4.0f} ms, "
            f"received {sum(c.received for c in result.clients):5d} "
            f"(live {min(live)}-{max(live)} per client), {verdict}",
            flush=True,
        )
    for client in result.clients:
        if client.lost:
            print(f"  client {client.client_id} in {client.room}:", flush=True)
            for missing in client.missing[:10]:
                print(f"    received update {missing.index} missing {missing}", flush=True)
            if client.changed:
                print(f"    applying what it received changes: {client.changed[:2000]}")


def parse_args(argv: list[str] | None = None) -> tuple[Options, argparse.Namespace]:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--rooms", type=int, default=defaults.rooms)
    parser.add_argument("--seed", type=int, default=None, help="random by default; printed")
    parser.add_argument("--min-kill", type=float, default=defaults.min_kill, metavar="S")
    parser.add_argument("--max-kill", type=float, default=defaults.max_kill, metavar="S")
    parser.add_argument(
        "--max-pause",
        type=float,
        default=defaults.max_pause,
        metavar="S",
        help="longest pause between two edits of a client",
    )
    parser.add_argument(
        "--version-updates",
        type=int,
        default=defaults.version_updates,
        help="passed to the server (0: its default)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `collab serve` (repeat it)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="more than 1: a cluster on PostgreSQL and Redis; clients of each room are spread "
        "over the nodes, one node is SIGKILLed per round and its clients move to the others",
    )
    parser.add_argument(
        "--rolling",
        action="store_true",
        help="cluster: each round SIGTERMs and restarts every node in turn instead",
    )
    parser.add_argument(
        "--kill-redis",
        action="store_true",
        help="cluster: each round kill -9 a redis-server of the run's own (on a free port) "
        "instead of a node, and start a new, empty one on its port while clients type",
    )
    parser.add_argument(
        "--min-down",
        type=float,
        default=defaults.min_down,
        metavar="S",
        help="--kill-redis: shortest time Redis stays down",
    )
    parser.add_argument("--max-down", type=float, default=defaults.max_down, metavar="S")
    parser.add_argument(
        "--db",
        metavar="URL",
        help="the database (used as it is; a cluster's is a postgresql:// URL). Default: "
        "an SQLite file in the run's directory; for a cluster, a new PostgreSQL database "
        f"on {POSTGRES_ADMIN_URL} ($COLLAB_TEST_POSTGRES), dropped after a run that passed",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=REDIS_URL,
        help="cluster: the bus's Redis (default %(default)s, $COLLAB_TEST_REDIS); not with "
        "--kill-redis, which runs its own",
    )
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the directory after success")
    parser.add_argument("--continue-on-loss", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no line per round")
    args = parser.parse_args(argv)
    if args.clients < 2 or args.rooms < 1 or args.rooms * 2 > args.clients:
        parser.error("every room needs at least two clients (--clients >= 2 * --rooms)")
    if not 0 <= args.min_kill <= args.max_kill:
        parser.error("need 0 <= --min-kill <= --max-kill")
    if args.nodes < 1 or (args.rolling and args.nodes < 2):
        parser.error("need --nodes >= 1, and >= 2 with --rolling")
    if args.kill_redis and (args.nodes < 2 or args.rolling):
        parser.error("--kill-redis needs --nodes >= 2, and kills no node: not with --rolling")
    if not 0 <= args.min_down <= args.max_down:
        parser.error("need 0 <= --min-down <= --max-down")
    if args.nodes > 1 and args.db and not args.db.startswith("postgresql://"):
        parser.error("the nodes of a cluster share a PostgreSQL database: --db postgresql://...")
    options = Options(
        clients=args.clients,
        rooms=args.rooms,
        rounds=args.rounds,
        seed=args.seed,
        min_kill=args.min_kill,
        max_kill=args.max_kill,
        max_pause=args.max_pause,
        version_updates=args.version_updates,
        server_args=args.server_arg,
        nodes=args.nodes,
        db=args.db,
        redis=args.redis if args.nodes > 1 and not args.kill_redis else None,
        rolling=args.rolling,
        kill_redis=args.kill_redis,
        min_down=args.min_down,
        max_down=args.max_down,
    )
    return options, args


POSTGRES_ADMIN_URL = os.environ.get("COLLAB_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("COLLAB_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def create_database(admin_url: str) -> str:
    """A new, empty database on the PostgreSQL server of `admin_url`; returns its URL."""
    import asyncpg  # type: ignore[import-untyped]  # the cluster extra's

    name = f"collab_crash_{random.randrange(16**8):08x}"
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def drop_database(admin_url: str, url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")
    finally:
        await admin.close()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options, args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="collab-crash-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"crash test in {workdir}: {' '.join(sys.argv)}", flush=True)
    made_db = None
    if options.nodes > 1 and options.db is None:
        made_db = options.db = asyncio.run(create_database(POSTGRES_ADMIN_URL))
        bus = (
            "a redis-server of its own, killed each round" if options.kill_redis else options.redis
        )
        print(f"cluster of {options.nodes} on {made_db}, bus {bus}", flush=True)
    seed = options.seed if options.seed is not None else random.randrange(2**32)
    summary = Summary(options, seed, workdir)
    started = time.monotonic()
    try:
        asyncio.run(
            run(
                options,
                workdir,
                stop_on_loss=not args.continue_on_loss,
                progress=not args.quiet,
                summary=summary,
            )
        )
    except (KeyboardInterrupt, SystemExit) as exc:
        summary.error = f"interrupted ({type(exc).__name__}) in round {len(summary.rounds) + 1}"
        summary.seconds = time.monotonic() - started
    finally:
        kill_all_servers()
    print()
    print(summary.table())
    failed = summary.failed
    if failed or args.keep or args.workdir:
        logs = "server-n*.log" if options.nodes > 1 else "crash.db, server.log"
        logs += ", redis.log" if options.kill_redis else ""
        print(f"kept: {workdir} ({logs}, evidence/)")
        if made_db:
            print(f"kept: {made_db}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        if made_db:
            asyncio.run(drop_database(POSTGRES_ADMIN_URL, made_db))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
