"""What a cluster node costs for documents it has not loaded: the idle-node figure of
the cluster issue (12).

Starts a Redis (or takes --redis URL), then two collab nodes, A and B, on one database
(a SQLite file in a temporary directory, or --db PATH|postgresql://...) and that Redis.
Then:

1. idle: both nodes without clients, --idle-seconds long (their baseline);
2. load on A only: --rooms rooms x --clients clients, all on node A, each client editing
   --rate times a second (insert 1-4 characters at a random place, open loop from one
   ticker, random phase) for --duration seconds. B loads no document, so it must read
   nothing from Redis: the requirement is that its CPU stays under 2 % of a core;
3. one idle reader per room on B: the same load again, with one more client per room,
   connected to B and not editing. B then has every room loaded and relays what A
   commits (a figure, not a requirement).

CPU is read from /proc/PID/stat (utime + stime) at the start and the end of each window,
per process: node A, node B, Redis (when this script started it), and this script (the
load). After each loaded phase the script waits (at most --settle-max seconds) until every
client of a room holds the same text, B's reader included.

With two or more CPUs the nodes and Redis are pinned to CPU 0 and this script to CPU 1
(as the shared harness does; --no-pin to leave scheduling alone). Run it with the
interpreter of a venv that has collab with its cluster extra:

    python scripts/bench_cluster_idle.py --rooms 100 --clients 5 --rate 1 --duration 20
    python scripts/bench_cluster_idle.py --db postgresql://root@127.0.0.1:5432/bench_idle

A PostgreSQL database must exist and be empty; the script does not create or drop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pycrdt

import collab
from collab.client import Client

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_READY_SECONDS = 30.0  # a node or Redis that does not accept by then failed to start
_STOP_SECONDS = 15.0  # SIGTERM, then SIGKILL
_LETTERS = "abcdefghijklmnopqrstuvwxyz "


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + _READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it listened")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {_READY_SECONDS} s")


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


@dataclass
class Processes:
    """The processes this script started, stopped in reverse order."""

    workdir: Path
    server_cpu: int | None
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], port: int) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        cpu = self.server_cpu
        proc = subprocess.Popen(
            argv,
            cwd=self.workdir,  # not a checkout: `-m collab` must import the installed one
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: pin(cpu)) if cpu is not None else None,
        )
        log.close()
        self.started.append((name, proc))
        wait_for_port(port, proc, name)
        return proc

    def stop(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(self.started):
            try:
                proc.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop within {_STOP_SECONDS} s: SIGKILL", file=sys.stderr)
                proc.kill()
                proc.wait()


class Meter:
    """CPU seconds of named processes over one window, as % of one core."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start = self._sample()
        self._wall = time.perf_counter()

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        sample["load"] = time.process_time()
        return sample

    def percent(self) -> dict[str, float]:
        end = self._sample()
        elapsed = time.perf_counter() - self._wall
        return {name: (end[name] - self._start[name]) / elapsed * 100 for name in end}


@dataclass
class Room:
    name: str
    writers: list[Client]
    readers: list[Client] = field(default_factory=list)

    def texts(self) -> set[str]:
        return {str(c.doc.get("content", type=pycrdt.Text)) for c in self.writers + self.readers}


def edit(client: Client, rng: random.Random) -> None:
    text = client.doc.get("content", type=pycrdt.Text)
    with client.doc.transaction():
        length = len(text)
        text.insert(rng.randint(0, length), "".join(rng.choices(_LETTERS, k=rng.randint(1, 4))))


async def drive(rooms: list[Room], rate: float, duration: float, rng: random.Random) -> int:
    """Every writer edits `rate` times a second for `duration` s; returns the edits made."""
    writers = [c for room in rooms for c in room.writers]
    period = 1.0 / rate
    start = time.monotonic()
    due = [start + rng.random() * period for _ in writers]
    edits = 0
    while (now := time.monotonic()) < start + duration:
        for i, client in enumerate(writers):
            while due[i] <= now:
                edit(client, rng)
                edits += 1
                due[i] += period
        await asyncio.sleep(0.002)
    return edits


async def converge(rooms: list[Room], timeout: float) -> tuple[int, float]:
    """Wait until every room's clients hold one text; returns (rooms that did not, seconds)."""
    start = time.monotonic()
    while True:
        behind = sum(len(room.texts()) > 1 for room in rooms)
        elapsed = time.monotonic() - start
        if behind == 0 or elapsed > timeout:
            return behind, elapsed
        await asyncio.sleep(0.1)


async def connect_all(url: str, pairs: list[tuple[Room, bool]]) -> None:
    """Connect one client per pair, 50 at a time; True adds a writer, False a reader."""
    for first in range(0, len(pairs), 50):
        chunk = pairs[first : first + 50]
        clients = [Client(url, room.name) for room, _ in chunk]
        await asyncio.gather(*(c.connect(timeout=30.0) for c in clients))
        for (room, writes), client in zip(chunk, clients, strict=True):
            (room.writers if writes else room.readers).append(client)


def row(phase: str, cpu: dict[str, float], edits: int, seconds: float, extra: str) -> str:
    redis = f"{cpu['redis']:.1f}" if "redis" in cpu else "-"
    return (
        f"| {phase} | {edits / seconds:.0f} | {cpu['node A']:.1f} | **{cpu['node B']:.2f}** "
        f"| {redis} | {cpu['load']:.0f} | {extra} |"
    )


async def run(args: argparse.Namespace, pids: dict[str, int], url_a: str, url_b: str) -> bool:
    rng = random.Random(args.seed)
    rooms = [Room(f"idle-{i:04d}", []) for i in range(args.rooms)]
    print(
        "| phase | edits/s | node A CPU % | node B CPU % | Redis CPU % | load CPU % "
        "| rooms converged |"
    )
    print("|---|---|---|---|---|---|---|")
    meter = Meter(pids)
    await asyncio.sleep(args.idle_seconds)
    print(row("idle, no clients", meter.percent(), 0, args.idle_seconds, "-"))

    await connect_all(url_a, [(room, True) for room in rooms for _ in range(args.clients)])
    await asyncio.sleep(1.0)  # the joins' commits and versions are not the load
    ok = True
    for phase in ("load on A only", "load on A, 1 idle reader per room on B"):
        if phase != "load on A only":
            await connect_all(url_b, [(room, False) for room in rooms])
            await asyncio.sleep(1.0)
        meter = Meter(pids)
        started = time.perf_counter()
        edits = await drive(rooms, args.rate, args.duration, rng)
        cpu = meter.percent()
        seconds = time.perf_counter() - started
        behind, waited = await converge(rooms, args.settle_max)
        ok = ok and behind == 0
        converged = f"{args.rooms - behind}/{args.rooms} ({waited:.1f} s)"
        print(row(phase, cpu, edits, seconds, converged), flush=True)
    clients = [c for room in rooms for c in room.writers + room.readers]
    await asyncio.gather(*(c.close() for c in clients))
    return ok


@contextlib.contextmanager
def cluster(args: argparse.Namespace) -> Iterator[tuple[dict[str, int], str, str]]:
    pinned = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    workdir = Path(tempfile.mkdtemp(prefix="collab-idle-"))
    procs = Processes(workdir, 0 if pinned else None)
    try:
        pids: dict[str, int] = {}
        redis_url = args.redis
        if not redis_url:
            port = free_port()
            (workdir / "redis").mkdir()
            argv = [args.redis_server, "--port", str(port), "--bind", "127.0.0.1"]
            argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
            redis = procs.start("redis", [*argv, "--dir", "redis"], port)
            pids["redis"] = redis.pid
            redis_url = f"redis://127.0.0.1:{port}/0"
        db = args.db or str(workdir / "collab.db")
        urls = []
        for name in ("node A", "node B"):
            port = free_port()
            argv = [sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--db", db, "--redis", redis_url]
            pids[name] = procs.start(name.replace(" ", "-"), argv, port).pid
            urls.append(f"ws://127.0.0.1:{port}")
        if pinned:
            pin(1)
        print(f"collab {Path(collab.__file__).parent}, db {db}, redis {redis_url}")
        print(f"nodes {urls[0]} {urls[1]}, pinned to CPU 0 (this script to 1): {pinned}")
        print(
            f"{args.rooms} rooms x {args.clients} clients on A at {args.rate} edits/s each, "
            f"{args.duration} s per phase"
        )
        yield pids, urls[0], urls[1]
    finally:
        procs.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--clients", type=int, default=5, help="editing clients per room (on A)")
    parser.add_argument("--rate", type=float, default=1.0, help="edits per second per client")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per loaded phase")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--settle-max", type=float, default=20.0)
    parser.add_argument("--db", default="", help="SQLite path or postgresql:// URL (default: temp)")
    parser.add_argument("--redis", default="", help="Redis URL (default: start one)")
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args(argv)
    with cluster(args) as (pids, url_a, url_b):
        ok = asyncio.run(run(args, pids, url_a, url_b))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
