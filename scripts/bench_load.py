"""The many-rooms, connection-storm and presence scenarios of scripts/bench.py.

Each takes a started `bench.Server` and returns one table row. The load runs in the
benchmark's own process (one core): at high rates it is the limit, which the row says
with the benchmark's CPU next to the server's. A Node load generator drives the same
scenarios harder (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from collab import protocol


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Cpu:
    """CPU seconds of the server and of this process over a window, as percentages."""

    def __init__(self, server_cpu: Callable[[], float]) -> None:
        self._server_cpu = server_cpu
        self._start = (server_cpu(), time.process_time(), time.perf_counter())

    def percent(self) -> tuple[float, float]:
        server, own, wall = self._start
        elapsed = time.perf_counter() - wall
        return (
            (self._server_cpu() - server) / elapsed * 100,
            (time.process_time() - own) / elapsed * 100,
        )


# --- many rooms --------------------------------------------------------------------


async def many_rooms(
    url: str,
    server_cpu: Callable[[], float],
    open_socket: Callable[[aiohttp.ClientSession, str], Awaitable[aiohttp.ClientWebSocketResponse]],
    typing_updates: Callable[[int, int], list[bytes]],
    writer_clock: Callable[[bytes], int],
    rooms: int,
    clients: int,
    rate: float,
    duration: float,
) -> dict[str, Any]:
    """`rooms` rooms of one writer and `clients - 1` readers; every writer types `rate`
    keystrokes a second. Latency: writer send -> each reader's receipt."""
    count = int(rate * duration) + 1
    keystrokes = typing_updates(count, 1)
    updates = [protocol.encode_update(update) for update in keystrokes]
    clocks = [writer_clock(update) for update in keystrokes]
    sent_at = [[0.0] * count for _ in range(rooms)]
    latencies: list[float] = []
    received = 0

    async def read(ws: aiohttp.ClientWebSocketResponse, room: int) -> None:
        nonlocal received
        seen = 0
        async for message in ws:
            decoded = protocol.decode(message.data)
            if isinstance(decoded, protocol.SyncUpdate):
                now = time.perf_counter()
                clock = writer_clock(decoded.update)
                while seen < count and clocks[seen] <= clock:
                    if sent_at[room][seen]:
                        latencies.append((now - sent_at[room][seen]) * 1000)
                        received += 1
                    seen += 1

    async def write(ws: aiohttp.ClientWebSocketResponse, room: int, start: float) -> None:
        for index, frame in enumerate(updates):
            due = start + index / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            sent_at[room][index] = time.perf_counter()
            await ws.send_bytes(frame)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [
            [await open_socket(session, f"{url}/rooms-{room}") for _ in range(clients)]
            for room in range(rooms)
        ]
        readers = [
            asyncio.create_task(read(ws, room))
            for room, group in enumerate(sockets)
            for ws in group[1:]
        ]
        cpu = Cpu(server_cpu)
        start = time.perf_counter()
        rng = random.Random(1)
        await asyncio.gather(
            *(
                write(group[0], room, start + rng.random() / rate)
                for room, group in enumerate(sockets)
            )
        )
        server_pct, own_pct = cpu.percent()
        expected = rooms * (clients - 1) * count
        deadline = time.perf_counter() + 20
        while received < expected and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for task in readers:
            task.cancel()
        for group in sockets:
            for ws in group:
                await ws.close()
    return {
        "rooms": rooms,
        "clients": clients,
        "updates/s": round(rooms * rate),
        "delivered": f"{received}/{expected}",
        "p50 ms": round(percentile(latencies, 0.5), 2),
        "p99 ms": round(percentile(latencies, 0.99), 2),
        "server CPU %": round(server_pct),
        "bench CPU %": round(own_pct),
    }


# --- connection storm -------------------------------------------------------------------


async def storm(
    url: str,
    pid: int,
    open_socket: Callable[[aiohttp.ClientSession, str], Awaitable[aiohttp.ClientWebSocketResponse]],
    connections: int,
) -> dict[str, Any]:
    """`connections` sockets to as many new rooms, opened at once: time until all are
    synced, and the server memory they take (after a 2 s settle)."""
    before = rss_mb(pid)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        times: list[float] = []

        async def one(index: int) -> aiohttp.ClientWebSocketResponse:
            ws = await open_socket(session, f"{url}/storm-{index}")
            times.append((time.perf_counter() - start) * 1000)
            return ws

        sockets = await asyncio.gather(*(one(i) for i in range(connections)))
        all_synced = time.perf_counter() - start
        await asyncio.sleep(2)
        after = rss_mb(pid)
        for ws in sockets:
            await ws.close()
    return {
        "connections": connections,
        "all synced s": round(all_synced, 2),
        "p50 ms": round(percentile(times, 0.5)),
        "p99 ms": round(percentile(times, 0.99)),
        "server RSS MB": f"{before:.0f} -> {after:.0f}",
        "KB per connection+room": round((after - before) * 1024 / connections, 1),
    }


# --- presence ------------------------------------------------------------------------------


async def presence(
    url: str,
    server_cpu: Callable[[], float],
    clients: int,
    moves: float,
    duration: float,
) -> dict[str, Any]:
    """`clients` in one room, each moving its cursor `moves` times a second. Latency: a
    move's send -> each other client holding that state or a newer one."""
    sent: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    entries_seen = messages_seen = 0
    state = {"user": {"name": "bench", "color": "#30bced"}, "cursor": {"anchor": 0, "head": 0}}

    async def receive(ws: aiohttp.ClientWebSocketResponse, me: int) -> None:
        nonlocal entries_seen, messages_seen
        newest: dict[int, int] = {}
        async for message in ws:
            decoded = protocol.decode(message.data)
            if not isinstance(decoded, protocol.AwarenessUpdate):
                continue
            now = time.perf_counter()
            messages_seen += 1
            for entry in decoded.entries:
                entries_seen += 1
                if entry.client_id == me:
                    continue
                json.loads(entry.state)  # what every browser does with every state
                for clock in range(newest.get(entry.client_id, 0) + 1, entry.clock + 1):
                    if at := sent.get((entry.client_id, clock)):
                        latencies.append((now - at) * 1000)
                newest[entry.client_id] = max(newest.get(entry.client_id, 0), entry.clock)

    async def move(ws: aiohttp.ClientWebSocketResponse, me: int, start: float) -> None:
        for clock in range(1, int(moves * duration) + 1):
            due = start + (clock - 1) / moves
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            state["cursor"] = {"anchor": clock, "head": clock}
            entry = protocol.AwarenessEntry(me, clock, json.dumps(state).encode())
            sent[(me, clock)] = time.perf_counter()
            await ws.send_bytes(protocol.encode_awareness([entry]))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [
            await session.ws_connect(f"{url}/presence", max_msg_size=0) for _ in range(clients)
        ]
        tasks = [asyncio.create_task(receive(ws, i + 1)) for i, ws in enumerate(sockets)]
        cpu = Cpu(server_cpu)
        start = time.perf_counter()
        rng = random.Random(os.getpid())
        await asyncio.gather(
            *(move(ws, i + 1, start + rng.random() / moves) for i, ws in enumerate(sockets))
        )
        server_pct, own_pct = cpu.percent()
        expected = len(sent) * (clients - 1)
        deadline = time.perf_counter() + 10
        while len(latencies) < expected and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        for ws in sockets:
            await ws.close()
    return {
        "clients": clients,
        "moves/s": round(clients * moves),
        "covered": f"{len(latencies)}/{expected}",
        "p50 ms": round(percentile(latencies, 0.5), 2),
        "p99 ms": round(percentile(latencies, 0.99), 2),
        "entries per message": round(entries_seen / max(1, messages_seen), 1),
        "server CPU %": round(server_pct),
        "bench CPU %": round(own_pct),
    }
