"""Restore: the updates that make a live document equal to another version of it. No I/O.

A restore must be a forward change: written over the stored state, an old version would
be merged back away by every connected client's copy. It must also leave every editor's
undo history powerless over the result. A stock `Y.UndoManager` undoes an insertion by
deleting the items it inserted, and a deletion by inserting a copy of what it deleted
(`redoItem` in yjs/src/structs/Item.js), so:

- The restored content is a fresh copy of the version, every item new and written by a
  client id no one else has: no editor's undo stack holds any of it, so no undo removes it.
- Everything the live document holds is deleted, types included: an undo that would
  bring back a deleted item inside a deleted type is refused by `redoItem` (its parent is
  gone, and it was not the one who deleted it).
- Every key a root map part ever had gets a newer entry (the restored value, or one
  deleted at once): `redoItem` refuses to bring back a map entry that another client has
  overwritten since.

What stays out of reach: a stock undo manager brings back an item it deleted at the top
level of a root's sequence (a character of a root Text, a block of a root XmlFragment),
because nothing in Yjs ties such an item to anything the restore can delete. README
"Undo after a restore" says so; tests/test_restore_undo.py pins it.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Mapping

from pycrdt import write_var_uint

from collab.protocol import EMPTY_UPDATE
from collab.yjs.roots import RootType, root_types
from collab.yjs.tree import Item, Shared, Tree
from collab.yjs.update import ANY, ID, JSON, STRING, TYPE

_NULL = b"\x7e"  # lib0 `null`
_MAX_CLIENT = 2**32 - 1  # Yjs' client ids are 32 bits


class RootTypeConflict(ValueError):
    """A root has one type in the live document and another in the version."""


def restore_updates(
    live_state: bytes,
    version_state: bytes,
    hints: Mapping[str, RootType] | None = None,
    roots: Collection[str] | None = None,
) -> list[bytes]:
    """The updates that make a document at `live_state` equal to `version_state`, to be
    applied (and sent) in order: the fresh copy, then the deletion of everything live.
    With `roots`, only those roots are restored; the others keep what they hold (a PUT
    of one field's content).

    Two updates, not one: Quill's history (y-quill) takes one update that inserts and
    deletes for an edit to diff against the old text, and keeps undo steps that then
    remove restored content (measured: tests/test_restore_quill.py); an insertion at the
    end followed by a deletion of what came before is what it is. The copy comes first:
    an editor that saw its document empty in between would write a block of its own into
    it (ProseMirror's schema needs one: measured with TipTap). Empty updates are left out.

    Raises:
        RootTypeConflict: a root's type differs between the two.
        UpdateFormatError: a state cannot be read.
    """
    live, version = Tree(live_state), Tree(version_state)
    names = live.roots.keys() | version.roots.keys()
    if roots is not None:
        names &= set(roots)
    live_types, version_types = root_types(live, hints), root_types(version, hints)
    for name in live_types.keys() & version_types.keys() & names:
        live_kind, version_kind = live_types[name], version_types[name]
        if live_kind and version_kind and live_kind != version_kind:
            raise RootTypeConflict(f"root {name!r} is {live_kind} now, {version_kind} then")
    clocks = live.state_vector()
    deletion = _Writer(_new_client(clocks))
    copy = _Writer(_new_client({**clocks, deletion.client: 0}))
    for name in sorted(names):
        _restore_root(deletion, copy, name, live.roots.get(name), version.roots.get(name))
    if roots is None:
        deletions = {client: [(0, clock)] for client, clock in clocks.items()}
    else:
        deletions = _ranges(
            item for name in names if name in live.roots for item in _live(live.roots[name])
        )
    if deletion.tombstones:
        deletions[deletion.client] = deletion.tombstones
    updates = [copy.update({}), deletion.update(deletions)]
    return [update for update in updates if update != EMPTY_UPDATE]


def _live(shared: Shared) -> Iterator[Item]:
    """Every live item in `shared`, at any depth: what a restore of its root deletes."""
    for item in (*shared.children(), *shared.attributes().values()):
        yield item
        if item.shared is not None:
            yield from _live(item.shared)


def _ranges(items: Iterator[Item]) -> dict[int, list[tuple[int, int]]]:
    """The clock ranges of `items` by client, sorted and merged, as a delete set holds."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    for item in sorted(items, key=lambda item: (item.client, item.clock)):
        merged = ranges.setdefault(item.client, [])
        if merged and merged[-1][0] + merged[-1][1] == item.clock:
            merged[-1] = (merged[-1][0], merged[-1][1] + item.length)
        else:
            merged.append((item.clock, item.length))
    return ranges


def _new_client(clocks: Mapping[int, int]) -> int:
    rng = random.SystemRandom()
    while (client := rng.randint(1, _MAX_CLIENT)) in clocks:
        pass
    return client


def _restore_root(
    deletion: _Writer, copy: _Writer, name: str, live: Shared | None, version: Shared | None
) -> None:
    wanted = version.attributes() if version is not None else {}
    if version is not None:
        last = live.last() if live is not None else None
        _copy_sequence(copy, version, last.last_id if last else None, name)
    for key in sorted(wanted.keys() | (live.entries.keys() if live is not None else set())):
        newest = live.entries.get(key) if live is not None else None
        origin = newest.last_id if newest is not None else None
        if key in wanted:
            _copy_item(copy, wanted[key], origin=origin, parent=name, key=key)
        else:  # a newer entry, deleted at once: no undo brings the old one back
            deletion.tombstone(origin=origin, parent=name, key=key)


def _copy_sequence(writer: _Writer, source: Shared, origin: ID | None, parent: str | ID) -> None:
    """Copy the live items of `source`'s sequence after `origin` (None: into `parent`)."""
    pending: list[str] = []  # adjacent strings become one item
    for item in source.children():
        if item.kind == STRING:
            assert isinstance(item.content, str)
            pending.append(item.content)
            continue
        if pending:
            origin = writer.string("".join(pending), origin, parent)
            pending = []
        origin = _copy_item(writer, item, origin=origin, parent=parent)
    if pending:
        writer.string("".join(pending), origin, parent)


def _copy_item(
    writer: _Writer, item: Item, *, origin: ID | None, parent: str | ID, key: str | None = None
) -> ID:
    """Copy one item (and a nested type's content); returns the copy's last id."""
    if item.kind == STRING:
        assert isinstance(item.content, str)
        return writer.string(item.content, origin, parent, key)
    if item.kind in (ANY, JSON):
        assert isinstance(item.content, list)
        content = _var_uint(len(item.content)) + b"".join(item.content)
    else:
        assert isinstance(item.content, bytes)
        content = item.content
    first = writer.write(item.kind, content, item.length, origin, parent, key)
    if item.kind == TYPE:
        assert item.shared is not None
        _copy_sequence(writer, item.shared, None, first)
        for entry_key, entry in sorted(item.shared.attributes().items()):
            _copy_item(writer, entry, origin=None, parent=first, key=entry_key)
    return first[0], first[1] + item.length - 1


class _Writer:
    """New items of one client, encoded as a v1 update."""

    def __init__(self, client: int) -> None:
        self.client = client
        self.clock = 0
        self.count = 0
        self.tombstones: list[tuple[int, int]] = []
        self._structs = bytearray()

    def write(
        self,
        kind: int,
        content: bytes,
        length: int,
        origin: ID | None,
        parent: str | ID,
        key: str | None = None,
    ) -> ID:
        """Append one item after `origin`, or first in `parent` (under `key` for a map
        entry); returns its id."""
        out = self._structs
        out.append(kind | (0x80 if origin else 0) | (0x20 if key is not None else 0))
        if origin:
            out += _var_uint(origin[0]) + _var_uint(origin[1])
        else:
            if isinstance(parent, str):
                out += _var_uint(1) + _var_string(parent)
            else:
                out += _var_uint(0) + _var_uint(parent[0]) + _var_uint(parent[1])
            if key is not None:
                out += _var_string(key)
        out += content
        first = (self.client, self.clock)
        self.clock += length
        self.count += 1
        return first

    def string(self, text: str, origin: ID | None, parent: str | ID, key: str | None = None) -> ID:
        length = (
            len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2
        )
        first = self.write(STRING, _var_string(text), length, origin, parent, key)
        return first[0], first[1] + length - 1

    def tombstone(self, *, origin: ID | None, parent: str, key: str) -> None:
        first = self.write(ANY, _var_uint(1) + _NULL, 1, origin, parent, key)
        self.tombstones.append((first[1], 1))

    def update(self, deletions: Mapping[int, list[tuple[int, int]]]) -> bytes:
        if not self.count and not deletions:
            return EMPTY_UPDATE
        out = bytearray()
        if self.count:
            out += _var_uint(1) + _var_uint(self.count) + _var_uint(self.client) + _var_uint(0)
            out += self._structs
        else:
            out += _var_uint(0)
        out += _var_uint(len(deletions))
        for client, ranges in sorted(deletions.items()):
            out += _var_uint(client) + _var_uint(len(ranges))
            for clock, length in ranges:
                out += _var_uint(clock) + _var_uint(length)
        return bytes(out)


def _var_uint(value: int) -> bytes:
    return bytes(write_var_uint(value))


def _var_string(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return _var_uint(len(raw)) + raw
