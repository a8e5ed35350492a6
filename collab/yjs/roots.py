"""The type of each root of a document, read from the document's own content. Pure.

Yjs does not store a root's type (Text, Map, Array or XmlFragment): a client fixes it by
reading the root as one. A document built from updates therefore knows only the names
(pycrdt reports no type), and reading a root as the wrong type gives wrong content: a
Text read as an Array yields its characters. So the type is inferred from the root's
items, deleted ones included, as `collab.yjs.tree` integrates them. Map entries make a Map;
text, formatting and embeds a Text; XML elements and XML text an XmlFragment; any other
value an Array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from collab.yjs.tree import Shared, Tree
from collab.yjs.update import (
    ANY,
    BINARY,
    DOC,
    EMBED,
    FORMAT,
    JSON,
    STRING,
    TYPE,
    Y_XML_ELEMENT,
    Y_XML_HOOK,
    Y_XML_TEXT,
)

RootType = Literal["text", "map", "array", "xml"]
ROOT_TYPES: tuple[RootType, ...] = get_args(RootType)

_TEXT_KINDS = (STRING, FORMAT, EMBED)
_VALUE_KINDS = (ANY, JSON, BINARY, DOC)
_XML_REFS = (Y_XML_ELEMENT, Y_XML_TEXT, Y_XML_HOOK)


def root_types(
    state: bytes | Tree, hints: Mapping[str, RootType] | None = None
) -> dict[str, RootType | None]:
    """root name -> its type, for every root that `state` (a full state, or its tree)
    holds.

    A root whose content is all deleted has no type left to read: None, unless `hints`
    names one. A hint always wins over what the content says.

    Raises:
        UpdateFormatError: `state` is not a readable v1 update.
    """
    tree = state if isinstance(state, Tree) else Tree(state)
    types = {name: _inferred(root) for name, root in tree.roots.items()}
    for name, hint in (hints or {}).items():
        types[name] = hint
    return types


def _inferred(root: Shared) -> RootType | None:
    found: set[RootType] = set()
    for item in root.sequence():
        if item.kind in _TEXT_KINDS:
            found.add("text")
        elif item.kind == TYPE and item.shared is not None and item.shared.type_ref in _XML_REFS:
            found.add("xml")
        elif item.kind == TYPE or item.kind in _VALUE_KINDS:
            found.add("array")
    if root.entries:  # deleted ones too: an emptied map is still a map
        found.add("map")
    # A Text may carry map-like attributes; a sequence type wins over keyed entries.
    return next((kind for kind in ("text", "xml", "array", "map") if kind in found), None)


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
