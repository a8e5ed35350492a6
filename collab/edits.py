"""In-process edits: an app changes a loaded document as a pycrdt `Doc`, and the change is
applied, committed and relayed to every client like any edit (and hooks hear of it).

The app works on a copy of the room's state, so the room never waits for the app; what
it changed is taken out as one update when its block ends. Edits that clients make
meanwhile merge with it, as any two concurrent edits do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pycrdt

from collab.errors import BadRequest
from collab.protocol import EMPTY_UPDATE
from collab.room import Room

MAX_ORIGIN_LENGTH = 100


@asynccontextmanager
async def edit(room: Room, origin: str) -> AsyncIterator[pycrdt.Doc[Any]]:
    """A copy of `room`'s document to change; on a normal exit what changed is applied
    to the room and committed (this returns once it is durable). On an exception
    nothing is applied.

    Raises:
        QuotaExceeded: the change would pass the document's quota; nothing changed.
    """
    if not origin or len(origin) > MAX_ORIGIN_LENGTH:
        raise BadRequest(f"an edit's origin is 1 to {MAX_ORIGIN_LENGTH} characters")
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(room.document.state())
    before = doc.get_state()
    yield doc
    update = doc.get_update(before)
    if update != EMPTY_UPDATE:
        room.apply_update(update, origin=origin)
    await room.ledger.flush()
