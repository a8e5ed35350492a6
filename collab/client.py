"""The Python client: join a document on a collab (or any y-websocket) server.

    async with Client("ws://127.0.0.1:1234", "my-doc") as client:
        text = client.doc.get("content", type=pycrdt.Text)
        text += "hello"                       # sent to the server at once
        client.set_awareness({"user": {"name": "bot"}})
        await client.wait_for(lambda: "world" in str(text))

Entering the context connects and waits for the first sync. Local changes to `doc` are
sent as they happen; remote ones are applied as they arrive. The client does not
reconnect by itself: after `closed` is set, make a new one with the same `doc`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aiohttp
import pycrdt

from collab import protocol
from collab.errors import ProtocolError

log = logging.getLogger(__name__)

AWARENESS_RENEW_SECONDS = 15.0  # stock clients drop a state not renewed for 30 s


class Client:
    """One connection of one pycrdt `Doc` to one document."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        doc: pycrdt.Doc[Any] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        on_remote_update: Callable[[bytes], None] | None = None,
    ) -> None:
        """
        Args:
            on_remote_update: called with every update received from the server (the
                first sync's SyncStep2 included), after it is applied to `doc`.
        """
        self.url = url.rstrip("/") + "/" + name
        self.doc: pycrdt.Doc[Any] = doc if doc is not None else pycrdt.Doc()
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.denied: str | None = None  # reason, if the server refused something
        self.awareness: dict[int, dict[str, Any]] = {}  # client id -> state, others and ours
        self._params = params
        self._headers = headers
        self._on_remote_update = on_remote_update
        self._clocks: dict[int, int] = {}
        self._local_state: dict[str, Any] | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._applying_remote = False
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: pycrdt.Subscription | None = None

    @property
    def client_id(self) -> int:
        return self.doc.client_id

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, timeout: float = 30.0) -> None:
        """Open the connection and wait until the document is synced.

        Raises:
            aiohttp.ClientError: the server refused or could not be reached.
            TimeoutError: no sync within `timeout` seconds.
        """
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url, params=self._params, headers=self._headers, max_msg_size=0
            )
        except BaseException:
            await self._session.close()
            raise
        self._subscription = self.doc.observe(self._on_local_change)
        self._send(protocol.encode_sync_step1(self.doc.get_state()))
        if self._local_state is not None:
            self._send_awareness()
        self._tasks = [
            asyncio.create_task(self._read_loop(self._ws), name=f"client read {self.url}"),
            asyncio.create_task(self._write_loop(self._ws), name=f"client write {self.url}"),
            asyncio.create_task(self._renew_awareness(), name=f"client awareness {self.url}"),
        ]
        try:
            async with asyncio.timeout(timeout):
                await self.synced.wait()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Tell the room we left, send what is queued, and close the connection."""
        if self._ws is not None and not self._ws.closed and self._local_state is not None:
            self.set_awareness(None)
        if self._ws is not None and not self._ws.closed:
            await self._drain(timeout=5.0)
        if self._subscription is not None:
            self.doc.unobserve(self._subscription)
            self._subscription = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._ws is not None:
            await self._ws.close()
            self.close_code = self.close_code or self._ws.close_code
        if self._session is not None:
            await self._session.close()
        self.closed.set()

    async def _drain(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._outbox.join()
        except TimeoutError:
            log.warning("%s: closing with %d messages unsent", self.url, self._outbox.qsize())

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until `predicate()` is true; it is checked after every received message.

        Raises:
            TimeoutError: it did not become true within `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                if self.closed.is_set():
                    raise ConnectionError(f"connection closed ({self.close_code})")
                await self._changed.wait()

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every local change has been written to the socket."""
        await self._drain(timeout)

    # --- awareness

    def set_awareness(self, state: dict[str, Any] | None) -> None:
        """Set (or with None, withdraw) this client's presence state."""
        self._local_state = state
        # y-protocols takes an unknown client to be at clock 0 and wants a newer one.
        self._clocks[self.client_id] = self._clocks.get(self.client_id, 0) + 1
        if state is None:
            self.awareness.pop(self.client_id, None)
        else:
            self.awareness[self.client_id] = state
        if self._ws is not None:
            self._send_awareness()

    def _send_awareness(self) -> None:
        text = json.dumps(self._local_state, separators=(",", ":")).encode()
        entry = protocol.AwarenessEntry(self.client_id, self._clocks[self.client_id], text)
        self._send(protocol.encode_awareness([entry]))

    async def _renew_awareness(self) -> None:
        while True:
            await asyncio.sleep(AWARENESS_RENEW_SECONDS)
            if self._local_state is not None:
                self.set_awareness(self._local_state)

    def _apply_awareness(self, entries: tuple[protocol.AwarenessEntry, ...]) -> None:
        for entry in entries:
            if entry.client_id == self.client_id:
                continue
            known = self._clocks.get(entry.client_id, 0)
            present = entry.client_id in self.awareness
            if entry.clock < known or (entry.clock == known and not (entry.removed and present)):
                continue
            self._clocks[entry.client_id] = entry.clock
            state = json.loads(entry.state)
            if state is None:
                self.awareness.pop(entry.client_id, None)
            else:
                self.awareness[entry.client_id] = state

    # --- the socket

    def _send(self, frame: bytes) -> None:
        self._outbox.put_nowait(frame)

    def _on_local_change(self, event: pycrdt.TransactionEvent) -> None:
        if not self._applying_remote:
            self._send(protocol.encode_update(event.update))

    def _apply_remote(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying_remote = False
        if self._on_remote_update is not None:
            self._on_remote_update(update)

    async def _write_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            frame = await self._outbox.get()
            try:
                await ws.send_bytes(frame)
            finally:
                self._outbox.task_done()

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    self._receive(message.data)
                    self._changed.set()
        finally:
            self.close_code = ws.close_code
            self.closed.set()
            self._changed.set()

    def _receive(self, data: bytes) -> None:
        """Handle one frame. A message that cannot be read or applied is logged and
        skipped, as stock providers do: one bad frame must not end the connection."""
        try:
            self._handle(protocol.decode(data))
        except ProtocolError as exc:
            log.warning("%s: skipped a message that cannot be read: %s", self.url, exc)
        except Exception as exc:  # noqa: BLE001 - pycrdt raises ValueError and RuntimeError
            log.warning("%s: skipped an update that does not apply: %r", self.url, exc)
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":  # pyo3's, a BaseException
                raise
            log.warning("%s: pycrdt panicked applying an update: %s", self.url, exc)

    def _handle(self, message: protocol.Message) -> None:
        match message:
            case protocol.SyncStep1(state_vector):
                self._send(protocol.encode_sync_step2(self.doc.get_update(state_vector)))
            case protocol.SyncStep2(update):
                try:
                    self._apply_remote(update)
                finally:
                    self.synced.set()  # the server answered; what applied is all we get
            case protocol.SyncUpdate(update):
                self._apply_remote(update)
            case protocol.AwarenessUpdate(entries):
                self._apply_awareness(entries)
            case protocol.QueryAwareness():
                if self._local_state is not None:
                    self._send_awareness()
            case protocol.PermissionDenied(reason):
                log.warning("%s: permission denied: %s", self.url, reason)
                self.denied = reason
