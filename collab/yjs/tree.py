"""A Yjs document as a tree of shared types, read from a full state in document order. Pure.

pycrdt shows a document only through the type a client gives each part, and each type
only the content Yrs expects of it: the strings of an XmlElement (Yjs 14 writes text
straight into elements), the attributes of an XmlFragment, the Maps Lexical embeds in an
XmlText are beyond its reach. Export and restore must see all of it, so this module
integrates the state's items itself, as Yjs does (YATA, `Item.integrate` and `splitItem`
in yjs/src/structs/Item.js), and keeps every item's content as the bytes it was written
in, so that a copy of it is exact. Tests compare what it reads with pycrdt's and Yjs' own
reading of the same states.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from collab.yjs.update import (
    ANY,
    BINARY,
    DELETED,
    DOC,
    EMBED,
    FORMAT,
    GC,
    ID,
    JSON,
    SKIP,
    STRING,
    TYPE,
    Y_XML_ELEMENT,
    Y_XML_HOOK,
    UpdateFormatError,
    UpdateReader,
)

_REPLACEMENT = "\ufffd"


@dataclass(slots=True, eq=False)
class Item:
    """One integrated item (or a GC struct, with `kind == GC` and no parent)."""

    client: int
    clock: int
    length: int
    kind: int
    # STRING: the text; ANY and JSON: each element's bytes; DELETED and GC: None;
    # any other kind: the content's bytes as written (TYPE: its type ref and name).
    content: str | list[bytes] | bytes | None
    origin: ID | None = None
    right_origin: ID | None = None
    parent: Shared | None = None
    key: str | None = None  # the map key, for an entry of a map part
    left: Item | None = None
    right: Item | None = None
    deleted: bool = False
    shared: Shared | None = None  # the nested type, for TYPE content

    @property
    def last_id(self) -> ID:
        return self.client, self.clock + self.length - 1


@dataclass(slots=True, eq=False)
class Shared:
    """A shared type: a root (`root` is its name) or a nested type (`item` holds it).
    Every type has both a sequence part and a map part; which one a type uses, and how,
    is what its kind means."""

    root: str | None = None
    item: Item | None = None
    type_ref: int | None = None  # None for a root: Yjs does not store a root's type
    name: str | None = None  # the tag of an XmlElement, the name of an XmlHook
    start: Item | None = None
    entries: dict[str, Item] = field(default_factory=dict)  # key -> its newest item

    def sequence(self) -> Iterator[Item]:
        """The sequence part's items in document order, deleted ones included."""
        item = self.start
        while item is not None:
            yield item
            item = item.right

    def last(self) -> Item | None:
        """The sequence part's last item, deleted or not."""
        last = None
        for last in self.sequence():  # noqa: B007 - the loop finds the end
            pass
        return last

    def children(self) -> Iterator[Item]:
        """The sequence part's live items in document order."""
        return (item for item in self.sequence() if not item.deleted)

    def attributes(self) -> dict[str, Item]:
        """The map part's live entries."""
        return {key: item for key, item in self.entries.items() if not item.deleted}


class Tree:
    """Every root of a full state, with its items integrated in document order.

    Raises (from the constructor):
        UpdateFormatError: the state cannot be read.
    """

    def __init__(self, state: bytes) -> None:
        self.roots: dict[str, Shared] = {}
        self._starts: dict[int, list[int]] = {}
        self._items: dict[int, list[Item]] = {}
        self._clocks: dict[int, int] = {}  # client -> the clock after its last item
        pending, deletions = _read(state)
        self._integrate_all(pending)
        for client, clock, length in deletions:
            self._delete(client, clock, length)

    def root(self, name: str) -> Shared:
        shared = self.roots.get(name)
        if shared is None:
            shared = self.roots[name] = Shared(root=name)
        return shared

    def state_vector(self) -> dict[int, int]:
        return dict(self._clocks)

    # --- the struct store

    def _find(self, client: int, clock: int) -> Item:
        starts = self._starts.get(client)
        if starts and clock >= starts[-1]:  # mostly: typing goes on after its own last item
            index = len(starts) - 1
        else:
            index = bisect.bisect_right(starts, clock) - 1 if starts else -1
        if index < 0:
            raise UpdateFormatError(f"no item holds ({client}, {clock})")
        item = self._items[client][index]
        if clock >= item.clock + item.length:
            raise UpdateFormatError(f"no item holds ({client}, {clock})")
        return item

    def _clean_start(self, client: int, clock: int) -> Item:
        item = self._find(client, clock)
        return self._split(item, clock - item.clock) if clock > item.clock else item

    def _clean_end(self, client: int, clock: int) -> Item:
        item = self._find(client, clock)
        if clock != item.clock + item.length - 1:
            self._split(item, clock - item.clock + 1)
        return item

    def _split(self, left: Item, diff: int) -> Item:
        left_content, right_content = _splice(left, diff)
        right = Item(
            left.client,
            left.clock + diff,
            left.length - diff,
            left.kind,
            right_content,
            origin=(left.client, left.clock + diff - 1),
            right_origin=left.right_origin,
            parent=left.parent,
            key=left.key,
            left=left,
            right=left.right,
            deleted=left.deleted,
        )
        left.content, left.length, left.right = left_content, diff, right
        if right.right is not None:
            right.right.left = right
        if right.key is not None and right.right is None and right.parent is not None:
            right.parent.entries[right.key] = right
        starts = self._starts[left.client]
        index = bisect.bisect_right(starts, left.clock)
        starts.insert(index, right.clock)
        self._items[left.client].insert(index, right)
        return right

    def _add(self, item: Item) -> None:
        self._starts.setdefault(item.client, []).append(item.clock)
        self._items.setdefault(item.client, []).append(item)
        self._clocks[item.client] = item.clock + item.length

    def _next_clock(self, client: int) -> int:
        return self._clocks.get(client, 0)

    # --- integration

    def _integrate_all(self, pending: dict[int, list[tuple[Item, str | ID | None]]]) -> None:
        """Integrate every item once what it depends on is, as Yjs' integrateStructs.

        What can never be integrated (after a gap in its client's clocks, or waiting on
        an item the state lacks, or on a cycle of such) stays out, with everything of its
        client after it: Yjs keeps the same as pending, and so does a room for updates
        that arrived before what they build on (`Document.state` includes those).
        """
        position = dict.fromkeys(pending, 0)
        blocked: set[int] = set()
        for first in sorted(pending, reverse=True):
            stack = [first]
            while stack:
                client = stack[-1]
                if client in blocked or position[client] == len(pending[client]):
                    stack.pop()
                    continue
                item, parent = pending[client][position[client]]
                if item.clock != self._next_clock(client):
                    blocked.add(client)
                    continue
                missing = self._missing(item, parent)
                if missing is None:
                    position[client] += 1
                    self._integrate(item, parent)
                    if len(stack) > 1:
                        stack.pop()  # what waited on this client may go on now
                elif (
                    missing in stack
                    or missing in blocked
                    or position.get(missing) == len(pending.get(missing, ()))
                ):
                    blocked.add(client)
                else:
                    stack.append(missing)

    def _missing(self, item: Item, parent: str | ID | None) -> int | None:
        for needed in (
            item.origin,
            item.right_origin,
            parent if isinstance(parent, tuple) else None,
        ):
            if needed is not None and needed[1] >= self._next_clock(needed[0]):
                return needed[0]
        return None

    def _integrate(self, item: Item, parent_ref: str | ID | None) -> None:
        if item.kind == GC:
            self._add(item)
            return
        left = self._clean_end(*item.origin) if item.origin else None
        right = self._clean_start(*item.right_origin) if item.right_origin else None
        parent: Shared | None = None
        if (left is not None and left.kind == GC) or (right is not None and right.kind == GC):
            pass  # as Yjs: an item next to a collected one is collected too
        elif parent_ref is None:
            neighbour = left or right
            if neighbour is not None:
                parent, item.key = neighbour.parent, neighbour.key
        elif isinstance(parent_ref, str):
            parent = self.root(parent_ref)
        else:
            holder = self._find(*parent_ref)
            parent = holder.shared if holder.kind == TYPE else None
        if parent is None:  # as Yjs: an item with no parent type left is garbage
            item.kind, item.content = GC, None
            self._add(item)
            return
        item.parent, item.left, item.right = parent, left, right
        self._place(item, parent)
        self._add(item)
        if item.kind == TYPE:
            item.shared = _nested(item)
        if (parent.item is not None and parent.item.deleted) or (
            item.key is not None and item.right is not None
        ):
            item.deleted = True

    def _place(self, item: Item, parent: Shared) -> None:
        """YATA: find the item's place among concurrent inserts, and link it in."""
        left, right = item.left, item.right
        if (left is None and (right is None or right.left is not None)) or (
            left is not None and left.right is not right
        ):
            if left is not None:
                o = left.right
            elif item.key is not None:
                o = parent.entries.get(item.key)
                while o is not None and o.left is not None:
                    o = o.left
            else:
                o = parent.start
            conflicting: set[int] = set()
            before_origin: set[int] = set()
            while o is not None and o is not right:
                before_origin.add(id(o))
                conflicting.add(id(o))
                if item.origin == o.origin:
                    if o.client < item.client:
                        left = o
                        conflicting.clear()
                    elif item.right_origin == o.right_origin:
                        break
                elif o.origin is not None and (found := id(self._find(*o.origin))) in before_origin:
                    if found not in conflicting:
                        left = o
                        conflicting.clear()
                else:
                    break
                o = o.right
            item.left = left
        if item.left is not None:
            item.right = item.left.right
            item.left.right = item
        elif item.key is not None:
            first = parent.entries.get(item.key)
            while first is not None and first.left is not None:
                first = first.left
            item.right = first
        else:
            item.right = parent.start
            parent.start = item
        if item.right is not None:
            item.right.left = item
        elif item.key is not None:
            parent.entries[item.key] = item
            if item.left is not None:
                item.left.deleted = True

    def _delete(self, client: int, clock: int, length: int) -> None:
        end = min(clock + length, self._next_clock(client))
        while clock < end:
            item = self._clean_start(client, clock)
            if item.clock + item.length > end:
                self._split(item, end - item.clock)
            item.deleted = True
            clock = item.clock + item.length


def utf16_length(text: str) -> int:
    """The length of `text` in clock ticks: UTF-16 code units, as JavaScript counts."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def _nested(item: Item) -> Shared:
    assert isinstance(item.content, bytes)
    reader = UpdateReader(item.content)
    type_ref = reader.var_uint()
    name = None
    if type_ref in (Y_XML_ELEMENT, Y_XML_HOOK):
        name = reader.var_bytes().decode("utf-8", "surrogatepass")
    return Shared(item=item, type_ref=type_ref, name=name)


def _splice(item: Item, diff: int) -> tuple[str | list[bytes] | None, str | list[bytes] | None]:
    """The content of an item cut after `diff` clock ticks, as Yjs' `content.splice`."""
    content = item.content
    if isinstance(content, list):
        return content[:diff], content[diff:]
    if isinstance(content, str):
        if content.isascii():
            return content[:diff], content[diff:]
        units = content.encode("utf-16-le", "surrogatepass")
        left = units[: 2 * diff].decode("utf-16-le", "surrogatepass")
        right = units[2 * diff :].decode("utf-16-le", "surrogatepass")
        if left and "\ud800" <= left[-1] <= "\udbff":  # never keep half a surrogate pair
            left, right = left[:-1] + _REPLACEMENT, _REPLACEMENT + right[1:]
        return left, right
    if content is None:
        return None, None
    raise UpdateFormatError(f"an item of kind {item.kind} cannot be split")


def _read(state: bytes) -> tuple[dict[int, list[tuple[Item, str | ID | None]]], list[ID3]]:
    reader = UpdateReader(state)
    pending: dict[int, list[tuple[Item, str | ID | None]]] = {}
    for _ in range(reader.var_uint()):
        count = reader.var_uint()
        client, clock = reader.var_uint(), reader.var_uint()
        items = pending.setdefault(client, [])
        for _ in range(count):
            item, parent = _read_struct(reader, client, clock)
            clock += item.length
            # An empty string holds no clock tick and nothing to see (found by fuzzing:
            # Yrs keeps such an item that a crafted update brought).
            if item.kind != SKIP and item.length > 0:
                items.append((item, parent))
    for items in pending.values():
        items.sort(key=lambda entry: entry[0].clock)
    deletions: list[ID3] = []
    for _ in range(reader.var_uint()):
        client = reader.var_uint()
        for _ in range(reader.var_uint()):
            deletions.append((client, reader.var_uint(), reader.var_uint()))
    reader.expect_end()
    return pending, deletions


ID3 = tuple[int, int, int]  # (client, clock, length)


def _read_struct(reader: UpdateReader, client: int, clock: int) -> tuple[Item, str | ID | None]:
    info = reader.byte()
    kind = info & 0x1F
    if kind in (GC, SKIP):
        return Item(client, clock, reader.var_uint(), kind, None), None
    origin = reader.id() if info & 0x80 else None
    right_origin = reader.id() if info & 0x40 else None
    parent: str | ID | None = None
    key = None
    if not info & 0xC0:
        if reader.var_uint() == 1:
            parent = reader.var_bytes().decode("utf-8", "surrogatepass")
        else:
            parent = reader.id()
        if info & 0x20:
            key = reader.var_bytes().decode("utf-8", "surrogatepass")
    length, content = _read_content(reader, kind)
    return Item(client, clock, length, kind, content, origin, right_origin, key=key), parent


def _read_content(reader: UpdateReader, kind: int) -> tuple[int, str | list[bytes] | bytes | None]:
    if kind == DELETED:
        return reader.var_uint(), None
    if kind == STRING:
        raw = reader.var_bytes()
        if raw.isascii():
            return len(raw), raw.decode()
        try:
            text = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise UpdateFormatError(f"a string is not UTF-8: {exc}") from None
        return utf16_length(text), text
    if kind in (ANY, JSON):
        elements = []
        for _ in range(reader.var_uint()):
            start = reader.pos
            if kind == ANY:
                reader.any()
            else:
                reader.var_bytes()
            elements.append(reader.data[start : reader.pos])
        return len(elements), elements
    start = reader.pos
    reader.content(kind)
    if kind not in (BINARY, EMBED, FORMAT, TYPE, DOC):
        raise UpdateFormatError(f"unknown content kind {kind}")
    return 1, reader.data[start : reader.pos]
