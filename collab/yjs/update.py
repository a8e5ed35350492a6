"""The Yjs v1 update format, read just far enough to cut an update into smaller valid
updates and to tell what part of it a document has not integrated. No I/O.

pycrdt applies, merges and diffs updates, but it cannot split one (a large state must
reach clients in frames under proxy limits) and `Doc.get_update()` leaves out structs and
deletions still waiting for their dependencies; both need the struct boundaries, which
only a reader of the format knows. Struct bytes are copied verbatim, never re-encoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pycrdt import write_var_uint

from collab.yjs.lib0 import Reader

# Struct kinds: the low 5 bits of a struct's info byte (1-9 are item contents).
GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = range(11)
# Type refs of nested shared types (content of kind TYPE).
Y_ARRAY, Y_MAP, Y_TEXT, Y_XML_ELEMENT, Y_XML_FRAGMENT, Y_XML_HOOK, Y_XML_TEXT = range(7)
_MAX_ANY_DEPTH = 64


class UpdateFormatError(ValueError):
    """The bytes are not a v1 update this reader understands."""


ID = tuple[int, int]  # (client, clock)


@dataclass(slots=True)
class Struct:
    """What one struct says about itself: where its bytes are, how many clock ticks it
    spans, and for an item, what it holds and where it lives (`parent` is a root name or
    the id of a nested type; without it the item sits next to its origins)."""

    start: int
    end: int
    length: int
    kind: int  # GC, SKIP, or the kind of an item's content
    type_ref: int | None = None  # for content of kind TYPE
    origin: ID | None = None
    right_origin: ID | None = None
    parent: str | ID | None = None
    keyed: bool = False  # the item is a map entry (it has a parent sub)

    @property
    def is_skip(self) -> bool:
        return self.kind == SKIP


@dataclass(slots=True)
class _Block:
    """A run of consecutive structs of one client, as laid out in the update."""

    client: int
    clock: int
    structs: list[Struct] = field(default_factory=list)


@dataclass(slots=True)
class _Layout:
    blocks: list[_Block]
    # (client, start offset, end offset, [(clock, length), ...]) per client of the delete set
    deletes: list[tuple[int, int, int, list[tuple[int, int]]]]
    delete_set_start: int = 0  # offset of the delete set, its count included


class UpdateReader(Reader):
    """Adds the parts of the update format that lib0 primitives do not cover."""

    __slots__ = ()

    def __init__(self, data: bytes) -> None:
        super().__init__(data, UpdateFormatError)

    def var_int(self) -> None:
        while self.byte() & 0x80:
            pass

    def any(self, depth: int = 0) -> None:
        """Skip one lib0 `any` value."""
        if depth > _MAX_ANY_DEPTH:
            raise UpdateFormatError("value nested too deeply")
        kind = self.byte()
        if kind in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if kind == 125:
            self.var_int()
        elif kind == 124:
            self.skip(4)
        elif kind in (123, 122):
            self.skip(8)
        elif kind in (119, 116):  # string, bytes
            self.var_bytes()
        elif kind == 118:  # object
            for _ in range(self.var_uint()):
                self.var_bytes()
                self.any(depth + 1)
        elif kind == 117:  # array
            for _ in range(self.var_uint()):
                self.any(depth + 1)
        else:
            raise UpdateFormatError(f"unknown value kind {kind}")

    def content(self, ref: int) -> tuple[int, int | None]:
        """Skip an item's content; return its length in clock ticks, and its type ref."""
        if ref == DELETED:
            return self.var_uint(), None
        if ref == JSON:
            count = self.var_uint()
            for _ in range(count):
                self.var_bytes()
            return count, None
        if ref == STRING:
            raw = self.var_bytes()
            if raw.isascii():  # most text: one byte is one UTF-16 unit
                return len(raw), None
            try:
                text = raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as exc:
                raise UpdateFormatError(f"a string is not UTF-8: {exc}") from None
            return len(text.encode("utf-16-le", "surrogatepass")) // 2, None
        if ref == ANY:
            count = self.var_uint()
            for _ in range(count):
                self.any()
            return count, None
        type_ref = None
        if ref in (BINARY, EMBED):
            self.var_bytes()
        elif ref == FORMAT:
            self.var_bytes()
            self.var_bytes()
        elif ref == TYPE:
            type_ref = self.var_uint()
            if type_ref in (Y_XML_ELEMENT, Y_XML_HOOK):
                self.var_bytes()  # node name
        elif ref == DOC:
            self.var_bytes()
            self.any()
        else:
            raise UpdateFormatError(f"unknown content kind {ref}")
        return 1, type_ref

    def id(self) -> ID:
        return self.var_uint(), self.var_uint()

    def struct(self) -> Struct:
        """Read one struct."""
        start = self.pos
        info = self.byte()
        kind = info & 0x1F
        if kind in (GC, SKIP):
            length = self.var_uint()
            return Struct(start, self.pos, length, kind)
        origin = self.id() if info & 0x80 else None
        right_origin = self.id() if info & 0x40 else None
        parent: str | ID | None = None
        keyed = False
        if not info & 0xC0:  # no origin: the parent is written out
            if self.var_uint() == 1:
                parent = self.var_bytes().decode("utf-8", "replace")  # a root's name
            else:
                parent = self.id()
            if info & 0x20:
                self.var_bytes()  # parent sub: the map key
                keyed = True
        length, type_ref = self.content(kind)
        return Struct(start, self.pos, length, kind, type_ref, origin, right_origin, parent, keyed)


def _layout(update: bytes) -> _Layout:
    reader = UpdateReader(update)
    blocks = []
    for _ in range(reader.var_uint()):
        count = reader.var_uint()
        block = _Block(reader.var_uint(), reader.var_uint())
        block.structs = [reader.struct() for _ in range(count)]
        blocks.append(block)
    deletes = []
    delete_set_start = reader.pos
    for _ in range(reader.var_uint()):
        start = reader.pos
        client = reader.var_uint()
        ranges = [(reader.var_uint(), reader.var_uint()) for _ in range(reader.var_uint())]
        deletes.append((client, start, reader.pos, ranges))
    reader.expect_end()
    return _Layout(blocks, deletes, delete_set_start)


def structs(update: bytes) -> list[tuple[ID, Struct]]:
    """Every struct of `update` with the id of its first clock tick."""
    found = []
    for block in _layout(update).blocks:
        clock = block.clock
        for struct in block.structs:
            found.append(((block.client, clock), struct))
            clock += struct.length
    return found


# What Yrs accepts as the parent of an item: a shared type, or an item already deleted
# (whose children are then deleted too). Anything else, such as a string, makes Yrs fail
# halfway through an update, after integrating the part before it.
PARENT_KINDS = frozenset({GC, DELETED, TYPE})


@dataclass(slots=True)
class ParentRefs:
    """Items of an update that name their parent by id: those whose parent is another
    update's item (by that parent), and those whose parent in this update is no type."""

    foreign: dict[ID, list[ID]] = field(default_factory=dict)
    misplaced: list[ID] = field(default_factory=list)


def parent_refs(update: bytes) -> ParentRefs:
    """Which items of `update` name their parent by id, and where that parent is.

    Raises:
        UpdateFormatError: `update` is not readable.
    """
    reader = UpdateReader(update)
    if reader.var_uint() == 1 and reader.var_uint() == 1:
        reader.id()
        if reader.byte() & 0xC0:  # one item with an origin: its parent is its origin's
            return ParentRefs()
    held: dict[int, list[tuple[int, int, int]]] = {}  # client -> (clock, end, kind)
    items: list[tuple[ID, ID]] = []  # (item, its parent)
    for block in _layout(update).blocks:
        clock = block.clock
        for struct in block.structs:
            if not struct.is_skip:
                held.setdefault(block.client, []).append(
                    (clock, clock + struct.length, struct.kind)
                )
            if isinstance(struct.parent, tuple):
                items.append(((block.client, clock), struct.parent))
            clock += struct.length
    refs = ParentRefs()
    for item, (client, clock) in items:
        kind = next((k for first, end, k in held.get(client, ()) if first <= clock < end), None)
        if kind is None:
            refs.foreign.setdefault((client, clock), []).append(item)
        elif kind not in PARENT_KINDS:
            refs.misplaced.append(item)
    return refs


def collect(update: bytes, items: Iterable[ID]) -> bytes:
    """`update` with the structs that start at `items` turned into GC structs of the same
    length: their clocks stay taken, their content is gone, as after garbage collection.

    Raises:
        UpdateFormatError: `update` is not readable.
    """
    targets = set(items)
    layout = _layout(update)
    out = [write_var_uint(len(layout.blocks))]
    for block in layout.blocks:
        out.append(b"".join(write_var_uint(n) for n in (len(block.structs), block.client)))
        out.append(write_var_uint(block.clock))
        clock = block.clock
        for struct in block.structs:
            if (block.client, clock) in targets:
                out.append(bytes([GC]) + write_var_uint(struct.length))
            else:
                out.append(update[struct.start : struct.end])
            clock += struct.length
    out.append(update[layout.delete_set_start :])
    return b"".join(out)


def single_item(update: bytes) -> tuple[int, int, int] | None:
    """(client, clock, length) of an update that is one item placed by an origin and
    nothing else (no deletions): what one keystroke sends. None for any other update.

    Raises:
        UpdateFormatError: `update` is not readable.
    """
    reader = UpdateReader(update)
    if reader.var_uint() != 1 or reader.var_uint() != 1:
        return None
    client, clock = reader.id()
    if not update[reader.pos] & 0xC0:  # no origin (or not an item)
        return None
    struct = reader.struct()
    if reader.var_uint() != 0:  # a delete set
        return None
    reader.expect_end()
    return client, clock, struct.length


def deletions_only(update: bytes) -> list[tuple[int, int, int]] | None:
    """The (client, clock, length) ranges of an update that only deletes; None for any
    other update.

    Raises:
        UpdateFormatError: `update` is not readable.
    """
    reader = UpdateReader(update)
    if reader.var_uint() != 0:
        return None
    ranges = []
    for _ in range(reader.var_uint()):
        client = reader.var_uint()
        for _ in range(reader.var_uint()):
            ranges.append((client, reader.var_uint(), reader.var_uint()))
    reader.expect_end()
    return ranges


def first_kind(update: bytes) -> int | None:
    """The kind of the first struct of `update` (None if it holds none)."""
    reader = UpdateReader(update)
    if reader.var_uint() == 0 or reader.var_uint() == 0:
        return None
    reader.id()
    return reader.byte() & 0x1F


def encode_state_vector(clocks: dict[int, int]) -> bytes:
    return write_var_uint(len(clocks)) + b"".join(
        write_var_uint(client) + write_var_uint(clock) for client, clock in clocks.items()
    )


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """client id -> next expected clock."""
    reader = Reader(state_vector, UpdateFormatError)
    result = {}
    for _ in range(reader.var_uint()):
        client = reader.var_uint()
        result[client] = reader.var_uint()
    return result


def clock_ranges(update: bytes) -> dict[int, tuple[int, int]]:
    """client id -> (first clock, end clock) of the structs `update` holds, Skips aside.

    Unlike pycrdt's `get_state(update)`, this also covers updates that do not start at
    clock 0 (every incremental update).
    """
    ranges: dict[int, tuple[int, int]] = {}
    for block in _layout(update).blocks:
        clock = block.clock
        for struct in block.structs:
            if not struct.is_skip:
                first, end = ranges.get(block.client, (clock, clock))
                ranges[block.client] = (min(first, clock), max(end, clock + struct.length))
            clock += struct.length
    return ranges


def hold_gaps(update: bytes, state_vector: dict[int, int]) -> tuple[bytes | None, bytes | None]:
    """Split `update` into what a document at `state_vector` can integrate now, and the
    structs that follow a gap in their client's clocks (None for an empty part).

    Yjs keeps a struct pending until every earlier clock of its client has arrived; Yrs
    integrates it out of order, so a document would show what its own snapshot, and
    every browser, do not. The delete set goes with the part ready now.

    Raises:
        UpdateFormatError: `update` is not a readable v1 update.
    """
    reader = UpdateReader(update)
    blocks = reader.var_uint()
    if blocks == 0:
        return update, None
    if blocks == 1 and reader.var_uint() == 1:  # one struct: no gap inside it
        client, clock = reader.var_uint(), reader.var_uint()
        if clock <= state_vector.get(client, 0):
            return update, None
    layout = _layout(update)
    ready: list[bytes] = []
    held: list[bytes] = []
    for block in layout.blocks:
        expected = state_vector.get(block.client, 0)
        clock, cut = block.clock, len(block.structs)
        for index, struct in enumerate(block.structs):
            if not struct.is_skip:
                if clock > expected:
                    cut = index
                    break
                expected = max(expected, clock + struct.length)
            clock += struct.length
        if cut:
            ready.append(_segment(update, block, 0, cut))
        if cut < len(block.structs):
            held.append(_segment(update, block, cut, len(block.structs)))
    if not held:
        return update, None
    deletes = update[layout.delete_set_start :]
    now = write_var_uint(len(ready)) + b"".join(ready) + deletes
    later = write_var_uint(len(held)) + b"".join(held) + b"\x00"
    return (None if now == EMPTY else now), later


EMPTY = b"\x00\x00"


def _segment(update: bytes, block: _Block, first: int, end: int) -> bytes:
    """Structs `first` to `end` (exclusive) of `block` as a block of their own."""
    clock = block.clock + sum(struct.length for struct in block.structs[:first])
    header = b"".join(write_var_uint(n) for n in (end - first, block.client, clock))
    return header + update[block.structs[first].start : block.structs[end - 1].end]


def reaches_beyond(update: bytes, state_vector: dict[int, int]) -> bool:
    """Whether `update` holds structs or deletions past `state_vector`.

    Applied to a document whose state vector that is, this means part of the update is
    still pending in the document: waiting for structs it depends on.
    """
    layout = _layout(update)
    for block in layout.blocks:
        clock = block.clock
        for struct in block.structs:
            if not struct.is_skip and clock + struct.length > state_vector.get(block.client, 0):
                return True
            clock += struct.length
    return any(
        clock + length > state_vector.get(client, 0)
        for client, _, _, ranges in layout.deletes
        for clock, length in ranges
    )


def split_update(update: bytes, max_bytes: int) -> list[bytes]:
    """Cut `update` into updates of about `max_bytes` or less that, applied in order,
    have the same effect as `update`. A single struct larger than `max_bytes` stays whole.

    Every piece but those carrying the delete set has an empty delete set; the deletions
    come last, so that they find the structs they delete already there.
    """
    if len(update) <= max_bytes:
        return [update]
    layout = _layout(update)
    pieces: list[bytes] = []
    segments: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal segments, size
        if segments:
            pieces.append(write_var_uint(len(segments)) + b"".join(segments) + b"\x00")
        segments, size = [], 0

    for block in layout.blocks:
        clock = block.clock
        structs = block.structs
        i = 0
        while i < len(structs):
            first_clock, first = clock, i
            while i < len(structs):
                struct = structs[i]
                if size > 0 and size + struct.end - struct.start > max_bytes:
                    break
                size += struct.end - struct.start
                clock += struct.length
                i += 1
            if i > first:
                header = b"".join(write_var_uint(n) for n in (i - first, block.client, first_clock))
                segments.append(header + update[structs[first].start : structs[i - 1].end])
            if i < len(structs):
                flush()
    pieces.extend(_split_deletes(update, layout, max_bytes, segments))
    return pieces


def _split_deletes(
    update: bytes, layout: _Layout, max_bytes: int, segments: list[bytes]
) -> list[bytes]:
    """The last piece(s): remaining struct segments, then the delete set by client."""
    groups: list[list[bytes]] = [[]]
    size = sum(map(len, segments))
    for _, start, end, _ in layout.deletes:
        if (size > 0 or groups[-1]) and size + end - start > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(update[start:end])
        size += end - start
    pieces = []
    for index, group in enumerate(groups):
        structs = write_var_uint(len(segments)) + b"".join(segments) if index == 0 else b"\x00"
        pieces.append(structs + write_var_uint(len(group)) + b"".join(group))
    return [piece for piece in pieces if piece != b"\x00\x00"] or [b"\x00\x00"]
