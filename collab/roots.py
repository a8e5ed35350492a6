"""The type of each root of a document, read from the document's own content. Pure.

Yjs does not store a root's type (Text, Map, Array or XmlFragment): a client fixes it by
reading the root as one. A document built from updates therefore knows only the names
(pycrdt reports no type), and reading a root as the wrong type gives wrong content: a
Text read as an Array yields its characters. So the type is inferred from the items
whose parent is the root. Map entries make a Map; text, formatting and embeds a Text; XML
elements and XML text an XmlFragment; any other value an Array. An item names its parent
only when it has no origin; otherwise it lives where its origins live, as in Yjs.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Literal, get_args

from collab.update import (
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
    Y_XML_TEXT,
    Struct,
    structs,
)

RootType = Literal["text", "map", "array", "xml"]
ROOT_TYPES: tuple[RootType, ...] = get_args(RootType)

_TEXT_KINDS = (STRING, FORMAT, EMBED)
_VALUE_KINDS = (ANY, JSON, BINARY, DOC)
_XML_REFS = (Y_XML_ELEMENT, Y_XML_TEXT, Y_XML_HOOK)

Home = tuple[str | ID, bool]  # (parent, is a map entry)


class _Index:
    """Finds the struct holding a given id, and where each item lives."""

    def __init__(self, update: bytes) -> None:
        self.items = structs(update)
        self._starts: dict[int, list[int]] = {}
        self._at: dict[int, list[Struct]] = {}
        for (client, clock), struct in self.items:
            self._starts.setdefault(client, []).append(clock)
            self._at.setdefault(client, []).append(struct)
        self._homes: dict[int, Home | None] = {}

    def find(self, item_id: ID) -> Struct | None:
        client, clock = item_id
        starts = self._starts.get(client)
        if not starts:
            return None
        index = bisect.bisect_right(starts, clock) - 1
        if index < 0:
            return None
        struct = self._at[client][index]
        return struct if clock < starts[index] + struct.length else None

    def home(self, struct: Struct) -> Home | None:
        """The parent of `struct` and whether it is a map entry; None for a GC-ed item."""
        chain: list[Struct] = []
        seen: set[int] = set()
        home: Home | None = None
        current: Struct | None = struct
        while current is not None:
            if id(current) in self._homes:
                home = self._homes[id(current)]
                break
            if id(current) in seen:
                break  # a cycle of origins (only a forged update has one): no home
            seen.add(id(current))
            chain.append(current)
            if current.kind in (GC, SKIP):
                break
            if current.parent is not None:
                home = (current.parent, current.keyed)
                break
            left = self.find(current.origin) if current.origin else None
            right = self.find(current.right_origin) if current.right_origin else None
            # As Yjs: an item next to a GC-ed struct is GC-ed itself.
            if any(side is not None and side.kind in (GC, SKIP) for side in (left, right)):
                break
            current = left or right
        for visited in chain:
            self._homes[id(visited)] = home
        return home


def root_types(
    update: bytes, hints: Mapping[str, RootType] | None = None
) -> dict[str, RootType | None]:
    """root name -> its type, for every root that `update` (a full state) holds.

    A root whose content is all deleted has no type left to read: None, unless `hints`
    names one. A hint always wins over what the content says.

    Raises:
        UpdateFormatError: `update` is not a readable v1 update.
    """
    index = _Index(update)
    evidence: dict[str, set[RootType]] = {}
    emptied: dict[str, bool] = {}  # root -> whether its deleted items were map entries
    for _, struct in index.items:
        if struct.kind in (GC, SKIP):
            continue
        home = index.home(struct)
        if home is None:
            continue
        root, keyed = home
        if not isinstance(root, str):
            continue  # inside a nested type
        found = evidence.setdefault(root, set())
        if struct.kind == DELETED:
            emptied[root] = emptied.get(root, False) or keyed
        elif keyed:
            found.add("map")
        elif struct.kind in _TEXT_KINDS:
            found.add("text")
        elif struct.kind == TYPE and struct.type_ref in _XML_REFS:
            found.add("xml")
        elif struct.kind == TYPE or struct.kind in _VALUE_KINDS:
            found.add("array")
    types: dict[str, RootType | None] = {}
    for root, found in evidence.items():
        # A Text may carry map-like attributes; a sequence type wins over keyed entries.
        inferred = next((kind for kind in ("text", "xml", "array", "map") if kind in found), None)
        if inferred is None and emptied.get(root):
            inferred = "map"
        types[root] = inferred
    for root, hint in (hints or {}).items():
        types[root] = hint
    return types


def parse_hints(text: str) -> dict[str, RootType]:
    """`"content=xml,title=text"` -> {"content": "xml", "title": "text"}.

    Raises:
        ValueError: an entry is not `name=type` with a known type.
    """
    hints: dict[str, RootType] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, kind = entry.rpartition("=")
        if not name or kind not in ROOT_TYPES:
            raise ValueError(
                f"root type hint {entry!r} is not name=type with type one of "
                + ", ".join(ROOT_TYPES)
            )
        hints[name] = ROOT_TYPES[ROOT_TYPES.index(kind)]
    return hints
