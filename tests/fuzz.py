"""Fuzz a live collab server with random and mutated y-websocket frames.

    python scripts/fuzz.py --frames 200000 --seed 1
    python scripts/fuzz.py --frames 5000 --states content,large --rounds 1 --keep

A `python -m collab serve` child process (with a 1 MiB --max-message-bytes, so oversize
frames are cheap) gets frames over many connections, in rooms of every state:

- empty: a room nobody wrote to;
- content: a document with text, formatting, map, array and XML content;
- pending: a document holding an update whose dependency never arrived;
- syncing: fresh clients keep joining (SyncStep1/2 exchanges in flight), and each fuzz
  connection starts with a SyncStep1 and SyncStep2 of its own, not waiting for answers;
- awareness: the editors publish presence states and renew them as they edit;
- large: a document over 256 KiB, so that every full sync answer comes in pieces.

In every room but the empty one, well-behaved clients (`collab.client.Client`) keep
editing meanwhile. The frames are valid ones (SyncStep1 with real state vectors,
SyncStep2 and Update with real updates of pycrdt documents, awareness updates with JSON
states, query awareness) mutated by bit flips, truncations, insertions, deletions,
varuint (length, count, clock) changes and splices, or sent duplicated or shuffled; plus
pure random bytes, random bodies behind valid type bytes, text frames, and frames at and
above --max-message-bytes.

Each fuzz connection sends one mutation unit at a time, then a SyncStep1 as a probe: the
server answers every SyncStep1 with a SyncStep2, in order, so once the answers arrive the
unit was taken in; or the server closes the connection. Allowed outcomes: the
connection stays open (a mutated frame may be valid), or a close frame with 1002 (a
malformed message or an update that cannot apply), 1003 (a message type clients may not
send, a text frame) or 1009 (too large). Anything else (another code, 1011, a dropped
connection without a close frame, no answer) is a violation, reported with the unit's
bytes.

After each phase: the server process is alive, GET /healthz answers, no traceback or
unhandled exception is in the server log, and each editor's document equals the view of
a fresh client. At the end, the server is stopped with SIGTERM and started again, and
each room must look the same to a fresh client (and its stored state, pending parts
included, must cover the same clocks). The server's RSS is read before, after each
phase and after a settle period.

Exits 1 if anything failed, keeping the run's directory (database and server log).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pycrdt
from pycrdt import write_var_uint

from collab import protocol
from collab.client import Client
from collab.yjs.content import to_json
from collab.yjs.lib0 import Reader
from collab.yjs.roots import root_types
from collab.yjs.tree import Tree
from collab.yjs.update import UpdateFormatError, clock_ranges, decode_state_vector

ROOT = Path(__file__).resolve().parent.parent  # the repository
STATES = ("empty", "content", "pending", "syncing", "awareness", "large")
MiB = 1024 * 1024
SERVING = re.compile(rb"serving documents at ws://[^:]+:(\d+)/")
# Lines of the server log that mean something escaped a handler.
LOG_ALARMS = re.compile(
    r"Traceback|Error handling request|Task exception was never retrieved|"
    r"Exception in callback|CRITICAL| ERROR "
)
# The editors write in roots of their own: on content that fuzzed updates made, pycrdt's
# own deletions can panic or even loop forever (seen: Array.remove_range spinning in
# yrs' BlockIter::delete), which would stop this whole script. The fuzzed updates and
# the rooms' initial content use the unprefixed roots.
EDITOR_ROOTS = "e-"
WORDS = ["a", "hello ", "xyz", "Zoë", "😀!", "日本語", "\n", "q" * 40]


@dataclass
class Options:
    frames: int = 20_000
    seed: int = 0
    workers: int = 8  # concurrent fuzz connections per phase
    editors: int = 2  # well-behaved clients per room (none in the empty room)
    states: tuple[str, ...] = STATES
    rounds: int = 2  # every state this many times, so memory can be seen to settle
    max_message_bytes: int = MiB
    large_bytes: int = 320 * 1024
    settle_seconds: float = 30.0  # aiohttp holds a server-closed connection ~20 s
    converge_seconds: float = 15.0
    oversize_every: int = 400  # about one oversize frame per this many frames
    phase_seconds: float = 300.0  # a phase still sending after this is cut short
    server_args: list[str] = field(default_factory=list)
    progress: bool = False  # print each phase as it ends

    def plan(self) -> list[str]:
        return [state for _ in range(self.rounds) for state in self.states]


# --- the server ---------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: its own process group, and SIGKILL when this script dies (Linux)."""
    os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    """`python -m collab serve` in a child process; its log goes to a file we read."""

    def __init__(self, db: Path, log_path: Path, extra: Sequence[str]) -> None:
        self.db, self.log_path, self.extra = db, log_path, list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._read_offset = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self) -> int:
        """Start the process; the log offset where its output begins."""
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            args = [sys.executable, "-m", "collab", "serve", "--port", str(self.port)]
            args += ["--db", str(self.db), *self.extra]
            # A Rust backtrace of a pycrdt panic (refused input) loads debug info: tens of
            # MiB once, which the memory figures would blame on the server.
            env = {**os.environ, "RUST_BACKTRACE": "0"}
            self.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                env=env,
            )
        return offset

    async def start(self, timeout: float = 30.0) -> None:
        offset = self._spawn()
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := SERVING.search(self.log_path.read_bytes()[offset:]):
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            await asyncio.sleep(0.02)
        self.kill()
        raise TimeoutError(f"server did not start within {timeout} s: {self.tail()}")

    async def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then wait (bounded) for the exit; its code, or None if it hung."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        code = self.proc.poll()
        if code is None:
            self.kill()
        _LIVE.discard(self)
        return code

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        _LIVE.discard(self)

    def rss_mb(self) -> float:
        """The server's resident set size (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def new_log(self) -> str:
        """The log written since the last call."""
        with open(self.log_path, "rb") as log:
            log.seek(self._read_offset)
            data = log.read()
        self._read_offset += len(data)
        return data.decode("utf-8", "replace")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


_LIVE: set[Server] = set()


@atexit.register
def _kill_servers() -> None:
    for server in list(_LIVE):
        server.kill()


# --- valid material -----------------------------------------------------------------------


def edit(doc: pycrdt.Doc[Any], rng: random.Random, prefix: str = "") -> None:
    """One random transaction: text (with formatting), map, array or XML, in the roots
    named with `prefix`."""
    text = doc.get(f"{prefix}text", type=pycrdt.Text)
    plain = doc.get(f"{prefix}plain", type=pycrdt.Text)
    mapping = doc.get(f"{prefix}map", type=pycrdt.Map)
    array = doc.get(f"{prefix}array", type=pycrdt.Array)
    xml = doc.get(f"{prefix}xml", type=pycrdt.XmlFragment)
    with doc.transaction():
        roll = rng.random()
        if roll < 0.2:
            # Non-ASCII text is only appended: pycrdt panics on some inserts and deletes
            # at offsets inside multi-byte characters.
            text += rng.choice(WORDS)
            if len(text) > 2 and rng.random() < 0.2:
                text.format(0, rng.randint(1, len(text)), {"bold": True})
        elif roll < 0.4 and str(plain).isascii():
            plain.insert(rng.randint(0, len(plain)), rng.choice(["ab", "c", "defg", " "]))
            if len(plain) > 8 and rng.random() < 0.4:
                start = rng.randint(0, len(plain) - 4)
                del plain[start : start + rng.randint(1, 3)]
        elif roll < 0.6:
            key = f"k{rng.randrange(8)}"
            if key in mapping and rng.random() < 0.3:
                del mapping[key]
            else:
                mapping[key] = rng.choice([rng.random(), "v", [1, None, True], {"n": {"m": 2}}])
        elif roll < 0.8:
            array.append(rng.choice([rng.randrange(1000), b"\x00bin", "s", None]))
            if len(array) > 5 and rng.random() < 0.3:
                del array[0]
        else:
            xml.children.append(
                pycrdt.XmlElement("p", {"class": "x"}, [pycrdt.XmlText(rng.choice(WORDS))])
            )


@dataclass
class Corpus:
    """Valid payloads from pycrdt documents: full states, incremental updates (in order,
    per document), diffs against older state vectors, state vectors."""

    states: list[bytes]
    updates: list[list[bytes]]
    diffs: list[bytes]
    state_vectors: list[bytes]

    @classmethod
    def build(cls, rng: random.Random, docs: int = 4, edits: int = 40) -> Corpus:
        states, updates, diffs, vectors = [], [], [], [protocol.EMPTY_STATE_VECTOR]
        for _ in range(docs):
            doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=rng.randrange(1, 2**32))
            made: list[bytes] = []
            doc.observe(lambda event, made=made: made.append(event.update))
            for step in range(edits):
                edit(doc, rng)
                if step % 10 == 9:
                    vectors.append(doc.get_state())
            states.append(doc.get_update())
            updates.append(made)
            diffs += [doc.get_update(vector) for vector in vectors[-4:]]
        return cls(states, updates, diffs, vectors)


def awareness_frame(rng: random.Random) -> bytes:
    entries = []
    for _ in range(rng.randint(1, 3)):
        client = rng.choice([rng.randrange(1, 2**32), rng.randrange(1, 50)])
        state = {"user": {"name": rng.choice(WORDS), "color": f"#{rng.randrange(2**24):06x}"}}
        if rng.random() < 0.5:
            state["cursor"] = {"anchor": rng.randrange(100), "head": rng.randrange(100)}
        text = b"null" if rng.random() < 0.1 else json.dumps(state).encode()
        entries.append(protocol.AwarenessEntry(client, rng.randrange(1, 2**20), text))
    return protocol.encode_awareness(entries)


def valid_frame(rng: random.Random, corpus: Corpus) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return protocol.encode_sync_step1(rng.choice(corpus.state_vectors))
    if roll < 0.3:
        return protocol.encode_sync_step2(rng.choice(corpus.states + corpus.diffs))
    if roll < 0.7:
        return protocol.encode_update(rng.choice(rng.choice(corpus.updates)))
    if roll < 0.9:
        return awareness_frame(rng)
    return protocol.encode_query_awareness()


# --- mutations -----------------------------------------------------------------------------

EDGE_VALUES = [0, 1, 127, 128, 255, 16383, 16384, 2**31, 2**32, 2**53, 2**63, 2**64 - 1]


def varuint_starts(frame: bytes) -> list[int]:
    return [i for i in range(len(frame)) if i == 0 or frame[i - 1] < 0x80]


def replace_varuint(rng: random.Random, frame: bytes, at: int) -> bytes:
    end = at
    while end < len(frame) and frame[end] & 0x80:
        end += 1
    old = 0
    for shift, byte in enumerate(frame[at : end + 1]):
        old |= (byte & 0x7F) << (7 * shift)
    new = rng.choice([old + 1, max(0, old - 1), old * 2, old + rng.randint(2, 50), *EDGE_VALUES])
    return frame[:at] + write_var_uint(new) + frame[end + 1 :]


def mutate(rng: random.Random, frame: bytes, kind: str) -> bytes:
    data = bytearray(frame)
    if kind == "bitflip":
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)) :]
    elif kind == "insert":
        at = rng.randint(0, len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 8))
    elif kind == "delete":
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 16)]
    elif kind == "length":
        # Half the time the frame's own payload length, else any varuint in it.
        outer = 2 if frame[0] == protocol.MSG_SYNC else 1
        starts = varuint_starts(frame)
        at = outer if rng.random() < 0.5 and len(frame) > outer else rng.choice(starts)
        return replace_varuint(rng, frame, at)
    return bytes(data)


@dataclass
class Unit:
    """What one fuzz step sends: `frames` (bytes; str for text frames), of which the
    mutated ones are at `mutated`."""

    kind: str
    frames: list[bytes | str]
    mutated: list[int] = field(default_factory=list)

    @property
    def expect(self) -> frozenset[str]:
        """Outcomes allowed for this unit: "open", or the server's close code."""
        if self.kind == "text":
            return frozenset({"1003"})
        if self.kind == "oversize":
            # The server stops reading mid-message and closes: the rest of what the client
            # was still sending makes the kernel reset the connection, which may destroy
            # the close frame in flight. Counted apart in the report.
            return frozenset({"1009", "abrupt"})
        if self.kind == "boundary":
            # README: "closed with 1009 above" --max-message-bytes, so a frame of exactly
            # that size is read and judged; counted apart (Figures.boundary).
            return frozenset({"open", "1002", "1003", "1009", "abrupt"})
        if self.kind in ("valid", "duplicate", "shuffle"):
            return frozenset({"open"})
        return frozenset({"open", "1002", "1003"})


UNIT_KINDS = {
    "valid": 8,
    "bitflip": 14,
    "truncate": 7,
    "insert": 7,
    "delete": 6,
    "length": 12,
    "splice": 5,
    "duplicate": 6,
    "shuffle": 6,
    "random": 7,
    "typed-random": 9,
    "text": 2,
    "boundary": 0.2,
}
TYPE_PREFIXES = [b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01", b"\x02\x00", b"\x03", b"\x00"]


def make_unit(rng: random.Random, corpus: Corpus, options: Options, oversize: bool) -> Unit:
    if oversize:
        size = options.max_message_bytes + rng.randint(1, 4096)
        return Unit("oversize", [b"\x00\x02" + write_var_uint(size) + bytes(size)], [0])
    kinds, weights = zip(*UNIT_KINDS.items(), strict=True)
    kind = rng.choices(kinds, weights)[0]
    if kind == "valid":
        return Unit(kind, [valid_frame(rng, corpus)])
    if kind in ("bitflip", "truncate", "insert", "delete", "length"):
        return Unit(kind, [mutate(rng, valid_frame(rng, corpus), kind)], [0])
    if kind == "splice":
        head, tail = valid_frame(rng, corpus), valid_frame(rng, corpus)
        return Unit(
            kind, [head[: rng.randint(1, len(head))] + tail[rng.randrange(len(tail)) :]], [0]
        )
    if kind == "duplicate":
        return Unit(kind, [valid_frame(rng, corpus)] * rng.randint(2, 4))
    if kind == "shuffle":
        updates = rng.choice(corpus.updates)
        start = rng.randrange(len(updates))
        frames: list[bytes | str] = [
            protocol.encode_update(u) for u in updates[start : start + rng.randint(2, 8)]
        ]
        frames += [awareness_frame(rng)] if rng.random() < 0.3 else []
        rng.shuffle(frames)
        return Unit(kind, frames)
    if kind == "random":
        return Unit(kind, [rng.randbytes(rng.randint(0, 300))], [0])
    if kind == "typed-random":
        return Unit(kind, [rng.choice(TYPE_PREFIXES) + rng.randbytes(rng.randint(0, 200))], [0])
    if kind == "text":
        return Unit(kind, [rng.choice(["", "hello", "\x00\x02\x02", "é" * rng.randint(1, 50)])])
    # boundary: exactly --max-message-bytes, which README says is still accepted
    size = options.max_message_bytes
    return Unit(kind, [b"\x7f" + bytes(size - 1)], [0])


# --- fuzz connections ------------------------------------------------------------------------


@dataclass
class Violation:
    state: str
    room: str
    kind: str
    outcome: str
    frames: list[str]  # hex (head of each if long)
    note: str = ""


@dataclass
class Figures:
    frames: Counter[str] = field(default_factory=Counter)  # frames sent per unit kind
    units: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # per connection
    outcomes_by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    accepted_updates: int = 0  # mutated frames that were updates, and were applied
    accepted_other: int = 0  # other mutated frames the server took in
    connections: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # HTTP status at the upgrade
    probes: int = 0
    boundary: Counter[str] = field(default_factory=Counter)  # outcomes of size == limit
    split_answers: int = 0  # sync answers that came in several frames
    violations: list[Violation] = field(default_factory=list)

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())


class FuzzConnection:
    """One WebSocket to the server, with a task reading (and counting) everything."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.step2 = 0
        self.pieces = 0  # Updates since the last SyncStep2
        self.split = 0
        self.closed = asyncio.Event()
        self.outcome: str | None = None  # "1002", ..., "abrupt", "open"
        self.bad_frame: bytes | None = None
        self.changed = asyncio.Event()
        self.by_us = False
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message.type is aiohttp.WSMsgType.BINARY:
                    try:
                        decoded = protocol.decode(message.data)
                    except protocol.ProtocolError:
                        self.bad_frame = message.data
                        continue
                    if isinstance(decoded, protocol.SyncStep2):
                        self.step2 += 1
                        self.split += self.pieces > 0
                        self.pieces = 0
                        self.changed.set()
                    elif isinstance(decoded, protocol.SyncUpdate):
                        self.pieces += 1
                    continue
                if message.type is aiohttp.WSMsgType.CLOSE:
                    self.outcome = "open" if self.by_us else str(message.data)
                elif self.outcome is None:
                    self.outcome = "open" if self.by_us else "abrupt"
                return
        except (aiohttp.ClientError, ConnectionError, TimeoutError):
            self.outcome = self.outcome or ("open" if self.by_us else "abrupt")
        finally:
            if self.outcome is None:
                self.outcome = "open" if self.by_us else "abrupt"
            self.closed.set()
            self.changed.set()

    async def send(self, frame: bytes | str) -> bool:
        """Send one frame; False if the connection is already gone."""
        if self.closed.is_set() or self.ws.closed:
            return False
        try:
            if isinstance(frame, str):
                await self.ws.send_str(frame)
            else:
                await self.ws.send_bytes(frame)
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return False
        return True

    async def wait_answers(self, expected: int, timeout: float) -> bool:
        """Until `expected` SyncStep2s arrived or the server closed; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while self.step2 < expected and not self.closed.is_set():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> str:
        if not self.closed.is_set():
            self.by_us = True
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                async with asyncio.timeout(10):
                    await self.ws.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.closed.wait()
        if not self.reader.done():
            self.reader.cancel()
            self.outcome = self.outcome or "no close"
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        return self.outcome or "abrupt"


def sync_steps1(frame: bytes | str) -> int:
    """1 if the server will answer this frame with a SyncStep2 (it decodes as SyncStep1)."""
    if isinstance(frame, str):
        return 0
    try:
        return isinstance(protocol.decode(frame), protocol.SyncStep1)
    except protocol.ProtocolError:
        return 0


def is_update(frame: bytes | str) -> bool:
    if isinstance(frame, str):
        return False
    try:
        message = protocol.decode(frame)
    except protocol.ProtocolError:
        return False
    return isinstance(message, protocol.SyncUpdate | protocol.SyncStep2) and (
        message.update != protocol.EMPTY_UPDATE
    )


def show(frame: bytes | str, limit: int = 400) -> str:
    if isinstance(frame, str):
        return f"text:{frame[:limit]!r}"
    head = frame[:limit].hex()
    return head if len(frame) <= limit else f"{head}... ({len(frame)} bytes)"


@dataclass
class Phase:
    index: int
    state: str
    room: str
    frames: int
    probe_vector: bytes = protocol.EMPTY_STATE_VECTOR
    opening: list[bytes] = field(default_factory=list)  # sent right after connecting


async def fuzz_worker(
    session: aiohttp.ClientSession,
    server: Server,
    phase: Phase,
    corpus: Corpus,
    options: Options,
    rng: random.Random,
    budget: list[int],
    figures: Figures,
) -> None:
    probe = protocol.encode_sync_step1(phase.probe_vector)
    while budget[0] > 0:
        try:
            ws = await session.ws_connect(f"{server.url}/{phase.room}", max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            # Refused before the WebSocket opened: no limit is near (a few connections),
            # so this is a room that cannot be served. Counted as a frame, not to spin.
            figures.refused[exc.status] += 1
            budget[0] -= 1
            await asyncio.sleep(0.05)
            continue
        figures.connections += 1
        conn = FuzzConnection(ws)
        answers = 0
        unit: Unit | None = None
        for frame in phase.opening:
            await conn.send(frame)
            figures.frames["opening"] += 1
            answers += sync_steps1(frame)
        for _ in range(rng.randint(1, 25)):
            if budget[0] <= 0:
                break
            oversize = rng.randrange(options.oversize_every) == 0
            unit = make_unit(rng, corpus, options, oversize)
            budget[0] -= len(unit.frames)
            figures.units[unit.kind] += 1
            sent = True
            for frame in unit.frames:
                if not await conn.send(frame):
                    sent = False
                    break
                figures.frames[unit.kind] += 1
                answers += sync_steps1(frame)
            if sent and await conn.send(probe):
                answers += 1
                figures.probes += 1
            if not await conn.wait_answers(answers, timeout=30):
                figures.violations.append(
                    Violation(
                        phase.state,
                        phase.room,
                        unit.kind,
                        "no answer within 30 s",
                        [show(f) for f in unit.frames],
                    )
                )
                break
            if conn.closed.is_set():
                break
            if unit.mutated:
                taken = sum(is_update(unit.frames[i]) for i in unit.mutated)
                figures.accepted_updates += taken
                figures.accepted_other += len(unit.mutated) - taken
        outcome = await conn.close()
        figures.split_answers += conn.split
        figures.outcomes[outcome] += 1
        last = unit.kind if unit is not None else "opening"
        figures.outcomes_by_kind[(last, outcome)] += 1
        if last == "boundary":
            figures.boundary[outcome] += 1
        allowed = unit.expect if unit is not None else frozenset({"open"})
        if outcome not in allowed or conn.bad_frame is not None:
            note = (
                f"server sent an undecodable frame {show(conn.bad_frame)}" if conn.bad_frame else ""
            )
            figures.violations.append(
                Violation(
                    phase.state,
                    phase.room,
                    last,
                    outcome,
                    [show(f) for f in (unit.frames if unit else phase.opening)],
                    note,
                )
            )


# --- well-behaved clients ------------------------------------------------------------------


def state_vector_of(doc: pycrdt.Doc[Any]) -> dict[str, int]:
    """The clocks `doc` holds, as a view shows them. Yrs lists some clients at clock 0
    (it heard of them, holds nothing of theirs): those are left out."""
    return {str(c): n for c, n in decode_state_vector(doc.get_state()).items() if n}


def view_of_state(state: bytes) -> dict[str, Any]:
    """What a user sees of a document: the state vector, and each root as the server's
    JSON export shows it (its type read from its content, as collab.yjs.roots does).

    Reading a root as a type it does not have can make pycrdt loop forever (seen: a
    fuzzed "array" root holding strings, read as an Array), so types are never assumed;
    and collab.yjs.roots itself can loop forever on fuzzed content: `views` runs this in a
    child process, under a time limit.
    """
    copy: pycrdt.Doc[Any] = pycrdt.Doc()
    try:
        copy.apply_update(state)
    except Exception as exc:  # noqa: BLE001 - reported as what the user sees
        return {"state_vector": f"state does not apply again: {exc!r}"}
    seen: dict[str, Any] = {"state_vector": state_vector_of(copy)}
    try:
        tree = Tree(state)
        types = root_types(tree)
    except UpdateFormatError as exc:
        seen["roots"] = f"unreadable: {exc}"
        return seen
    for name, kind in sorted(types.items()):
        try:
            seen[f"root {name!r}"] = to_json(tree, {name: kind}).get(name)
        except Exception as exc:  # noqa: BLE001 - a root a fuzzed update made unreadable
            seen[f"root {name!r}"] = f"unreadable: {exc!r}"
    return seen


VIEW_SECONDS = 30.0  # per batch of views


async def views(states: list[bytes]) -> list[dict[str, Any]]:
    """`view_of_state` of each state, computed in a child process (`_views`)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fuzz",
        "_views",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,  # where `tests` (and the collab under test) are imported from
    )
    try:
        async with asyncio.timeout(VIEW_SECONDS):
            out, _ = await child.communicate(pack(states))
    except TimeoutError:
        child.kill()
        await child.wait()
        hung = f"reading the document did not finish in {VIEW_SECONDS:.0f} s"
        return [{"state_vector": hung} for _ in states]
    if child.returncode != 0:
        return [{"state_vector": f"reading the document failed ({child.returncode})"}] * len(states)
    found: list[dict[str, Any]] = json.loads(out)
    return found


def serve_views() -> None:
    """The `_views` subcommand: states (packed) on stdin, their views as JSON on stdout."""
    import resource

    limit = 2 * 1024 * MiB  # collab.yjs.roots allocates as it loops
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    states = unpack(sys.stdin.buffer.read())
    json.dump([view_of_state(state) for state in states], sys.stdout, default=repr)


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [key for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]


class Editor(Client):
    """A Client that also keeps every update it received, in order (the client has no
    public hook; `_handle` is where every message from the server passes)."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(url, name)
        self.received: list[bytes] = []
        self.sync_answers = 0

    def _handle(self, message: protocol.Message) -> None:
        if isinstance(message, protocol.SyncUpdate | protocol.SyncStep2):
            self.received.append(message.update)
        super()._handle(message)
        self.sync_answers += isinstance(message, protocol.SyncStep2)

    async def resync(self, timeout: float = 20.0) -> None:
        """Ask for what the server has and we lack, as providers do now and then."""
        before = self.sync_answers
        self._send(protocol.encode_sync_step1(self.doc.get_state()))
        await self.wait_for(lambda: self.sync_answers > before, timeout)


def pack(updates: list[bytes]) -> bytes:
    """Updates as one file: each with its varuint length before it."""
    return b"".join(write_var_uint(len(update)) + update for update in updates)


def unpack(data: bytes) -> list[bytes]:
    reader = Reader(data, ValueError)
    found = []
    while reader.pos < len(data):
        found.append(reader.var_bytes())
    return found


async def editor(client: Client, rng: random.Random, stop: asyncio.Event, presence: bool) -> int:
    """Edit until `stop`; return the number of edits made."""
    edits = 0
    while not stop.is_set() and not client.closed.is_set():
        try:
            edit(client.doc, rng, EDITOR_ROOTS)
        except BaseException as exc:
            # pycrdt panics (pyo3's PanicException) on some edits near content that
            # fuzzed updates made: skip that edit.
            if type(exc).__name__ != "PanicException":
                raise
        edits += 1
        if presence:
            client.set_awareness({"user": {"name": f"editor {client.client_id}"}, "edits": edits})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(rng.uniform(0.01, 0.06)):
                await stop.wait()
    return edits


async def churn(url: str, room: str, stop: asyncio.Event, joins: list[int]) -> None:
    """Fresh clients joining and leaving, so that sync exchanges are always in flight."""
    while not stop.is_set():
        client = Client(url, room)
        try:
            await client.connect(timeout=10)
            joins[0] += 1
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            await asyncio.sleep(0.2)  # reported by the convergence check
        await client.close()


@contextlib.asynccontextmanager
async def joined(url: str, room: str, timeout: float = 10.0) -> AsyncIterator[Client]:
    """A Client of `room`, synced within `timeout` seconds (or TimeoutError)."""
    client = Client(url, room)
    await client.connect(timeout=timeout)
    try:
        yield client
    finally:
        await client.close()


async def fresh_view(url: str, room: str) -> dict[str, Any]:
    async with joined(url, room) as client:
        state = client.doc.get_update()
    return (await views([state]))[0]


async def converge(
    url: str, room: str, editors: list[Editor], seconds: float, evidence: Path | None = None
) -> tuple[list[str], int, list[str]]:
    """Wait until every editor sees what a fresh client sees; the problems left, how
    many editors needed a resync to get there, and the editors whose own pycrdt could not
    encode what it holds.

    An editor still behind after a second is resynced (SyncStep1, as providers do now and
    then): a pycrdt Doc drops pending parts of updates that arrive separately and depend
    on each other, and the fuzz sends such updates, so a plain client can fall behind
    the server without any fault of the server's. What a resync cannot fix is a
    divergence. The documents are saved under `evidence` if they do not converge.

    Editors are compared through their encoded state. An editor whose live state vector
    is the fresh client's, but whose own encoding holds less, met the pycrdt limitation
    that docs/security.md describes (state vector and encoding disagree) in its own
    document: that is reported as known, not as a divergence of the server's.
    """
    for client in editors:
        if not client.closed.is_set():
            await client.flush()
    started = time.monotonic()
    resynced: set[int] = set()
    while True:
        async with joined(url, room) as fresh:
            fresh_state = fresh.doc.get_update()
        reference, *seen = await views([fresh_state] + [c.doc.get_update() for c in editors])
        problems, behind, known = [], [], []
        if isinstance(reference["state_vector"], str):
            problems.append(
                f"a fresh client's document cannot be read: {reference['state_vector']}"
            )
            break
        for number, client in enumerate(editors):
            if client.closed.is_set():
                problems.append(
                    f"editor {number} was disconnected (close code {client.close_code})"
                )
            elif (diff := differences(reference, seen[number])) and _cannot_encode(
                client, reference, seen[number]
            ):
                known.append(
                    f"editor {number} holds the fresh client's state vector but its pycrdt "
                    f"encodes less ({len(diff)} differences in its encoding)"
                )
            elif diff:
                behind.append(number)
                problems.append(
                    f"editor {number} differs from a fresh client in {diff}"
                    + (" after a resync" if number in resynced else "")
                    + ("" if "state_vector" in diff else " (same state vector)")
                )
        if not behind or time.monotonic() - started > seconds:
            break
        if time.monotonic() - started > 1.0:
            for number in behind:
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await editors[number].resync()
                resynced.add(number)
        await asyncio.sleep(0.25)
    if problems and evidence is not None:
        evidence.mkdir(parents=True, exist_ok=True)
        (evidence / "fresh.bin").write_bytes(fresh_state)
        (evidence / "fresh.json").write_text(json.dumps(reference, indent=1, default=repr))
        for number, client in enumerate(editors):
            (evidence / f"editor{number}.bin").write_bytes(client.doc.get_update())
            (evidence / f"editor{number}-received.bin").write_bytes(pack(client.received))
            (evidence / f"editor{number}.json").write_text(
                json.dumps(seen[number], indent=1, default=repr)
            )
        problems.append(f"documents saved in {evidence}")
    return problems, len(resynced), known


def _cannot_encode(client: Client, reference: dict[str, Any], seen: dict[str, Any]) -> bool:
    live = state_vector_of(client.doc)
    return bool(live == reference["state_vector"] != seen["state_vector"])


# --- rooms ------------------------------------------------------------------------------------


async def fill(url: str, room: str, rng: random.Random, target_bytes: int) -> int:
    """Write content into `room` until its state is about `target_bytes`; its size."""
    async with Client(url, room) as client:
        while len(client.doc.get_update()) < target_bytes:
            if target_bytes > 64 * 1024:
                text = client.doc.get("text", type=pycrdt.Text)
                text += "".join(rng.choice(WORDS) for _ in range(400))
                client.doc.get("map", type=pycrdt.Map)[f"blob{rng.randrange(10**6)}"] = (
                    rng.randbytes(2048)
                )
            else:
                edit(client.doc, rng)
        await client.flush()
        return len(client.doc.get_update())


async def make_pending(url: str, session: aiohttp.ClientSession, room: str, client_id: int) -> bool:
    """Send `room` an update whose dependency (the client's first edit) is never sent;
    True if the server's stored state holds it un-integrated."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    made: list[bytes] = []
    doc.observe(lambda event: made.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    text += "first "
    text += "second (waits for first)"
    async with session.ws_connect(f"{url}/{room}", max_msg_size=0) as ws:
        await ws.send_bytes(protocol.encode_update(made[1]))
        await ws.send_bytes(protocol.encode_sync_step1(protocol.EMPTY_STATE_VECTOR))
        async with asyncio.timeout(30):
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.BINARY:
                    return False
                if isinstance(protocol.decode(message.data), protocol.SyncStep2):
                    break
    state = await stored_state(session, url, room)
    try:
        integrated = decode_state_vector(_doc_of(state).get_state())
        return client_id in clock_ranges(state) and client_id not in integrated
    except Exception as exc:  # pycrdt cannot load the room's state
        raise RoomUnreadable(f"{room}: pycrdt cannot load its stored state: {exc!r}") from exc


class RoomUnreadable(Exception):
    """A room's state that pycrdt refuses to load."""


def _doc_of(update: bytes) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(update)
    return doc


async def stored_state(session: aiohttp.ClientSession, url: str, room: str) -> bytes:
    """The room's full state, pending parts included, from the REST API."""
    http = url.replace("ws://", "http://", 1)
    async with session.get(f"{http}/api/docs/{room}", params={"format": "update"}) as response:
        response.raise_for_status()
        return await response.read()


def covered_clocks(state: bytes) -> dict[int, tuple[int, int]] | str:
    try:
        return clock_ranges(state)
    except UpdateFormatError as exc:
        return f"unreadable: {exc}"


async def healthz(session: aiohttp.ClientSession, server: Server) -> str | None:
    """None if /healthz answers ok, else what went wrong."""
    try:
        async with asyncio.timeout(10):
            async with session.get(f"{server.http}/healthz") as response:
                body = await response.json()
                if response.status != 200 or body.get("status") != "ok":
                    return f"/healthz answered {response.status}: {body}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"/healthz failed: {exc!r}"
    return None


# --- a run --------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    index: int
    state: str
    room: str
    frames: int
    seconds: float
    rss_mb: float
    edits: int
    joins: int
    resynced: int  # editors that needed a resync to converge
    problems: list[str]


@dataclass
class Summary:
    options: Options
    figures: Figures = field(default_factory=Figures)
    phases: list[PhaseResult] = field(default_factory=list)
    rss: list[tuple[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # everything that is not a violation
    # Outcomes of the pycrdt limitation in docs/security.md, seen in a client's own
    # document; reported, not counted against the server.
    known: list[str] = field(default_factory=list)
    log_alarms: Counter[str] = field(default_factory=Counter)
    setup: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    directory: Path | None = None

    @property
    def ok(self) -> bool:
        return not (
            self.problems or self.figures.violations or self.log_alarms or self.figures.refused
        )

    def rss_after(self, state: str, occurrence: int) -> float:
        """RSS after the `occurrence`-th (1-based) phase of `state`."""
        found = [phase.rss_mb for phase in self.phases if phase.state == state]
        return found[occurrence - 1]

    def report(self) -> str:
        f = self.figures
        lines = [f"fuzz run: seed {self.options.seed}, {self.seconds:.1f} s, {self.directory}"]
        lines.append(
            f"frames sent: {f.total_frames} ({f.total_frames / max(self.seconds, 1e-9):.0f}/s "
            f"overall), units {sum(f.units.values())}, probes {f.probes}, "
            f"connections {f.connections}"
        )
        lines.append("frames per kind: " + _counts(f.frames))
        lines.append("outcomes per connection: " + _counts(f.outcomes))
        by_kind: dict[str, Counter[str]] = {}
        for (kind, outcome), count in f.outcomes_by_kind.items():
            by_kind.setdefault(kind, Counter())[outcome] += count
        for kind in sorted(by_kind):
            lines.append(f"  last unit {kind}: {_counts(by_kind[kind])}")
        lines.append(
            f"mutated frames taken in: {f.accepted_updates} updates, {f.accepted_other} others"
        )
        lines.append(f"sync answers split in pieces: {f.split_answers}")
        if f.boundary:
            lines.append(
                f"frames of exactly --max-message-bytes ({self.options.max_message_bytes}): "
                + _counts(f.boundary)
            )
        if f.refused:
            lines.append(f"upgrades refused: {_counts(f.refused)}")
        lines.append(f"setup: {self.setup}")
        lines += [phase_line(phase) for phase in self.phases]
        lines.append("RSS timeline (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in self.rss))
        for state in dict.fromkeys(phase.state for phase in self.phases):
            runs = [phase.rss_mb for phase in self.phases if phase.state == state]
            if len(runs) >= 2:
                lines.append(
                    f"RSS growth over repeated {state} phases (MiB): "
                    + ", ".join(f"{b - a:+.1f}" for a, b in itertools.pairwise(runs))
                )
        lines.append(
            f"violations: {len(f.violations)}; server log alarms: {sum(self.log_alarms.values())}"
        )
        grouped = Counter((v.state, v.kind, v.outcome) for v in f.violations)
        for (state, kind, outcome), count in grouped.most_common():
            lines.append(f"  violations in {state}: last unit {kind} -> {outcome}: {count}")
        for violation in f.violations[:15]:
            lines.append(
                f"  VIOLATION {violation.state}/{violation.room} {violation.kind} -> "
                f"{violation.outcome} {violation.note} frames={violation.frames}"
            )
        for alarm, count in self.log_alarms.most_common(15):
            lines.append(f"  LOG x{count}: {alarm}")
        for note in self.known:
            lines.append(f"  KNOWN (pycrdt, docs/security.md): {note}")
        for problem in self.problems:
            lines.append(f"  PROBLEM: {problem}")
        lines.append("RESULT: " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)


def phase_line(phase: PhaseResult) -> str:
    status = "ok" if not phase.problems else "; ".join(phase.problems)
    return (
        f"phase {phase.index:2d} {phase.state:<9} {phase.frames:7d} frames "
        f"{phase.seconds:6.1f} s  edits {phase.edits:5d}  joins {phase.joins:4d}  "
        f"resynced {phase.resynced}  RSS {phase.rss_mb:6.1f} MiB  {status}"
    )


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{key}: {count}" for key, count in counter.most_common())


def scan_log(text: str, alarms: Counter[str]) -> None:
    """Count what escaped a handler, by the exception line that ends each traceback."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if not LOG_ALARMS.search(line):
            continue
        if "Traceback" in line:
            end = number + 1
            while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end]):
                end += 1
            alarms[(lines[end] if end < len(lines) else line)[:200]] += 1
        elif "Error handling request" not in line:
            alarms[re.sub(r"^\S+ \S+ ", "", line)[:200]] += 1


async def run(options: Options, directory: Path) -> Summary:
    """One fuzz run in `directory` (database and server log)."""
    started = time.monotonic()
    rng = random.Random(options.seed)
    summary = Summary(options, directory=directory)
    args = [
        "--max-message-bytes",
        str(options.max_message_bytes),
        "--room-grace-seconds",
        "2",
        "--version-updates",
        "200",
        *options.server_args,
    ]
    server = Server(directory / "collab.db", directory / "server.log", args)
    await server.start()
    corpus = Corpus.build(random.Random(rng.random()))
    plan = options.plan()
    per_phase = max(1, options.frames // max(1, len(plan)))
    try:
        async with aiohttp.ClientSession() as session:
            summary.rss.append(("start", server.rss_mb()))
            rooms: dict[str, Phase] = {}
            used: set[str] = set()
            for index, state in enumerate(plan, 1):
                try:
                    phase = await prepare(
                        session, server, rooms, index, state, rng, options, summary
                    )
                except (aiohttp.ClientError, TimeoutError, ConnectionError, RoomUnreadable) as exc:
                    summary.problems.append(f"phase {index} ({state}): cannot set up: {exc!r}")
                    continue
                used.add(phase.room)
                phase.frames = per_phase
                result = await run_phase(session, server, phase, corpus, options, rng, summary)
                summary.phases.append(result)
                if options.progress:
                    print(phase_line(result), flush=True)
                summary.rss.append((f"{index}:{state}", result.rss_mb))
                if not server.alive():
                    summary.problems.append(f"server died during phase {index}: {server.tail()}")
                    break
            if server.alive():
                await asyncio.sleep(options.settle_seconds)
                summary.rss.append(("settled", server.rss_mb()))
                await restart_check(session, server, sorted(used), summary)
    finally:
        scan_log(server.new_log(), summary.log_alarms)
        server.kill()
        summary.seconds = time.monotonic() - started
    return summary


async def prepare(
    session: aiohttp.ClientSession,
    server: Server,
    rooms: dict[str, Phase],
    index: int,
    state: str,
    rng: random.Random,
    options: Options,
    summary: Summary,
) -> Phase:
    """The room of a phase, set up the first time its state comes."""
    if state == "empty":
        return Phase(index, state, f"fuzz-empty-{index}", 0)
    if state not in rooms:
        room = f"fuzz-{state}"
        target = options.large_bytes if state == "large" else 8 * 1024
        size = await fill(server.url, room, rng, target)
        summary.setup[f"{state} bytes"] = size
        rooms[state] = Phase(index, state, room, 0)
        if state == "large":
            async with joined(server.url, room) as client:
                rooms[state].probe_vector = client.doc.get_state()
    phase = rooms[state]
    phase.index = index
    if state == "pending":
        pending_id = 770_000 + index
        held = await make_pending(server.url, session, phase.room, pending_id)
        summary.setup.setdefault("pending held", []).append(held)
        if not held:
            summary.problems.append(f"phase {index}: the pending update was not held pending")
    if state == "syncing":
        vector = rng.choice(Corpus.build(random.Random(index), docs=1, edits=5).state_vectors)
        update = Corpus.build(random.Random(index + 1), docs=1, edits=5).states[0]
        phase.opening = [protocol.encode_sync_step1(vector), protocol.encode_sync_step2(update)]
    return Phase(index, state, phase.room, 0, phase.probe_vector, phase.opening)


async def run_phase(
    session: aiohttp.ClientSession,
    server: Server,
    phase: Phase,
    corpus: Corpus,
    options: Options,
    rng: random.Random,
    summary: Summary,
) -> PhaseResult:
    started = time.monotonic()
    before = summary.figures.total_frames
    stop = asyncio.Event()
    editors: list[Editor] = []
    tasks: list[asyncio.Task[int]] = []
    joins = [0]
    resynced = 0
    problems: list[str] = []
    if phase.state != "empty":
        for _ in range(options.editors):
            client = Editor(server.url, phase.room)
            try:
                await client.connect(timeout=10)
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                problems.append(f"an editor cannot join: {exc!r}")
                continue
            editors.append(client)
            presence = phase.state == "awareness"
            if presence:
                client.set_awareness({"user": {"name": f"editor {client.client_id}"}})
            tasks.append(
                asyncio.create_task(editor(client, random.Random(rng.random()), stop, presence))
            )
    churner = (
        asyncio.create_task(churn(server.url, phase.room, stop, joins))
        if phase.state == "syncing"
        else None
    )
    budget = [phase.frames]
    workers = [
        fuzz_worker(
            session,
            server,
            phase,
            corpus,
            options,
            random.Random(rng.random()),
            budget,
            summary.figures,
        )
        for _ in range(options.workers)
    ]

    async def cut_short() -> None:
        await asyncio.sleep(options.phase_seconds)
        sent = summary.figures.total_frames - before
        problems.append(
            f"cut short after {options.phase_seconds:.0f} s with {sent} of {phase.frames} "
            f"frames sent: the server slowed down to {sent / options.phase_seconds:.0f} frames/s"
        )
        budget[0] = 0

    watchdog = asyncio.create_task(cut_short())
    await asyncio.gather(*workers)
    watchdog.cancel()
    stop.set()
    edits = sum(await asyncio.gather(*tasks))
    if churner is not None:
        await churner
    if not server.alive():
        problems.append("server process died")
    else:
        if trouble := await healthz(session, server):
            problems.append(trouble)
        try:
            evidence = summary.directory / f"diverged-{phase.index}" if summary.directory else None
            found, resynced, known = await converge(
                server.url, phase.room, editors, options.converge_seconds, evidence
            )
            problems += found
            summary.known += [f"phase {phase.index} ({phase.state}): {k}" for k in known]
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            problems.append(f"fresh client could not sync: {exc!r}")
    for client in editors:
        await client.close()
    summary.problems += [f"phase {phase.index} ({phase.state}): {p}" for p in problems]
    alarms: Counter[str] = Counter()
    scan_log(server.new_log(), alarms)
    summary.log_alarms.update(alarms)
    problems += [f"server log: {alarm} (x{count})" for alarm, count in alarms.items()]
    rss = server.rss_mb() if server.alive() else 0.0
    return PhaseResult(
        phase.index,
        phase.state,
        phase.room,
        summary.figures.total_frames - before,
        time.monotonic() - started,
        rss,
        edits,
        joins[0],
        resynced,
        problems,
    )


async def room_look(
    session: aiohttp.ClientSession, server: Server, room: str
) -> tuple[dict[str, Any], Any]:
    """A fresh client's view of `room`, and the clocks its full stored state covers."""
    async with asyncio.timeout(60):
        seen = await fresh_view(server.url, room)
        return seen, covered_clocks(await stored_state(session, server.url, room))


async def restart_check(
    session: aiohttp.ClientSession, server: Server, rooms: list[str], summary: Summary
) -> None:
    """Stop with SIGTERM, start again: every room must look as it did."""
    before: dict[str, tuple[dict[str, Any], Any]] = {}
    for room in rooms:
        try:
            before[room] = await room_look(session, server, room)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            summary.problems.append(f"{room}: before the restart, cannot be read: {exc!r}")
    code = await server.stop()
    scan_log(server.new_log(), summary.log_alarms)
    if code != 0:
        summary.problems.append(f"server exited with {code} on SIGTERM")
    await server.start()
    summary.rss.append(("restarted", server.rss_mb()))
    for room, (seen_before, clocks_before) in before.items():
        try:
            seen_after, clocks_after = await room_look(session, server, room)
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            summary.problems.append(f"{room}: after a restart, cannot be read: {exc!r}")
            continue
        if isinstance(seen_after["state_vector"], str):
            summary.problems.append(f"{room}: cannot be read: {seen_after['state_vector']}")
        if diff := differences(seen_before, seen_after):
            summary.problems.append(f"{room}: after a restart, a fresh client differs in {diff}")
        if clocks_before != clocks_after:
            summary.problems.append(
                f"{room}: after a restart, the stored state covers other clocks "
                f"({clocks_before} before, {clocks_after} after)"
            )
    summary.setup["restart checked rooms"] = len(rooms)
    if trouble := await healthz(session, server):
        summary.problems.append(f"after restart: {trouble}")
    await server.stop()


# --- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=Options.frames, help="fuzz frames in all")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--workers", type=int, default=Options.workers)
    parser.add_argument("--editors", type=int, default=Options.editors)
    parser.add_argument(
        "--states", default=",".join(STATES), help=f"room states, in order ({','.join(STATES)})"
    )
    parser.add_argument("--rounds", type=int, default=Options.rounds)
    parser.add_argument("--max-message-bytes", type=int, default=Options.max_message_bytes)
    parser.add_argument("--settle", type=float, default=Options.settle_seconds)
    parser.add_argument(
        "--converge", type=float, default=Options.converge_seconds, help="seconds per check"
    )
    parser.add_argument(
        "--phase-seconds", type=float, default=Options.phase_seconds, help="cut a phase short"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the run's files")
    parser.add_argument("--json", type=Path, default=None, help="also write figures as JSON")
    args, server_args = parser.parse_known_args(argv)
    states = tuple(s for s in args.states.split(",") if s)
    unknown = set(states) - set(STATES)
    if unknown:
        parser.error(f"unknown states: {sorted(unknown)}")
    options = Options(
        frames=args.frames,
        seed=args.seed if args.seed is not None else random.randrange(2**32),
        workers=args.workers,
        editors=args.editors,
        states=states,
        rounds=args.rounds,
        max_message_bytes=args.max_message_bytes,
        settle_seconds=args.settle,
        converge_seconds=args.converge,
        phase_seconds=args.phase_seconds,
        server_args=server_args,
        progress=True,
    )
    return options, args


def as_json(summary: Summary) -> dict[str, Any]:
    f = summary.figures
    return {
        "seed": summary.options.seed,
        "seconds": round(summary.seconds, 1),
        "frames": dict(f.frames),
        "units": dict(f.units),
        "outcomes": dict(f.outcomes),
        "accepted_updates": f.accepted_updates,
        "accepted_other": f.accepted_other,
        "connections": f.connections,
        "split_answers": f.split_answers,
        "rss_mb": [(k, round(v, 1)) for k, v in summary.rss],
        "violations": [vars(v) for v in f.violations],
        "log_alarms": dict(summary.log_alarms),
        "problems": summary.problems,
        "ok": summary.ok,
    }


def main(argv: list[str] | None = None) -> int:
    if (argv if argv is not None else sys.argv[1:])[:1] == ["_views"]:
        serve_views()
        return 0
    options, args = parse_args(argv)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="collab-fuzz-"))
    directory.mkdir(parents=True, exist_ok=True)
    summary = asyncio.run(run(options, directory))
    print(summary.report())
    if args.json:
        args.json.write_text(json.dumps(as_json(summary), indent=2))
    if summary.ok and not args.keep and args.dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    elif not summary.ok:
        print(f"kept {directory} (database and server.log)")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
