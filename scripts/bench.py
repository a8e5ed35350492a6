"""Benchmarks of a collab server that need only the project installed (no Node).

    python scripts/bench.py fanout --readers 50 --rate max --duration 5
    python scripts/bench.py durability --readers 50 --rate 200 --rounds 3
    python scripts/bench.py coldload --trace path/to/automerge-paper.json.gz
    python scripts/bench.py rooms --rooms 100 --clients 5 --rate 5
    python scripts/bench.py storm --connections 1000
    python scripts/bench.py presence --clients 50 --moves 5

The server runs as its own process (`collab serve` with the defaults), pinned to CPU 0
when the machine has two or more; the load runs in this process on the other CPUs. Each
command prints a table. Compare figures of one run with each other (ratios): absolute
numbers move with whatever else the machine is doing.

- fanout: one writer types into one room (one keystroke = one update), R readers. At a
  fixed rate, latency is writer send -> reader receipt, matched by CRDT clock (the
  server may merge updates); at `max`, the writer keeps at most `--window` updates not
  yet delivered to every reader, and the figure is updates/s delivered to all readers.
- durability: the fixed-rate fan-out against the SQLite store and against a store that
  does no I/O, interleaved; the difference is what committing before relaying costs.
- coldload: writes a whole editing trace into a room, stops the server (SIGTERM, or
  SIGKILL with --kill), restarts it, and times connect -> text equals the trace's end.
- rooms, storm, presence: many rooms with a writer each; many connections to as many new
  rooms at once (time to sync all, memory per connection and room); many clients moving
  cursors in one room (see bench_load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt

from collab import protocol
from collab.auth import Revocation
from collab.errors import VersionNotFound
from collab.store import DocInfo, StoredDoc, Version, VersionKind
from collab.yjs.update import clock_ranges

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_load

WRITER_ID = 4242


# --- the server under test --------------------------------------------------------


class MemoryStore:
    """A Store that keeps nothing on disk: the baseline without the durability cost."""

    def __init__(self) -> None:
        self._logs: dict[str, list[tuple[int, bytes]]] = {}
        self._ends: dict[str, int] = {}
        self._states: dict[str, tuple[bytes, int]] = {}
        self._revocations: list[Revocation] = []

    async def load(self, doc: str) -> StoredDoc:
        state, offset = self._states.get(doc, (None, 0))
        return StoredDoc(state, offset, [update for _, update in self._logs.get(doc, [])])

    async def append(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, int]:
        for doc, updates in batch.items():
            end = self._ends.get(doc, 0)
            self._logs.setdefault(doc, []).extend(enumerate(updates, end + 1))
            self._ends[doc] = end + len(updates)
        return {doc: self._ends[doc] for doc in batch}

    async def read(self, doc: str, after: int) -> list[tuple[int, bytes]]:
        return [(offset, update) for offset, update in self._logs.get(doc, []) if offset > after]

    async def save_version(
        self,
        doc: str,
        state: bytes,
        offset: int,
        *,
        kind: VersionKind = "auto",
        label: str | None = None,
    ) -> Version:
        self._states[doc] = (state, offset)
        self._logs[doc] = [entry for entry in self._logs.get(doc, []) if entry[0] > offset]
        return Version(0, doc, time.time(), kind, label, len(state), 0)

    async def versions(self, doc: str) -> list[Version]:
        return []

    async def docs(self) -> list[DocInfo]:
        return []

    async def doc_info(self, doc: str) -> DocInfo | None:
        return None

    async def version_state(self, doc: str, snapshot_id: int) -> bytes:
        raise VersionNotFound(f"the benchmark store keeps no versions ({doc})")

    async def delete_versions(self, doc: str, snapshot_ids: Sequence[int]) -> int:
        return 0

    async def delete_doc(self, doc: str) -> bool:
        found = self._logs.pop(doc, None) is not None
        return self._states.pop(doc, None) is not None or found

    async def add_revocation(self, revocation: Revocation) -> None:
        self._revocations.append(revocation)

    async def revocations(self) -> list[Revocation]:
        return list(self._revocations)

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


class Server:
    """`collab serve` (or the no-I/O variant) in a child process."""

    def __init__(self, store: str, db: Path, extra: Sequence[str] = ()) -> None:
        self.store, self.db, self.extra = store, db, list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log = tempfile.NamedTemporaryFile(prefix="collab-bench-", suffix=".log")

    def start(self) -> None:
        args = [
            sys.executable,
            __file__,
            "_serve",
            "--store",
            self.store,
            "--db",
            str(self.db),
            "--port",
            str(self.port),
            *self.extra,
        ]
        offset = os.path.getsize(self._log.name)
        self.proc = subprocess.Popen(
            args, stderr=self._log, stdout=self._log, preexec_fn=lambda: _pin(0)
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = Path(self._log.name).read_bytes()[offset:]
            if match := re.search(rb"serving documents at ws://[^:]+:(\d+)/", text):
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(Path(self._log.name).read_text())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)
            self.proc.wait(60)


def serve_for_bench(argv: list[str]) -> None:
    """The `_serve` subcommand: run a server, with the no-I/O store if asked."""
    import logging

    from collab.app import serve
    from collab.config import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    settings = Settings(port=args.port, db=args.db)
    store = MemoryStore() if args.store == "memory" else None
    asyncio.run(serve(settings, store))  # type: ignore[arg-type]


# --- load ------------------------------------------------------------------------


def typing_updates(count: int, seed: int = 1) -> list[bytes]:
    """`count` keystrokes typed into one Y.Text, one update each, near a moving cursor."""
    rng = random.Random(seed)
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=WRITER_ID)
    text = doc.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    cursor = 0
    for _ in range(count):
        if rng.random() < 0.05:
            cursor = rng.randint(0, len(text))
        text.insert(cursor, rng.choice("abcdefghijklmnopqrstuvwxyz  "))
        cursor += 1
    return updates


def writer_clock(update: bytes) -> int:
    """How far the writer's clock reaches in `update` (0 if it holds none of its structs)."""
    return clock_ranges(update).get(WRITER_ID, (0, 0))[1]


@dataclass
class Reader:
    ws: aiohttp.ClientWebSocketResponse
    clock: int = 0
    frames: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


async def open_socket(session: aiohttp.ClientSession, url: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url, max_msg_size=0, autoping=True)
    await ws.send_bytes(protocol.encode_sync_step1(protocol.EMPTY_STATE_VECTOR))
    while True:  # until our SyncStep2: the server has loaded the room and answered
        message = protocol.decode((await ws.receive(timeout=30)).data)
        if isinstance(message, protocol.SyncStep2):
            return ws


async def read_updates(reader: Reader, arrivals: list[float]) -> None:
    """Record, per update index, when this reader first held it."""
    while True:
        message = await reader.ws.receive()
        if message.type is not aiohttp.WSMsgType.BINARY:
            return
        decoded = protocol.decode(message.data)
        if isinstance(decoded, protocol.SyncUpdate):
            now = time.perf_counter()
            reader.frames += 1
            clock = writer_clock(decoded.update)
            for index in range(reader.clock, clock):
                arrivals[index] = max(arrivals[index], now) if arrivals[index] else now
            reader.clock = max(reader.clock, clock)
            reader.changed.set()


@dataclass
class FanoutResult:
    sent: int
    seconds: float
    all_delivered: int  # within the sending window
    delivered: int  # by the end of the drain
    latencies_ms: list[float]
    server_cpu_pct: float
    client_cpu_pct: float
    frames_per_reader: float

    def row(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: 0.0)
        return {
            "updates/s to all": round(self.all_delivered / self.seconds),
            "delivered": f"{self.delivered}/{self.sent}",
            "p50 ms": round(pick(0.50), 2),
            "p99 ms": round(pick(0.99), 2),
            "frames/reader": round(self.frames_per_reader),
            "server CPU %": round(self.server_cpu_pct),
            "bench CPU %": round(self.client_cpu_pct),
        }


async def fanout(
    server: Server, readers: int, rate: float | None, duration: float, window: int, room: str
) -> FanoutResult:
    updates = typing_updates(int((rate or 20000) * duration) + 1000)
    frames = [protocol.encode_update(update) for update in updates]
    sent_at = [0.0] * len(updates)
    arrivals = [[0.0] * len(updates) for _ in range(readers)]
    # No connection limit: aiohttp's default of 100 would hold back readers past the 100th.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        group = [Reader(await open_socket(session, f"{server.url}/{room}")) for _ in range(readers)]
        writer = await open_socket(session, f"{server.url}/{room}")
        tasks = [
            asyncio.create_task(read_updates(r, a)) for r, a in zip(group, arrivals, strict=True)
        ]
        drain = asyncio.create_task(_discard(writer))
        cpu0, wall0, client0 = server.cpu_seconds(), time.perf_counter(), time.process_time()
        sent = 0
        while time.perf_counter() - wall0 < duration and sent < len(frames):
            if rate is None:
                while sent - min(r.clock for r in group) >= window:
                    waiter = min(group, key=lambda r: r.clock)
                    waiter.changed.clear()
                    await asyncio.wait_for(waiter.changed.wait(), 30)
            else:
                due = wall0 + sent / rate
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
            sent_at[sent] = time.perf_counter()
            await writer.send_bytes(frames[sent])
            sent += 1
        seconds = time.perf_counter() - wall0
        deadline = time.perf_counter() + 20
        while min(r.clock for r in group) < sent and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        server_cpu = (server.cpu_seconds() - cpu0) / (time.perf_counter() - wall0) * 100
        client_cpu = (time.process_time() - client0) / (time.perf_counter() - wall0) * 100
        for task in (*tasks, drain):
            task.cancel()
        for ws in (writer, *(r.ws for r in group)):
            await ws.close()
    warmup = min(100, sent // 10)
    latencies = [
        (max(a[i] for a in arrivals) if rate is None else arrivals[k][i]) - sent_at[i]
        for i in range(warmup, sent)
        for k in ([0] if rate is None else range(readers))
        if all(a[i] for a in arrivals)
    ]
    in_time = sum(1 for i in range(sent) if all(a[i] and a[i] - wall0 <= seconds for a in arrivals))
    delivered = sum(1 for i in range(sent) if all(a[i] for a in arrivals))
    return FanoutResult(
        sent,
        seconds,
        in_time,
        delivered,
        [x * 1000 for x in latencies],
        server_cpu,
        client_cpu,
        sum(r.frames for r in group) / readers,
    )


async def _discard(ws: aiohttp.ClientWebSocketResponse) -> None:
    while (await ws.receive()).type is aiohttp.WSMsgType.BINARY:
        pass


# --- cold load ---------------------------------------------------------------------


def trace_updates(path: Path, batch: int) -> tuple[list[bytes], str]:
    """Replay an editing trace: one update per `batch` transactions; and the final text."""
    trace = json.loads(gzip.open(path).read())
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=WRITER_ID)
    text = doc.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    if trace["startContent"]:
        text += trace["startContent"]
    txns = trace["txns"]
    for start in range(0, len(txns), batch):
        with doc.transaction():
            for txn in txns[start : start + batch]:
                for position, deleted, inserted in txn["patches"]:
                    if deleted:
                        del text[position : position + deleted]
                    if inserted:
                        text.insert(position, inserted)
    assert str(text) == trace["endContent"], "trace replay diverged"
    return updates, trace["endContent"]


async def write_all(url: str, updates: list[bytes]) -> float:
    """Send every update, then wait for the answer to a SyncStep1: it comes only once all
    of them are committed. Returns the seconds it took."""
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        ws = await open_socket(session, url)
        for update in updates:
            await ws.send_bytes(protocol.encode_update(update))
        await ws.send_bytes(protocol.encode_sync_step1(protocol.EMPTY_STATE_VECTOR))
        while not isinstance(
            protocol.decode((await ws.receive(timeout=600)).data), protocol.SyncStep2
        ):
            pass
        await ws.close()
    return time.perf_counter() - start


async def load_once(url: str, expected: str) -> tuple[float, int]:
    """Seconds from connect to holding the expected text, and the biggest frame."""
    start = time.perf_counter()
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    biggest = 0
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            await ws.send_bytes(protocol.encode_sync_step1(protocol.EMPTY_STATE_VECTOR))
            while True:
                message = await ws.receive(timeout=60)
                biggest = max(biggest, len(message.data))
                decoded = protocol.decode(message.data)
                if isinstance(decoded, protocol.SyncUpdate | protocol.SyncStep2):
                    doc.apply_update(decoded.update)
                if isinstance(decoded, protocol.SyncStep2):
                    break
    elapsed = time.perf_counter() - start
    if str(doc.get("content", type=pycrdt.Text)) != expected:
        raise AssertionError("loaded text differs from the trace's end")
    return elapsed, biggest


# --- commands ----------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = list(rows[0])
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in headers) + " |")


async def run_fanout(args: argparse.Namespace) -> None:
    rate = None if args.rate == "max" else float(args.rate)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            server = Server("sqlite", Path(tmp) / f"fanout{rep}.db")
            server.start()
            try:
                result = await fanout(
                    server, args.readers, rate, args.duration, args.window, "fanout"
                )
            finally:
                server.stop()
            rows.append(
                {"run": rep + 1, "readers": args.readers, "rate": args.rate, **result.row()}
            )
    print_table(rows)


async def run_durability(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.rounds):
            for store in ("sqlite", "memory"):
                server = Server(store, Path(tmp) / f"{store}{rep}.db")
                server.start()
                try:
                    result = await fanout(
                        server, args.readers, float(args.rate), args.duration, 100, "durability"
                    )
                finally:
                    server.stop()
                rows.append({"round": rep + 1, "store": store, **result.row()})
    print_table(rows)
    for key in ("p50 ms", "p99 ms"):
        by_store = {
            s: statistics.median(r[key] for r in rows if r["store"] == s)
            for s in ("sqlite", "memory")
        }
        print(
            f"median {key}: sqlite {by_store['sqlite']}, no I/O {by_store['memory']}, "
            f"cost of the promise {by_store['sqlite'] - by_store['memory']:+.2f} ms"
        )


async def run_coldload(args: argparse.Namespace) -> None:
    updates, expected = trace_updates(args.trace, args.batch)
    print(
        f"trace: {len(updates)} updates, {sum(map(len, updates))} bytes, "
        f"final text {len(expected)} characters"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Server("sqlite", Path(tmp) / "coldload.db")
        server.start()
        url = f"{server.url}/trace"
        write_seconds = await write_all(url, updates)
        print(
            f"written and committed in {write_seconds:.1f} s "
            f"({len(updates) / write_seconds:.0f} updates/s)"
        )
        server.stop(signal.SIGKILL if args.kill else signal.SIGTERM)
        for rep in range(args.loads):
            server.start()
            url = f"{server.url}/trace"
            seconds, biggest = await load_once(url, expected)
            rows.append(
                {
                    "load": rep + 1,
                    "after": "SIGKILL" if args.kill and rep == 0 else "restart",
                    "ms": round(seconds * 1000, 1),
                    "biggest frame": biggest,
                }
            )
            server.stop()
        print(f"database: {os.path.getsize(Path(tmp) / 'coldload.db')} bytes")
    print_table(rows)


async def _each_run(
    name: str, reps: int, measure: Callable[[Server], Awaitable[dict[str, Any]]]
) -> None:
    """Run `measure` against a fresh server `reps` times; print a row per run."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            server = Server("sqlite", Path(tmp) / f"{name}{rep}.db")
            server.start()
            try:
                row = await measure(server)
            finally:
                server.stop()
            rows.append({"run": rep + 1, **row})
    print_table(rows)


async def run_rooms(args: argparse.Namespace) -> None:
    async def measure(server: Server) -> dict[str, Any]:
        return await bench_load.many_rooms(
            server.url,
            server.cpu_seconds,
            open_socket,
            typing_updates,
            writer_clock,
            args.rooms,
            args.clients,
            args.rate,
            args.duration,
        )

    await _each_run("rooms", args.reps, measure)


async def run_storm(args: argparse.Namespace) -> None:
    async def measure(server: Server) -> dict[str, Any]:
        assert server.proc is not None
        return await bench_load.storm(server.url, server.proc.pid, open_socket, args.connections)

    await _each_run("storm", args.reps, measure)


async def run_presence(args: argparse.Namespace) -> None:
    async def measure(server: Server) -> dict[str, Any]:
        return await bench_load.presence(
            server.url, server.cpu_seconds, args.clients, args.moves, args.duration
        )

    await _each_run("presence", args.reps, measure)


def main() -> None:
    if sys.argv[1:2] == ["_serve"]:
        serve_for_bench(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fan = commands.add_parser("fanout", help="one writer, many readers")
    fan.add_argument("--readers", type=int, default=50)
    fan.add_argument("--rate", default="max", help="updates per second, or max")
    fan.add_argument("--duration", type=float, default=5.0)
    fan.add_argument("--window", type=int, default=100)
    fan.add_argument("--reps", type=int, default=3)
    dur = commands.add_parser("durability", help="latency with and without the SQLite commit")
    dur.add_argument("--readers", type=int, default=50)
    dur.add_argument("--rate", type=float, default=200)
    dur.add_argument("--duration", type=float, default=5.0)
    dur.add_argument("--rounds", type=int, default=3)
    cold = commands.add_parser("coldload", help="load a long history after a restart")
    cold.add_argument("--trace", type=Path, required=True, help="a .json.gz editing trace")
    cold.add_argument("--batch", type=int, default=1, help="trace transactions per update")
    cold.add_argument("--loads", type=int, default=3)
    cold.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
    rooms = commands.add_parser("rooms", help="many rooms, one writer and readers in each")
    rooms.add_argument("--rooms", type=int, default=100)
    rooms.add_argument("--clients", type=int, default=5, help="per room, the writer included")
    rooms.add_argument("--rate", type=float, default=5, help="updates per second per writer")
    rooms.add_argument("--duration", type=float, default=10.0)
    rooms.add_argument("--reps", type=int, default=1)
    storm = commands.add_parser("storm", help="connections to as many new rooms at once")
    storm.add_argument("--connections", type=int, default=1000)
    storm.add_argument("--reps", type=int, default=1)
    presence = commands.add_parser("presence", help="many clients moving cursors in one room")
    presence.add_argument("--clients", type=int, default=50)
    presence.add_argument("--moves", type=float, default=5, help="per client per second")
    presence.add_argument("--duration", type=float, default=10.0)
    presence.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    _pin(1)
    runner = {
        "fanout": run_fanout,
        "durability": run_durability,
        "coldload": run_coldload,
        "rooms": run_rooms,
        "storm": run_storm,
        "presence": run_presence,
    }
    asyncio.run(runner[args.command](args))


if __name__ == "__main__":
    main()
